"""The array job: partitioning a manifest, running one slice, running all slices locally.

Result layout under a results root ``R`` (a folder or an ``s3://`` prefix)::

    R/results/{run_id}/<stem>.json          result document of one file
    R/results/{run_id}/errors/<stem>.json   error record of a file that failed
    R/results/{run_id}/_slices/<index>.json summary of one slice (array child)
    R/results/{run_id}/_run.json            summary of a whole local run
    R/results/latest/<stem>.json            newest result of each file

Every object is written atomically, as soon as its file is done.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Callable, Sequence

from . import manifest as manifest_mod
from . import storage
from .analysis import analyse
from .errors import (EXIT_OK, EXIT_UNEXPECTED, ParamsError, TelemetryLabError,
                     exit_code_for_signal)
from .params import AnalysisParams

ARRAY_INDEX_ENV = "AWS_BATCH_JOB_ARRAY_INDEX"
#: AWS Batch tells a child its index but not the array's size; we pass the size ourselves.
ARRAY_SIZE_ENV = "TELEMETRY_LAB_ARRAY_SIZE"
RUN_ID_ENV = "TELEMETRY_LAB_RUN_ID"
PARAMS_ENV = "TELEMETRY_LAB_PARAMS"
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def partition(files: Sequence, index: int, size: int) -> list:
    """The ``index``-th of ``size`` contiguous slices of ``files``.

    Slices differ in length by at most one; the first ``len(files) % size`` slices get
    the extra file. Every file lands in exactly one slice.
    """
    if size < 1:
        raise ValueError(f"array size must be at least 1, got {size!r}")
    if not 0 <= index < size:
        raise ValueError(f"array index {index!r} is outside 0..{size - 1}")
    base, extra = divmod(len(files), size)
    start = index * base + min(index, extra)
    return list(files[start:start + base + (1 if index < extra else 0)])


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def check_run_id(run_id: str) -> str:
    if not _RUN_ID_RE.match(run_id or "") or run_id == "latest":
        raise ParamsError(f"run id {run_id!r} must be 1-128 of A-Z a-z 0-9 . _ - and not 'latest'")
    return run_id


class Paths:
    """Where the objects of one run live under a results root."""

    def __init__(self, root: str, run_id: str):
        self.root = root.rstrip("/") or root
        self.run_id = run_id

    def result(self, stem: str, *, latest: bool = False) -> str:
        return storage.join(self.root, "results", "latest" if latest else self.run_id, f"{stem}.json")

    def error(self, stem: str) -> str:
        return storage.join(self.root, "results", self.run_id, "errors", f"{stem}.json")

    def slice_summary(self, index: int) -> str:
        return storage.join(self.root, "results", self.run_id, "_slices", f"{index:05d}.json")

    @property
    def run_summary(self) -> str:
        return storage.join(self.root, "results", self.run_id, "_run.json")

    def report(self, stem: str, *, latest: bool = False) -> str:
        return storage.join(self.root, "reports", "latest" if latest else self.run_id, f"{stem}.html")


def _dump(obj) -> bytes:
    return (json.dumps(obj, indent=1, allow_nan=False, default=_json_default) + "\n").encode()


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@dataclass
class FileOutcome:
    stem: str
    uri: str
    status: str  # OK | FAIL | SKIP
    seconds: float = 0.0
    rows: int | None = None
    events: int | None = None
    health: str | None = None
    reused: bool = False
    error: dict | None = None
    report_error: str | None = None

    def line(self) -> str:
        if self.status == "OK":
            note = " (result of an earlier attempt reused)" if self.reused else ""
            if self.report_error:
                note += f" (site report not written: {self.report_error})"
            return (f"OK   {self.stem} rows={self.rows} events={self.events} "
                    f"health={self.health} {self.seconds:.2f}s{note}")
        if self.status == "FAIL":
            return f"FAIL {self.stem} {self.error['error']}: {self.error['message']} ({self.uri})"
        return f"SKIP {self.stem} not started: {self.error['message'] if self.error else 'stopped'}"


@dataclass
class SliceSummary:
    run_id: str
    index: int
    size: int
    files: list[FileOutcome] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    #: The signal that stopped the slice, if known (its exit code is 128 + its number).
    stop_signal: int | None = None

    def count(self, status: str) -> int:
        return sum(1 for f in self.files if f.status == status)

    @property
    def exit_code(self) -> int:
        if self.interrupted or self.count("SKIP"):
            return exit_code_for_signal(self.stop_signal)
        failed = [f for f in self.files if f.status == "FAIL"]
        if failed:
            return failed[0].error.get("exit_code", EXIT_UNEXPECTED)
        return EXIT_OK

    def totals_line(self) -> str:
        return (f"slice {self.index + 1}/{self.size} of run {self.run_id}: {_files(len(self.files))}, "
                f"{self.count('OK')} OK, {self.count('FAIL')} FAIL, {self.count('SKIP')} SKIP "
                f"in {self.seconds:.1f}s")

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "index": self.index, "size": self.size,
                "seconds": round(self.seconds, 3), "interrupted": self.interrupted,
                "stop_signal": self.stop_signal, "exit_code": self.exit_code,
                "counts": {s: self.count(s) for s in ("OK", "FAIL", "SKIP")},
                "files": [asdict(f) for f in self.files]}


class StopFlag:
    """Set by SIGTERM/SIGINT: finish the current file, start no other."""

    def __init__(self):
        self.stopped = False
        self.signal_name: str | None = None
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.stopped

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.stopped = True
        self.signum = signum
        self.signal_name = signal.Signals(signum).name


def _existing_result(paths: Paths, stem: str, params: AnalysisParams, *,
                     need_report: bool) -> dict | None:
    uri = paths.result(stem)
    if not storage.exists(uri) or (need_report and not storage.exists(paths.report(stem))):
        return None
    try:
        doc = json.loads(storage.read_bytes(uri))
    except (TelemetryLabError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) and doc.get("params") == params.to_dict() else None


def process_file(stem: str, uri: str, paths: Paths, params: AnalysisParams, *,
                 on_result: Callable | None = None) -> FileOutcome:
    """Analyse one file and write its result (or its error record). Never raises for a
    problem with the file itself: that becomes a FAIL outcome."""
    t0 = time.perf_counter()
    try:
        doc = _existing_result(paths, stem, params, need_report=on_result is not None)
        reused = doc is not None
        report_error = None
        if not reused:
            analysis = analyse(uri, params, run_id=paths.run_id,
                               trace_buckets=2000 if on_result else 0)
            doc = analysis.document
            storage.write_bytes(paths.result(stem), _dump(doc))
            storage.write_bytes(paths.result(stem, latest=True), _dump(doc))
            if on_result:
                # The result is written and valid; a page that fails to render is reported
                # beside it, not turned into a failed analysis.
                try:
                    on_result(stem, analysis)
                except Exception as exc:
                    report_error = f"{type(exc).__name__}: {exc}"
        elif not storage.exists(paths.result(stem, latest=True)):
            storage.write_bytes(paths.result(stem, latest=True), _dump(doc))
        storage.delete(paths.error(stem))
        return FileOutcome(stem, uri, "OK", time.perf_counter() - t0, doc["rows"],
                           len(doc["events"]), doc["report"]["equipment_health"], reused,
                           report_error=report_error)
    except Exception as exc:  # one bad file must never stop the slice
        if isinstance(exc, TelemetryLabError):
            record = exc.with_file(uri).to_record()
        else:
            record = {"error": type(exc).__name__, "kind": "internal", "message": str(exc),
                      "file": uri, "channel": None, "exit_code": EXIT_UNEXPECTED,
                      "traceback": traceback.format_exc()}
        record.update({"stem": stem, "run_id": paths.run_id,
                       "time": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        try:
            storage.write_bytes(paths.error(stem), _dump(record))
        except Exception as write_exc:  # the FAIL line must still be printed
            record["message"] += f" (and the error record could not be written: {write_exc})"
        return FileOutcome(stem, uri, "FAIL", time.perf_counter() - t0, error=record)


def check_writable(paths: Paths, index: int) -> None:
    """Write and remove an empty file where this slice's summary will go, so that a local
    results folder that cannot be written fails the slice before any analysis rather than
    after each file's. Raises :class:`StorageError` naming the place.

    Local folders only: on S3 removing the probe would leave a folder marker behind
    (pyarrow keeps emptied prefixes); a denied PUT there fails at the first result written.
    """
    if not storage.storage_is_local(paths.root):
        return
    probe = storage.join(paths.root, "results", paths.run_id, "_slices", f".probe-{index:05d}")
    storage.write_bytes(probe, b"")
    storage.delete(probe)


def slice_entries(manifest_uri: str, index: int, size: int) -> list[tuple[str, str]]:
    manifest = manifest_mod.load(manifest_uri)
    return partition(manifest_mod.entries(manifest), index, size)


def run_slice(entries: list[tuple[str, str]], paths: Paths, params: AnalysisParams, *,
              index: int = 0, size: int = 1, should_stop: Callable[[], bool] = lambda: False,
              log: Callable[[str], None] = print, on_result: Callable | None = None) -> SliceSummary:
    """Process the files of one slice in order, writing each result as soon as it is done.

    When ``should_stop()`` becomes true the current file is finished, the rest are marked
    SKIP, and the summary is still written.
    """
    summary = SliceSummary(paths.run_id, index, size)
    t0 = time.perf_counter()
    for stem, uri in entries:
        if should_stop():
            summary.interrupted = True
            summary.stop_signal = getattr(should_stop, "signum", None)  # a StopFlag knows it
            outcome = FileOutcome(stem, uri, "SKIP", error={"error": "Interrupted",
                                                             "message": "run stopped by signal"})
        else:
            outcome = process_file(stem, uri, paths, params, on_result=on_result)
        summary.files.append(outcome)
        log(outcome.line())
    summary.seconds = time.perf_counter() - t0
    storage.write_bytes(paths.slice_summary(index), _dump(summary.to_dict()))
    log(summary.totals_line())
    return summary


def array_position(index: int | None = None, size: int | None = None) -> tuple[int, int]:
    """This child's index and the array size, from arguments or the Batch environment."""
    try:
        if index is None:
            index = int(os.environ.get(ARRAY_INDEX_ENV, "0"))
        if size is None:
            size = int(os.environ.get(ARRAY_SIZE_ENV, "1"))
    except ValueError as exc:
        raise ParamsError(f"bad array index or size in the environment: {exc}") from None
    if size < 1 or not 0 <= index < size:
        raise ParamsError(f"array index {index} is outside an array of size {size}")
    return index, size


# -- the whole array job on this machine ---------------------------------------------------

@dataclass
class LocalRun:
    manifest: str
    results: str
    run_id: str
    files_per_job: int
    workers: int
    params_uri: str | None = None
    engine: str = "python"


def run_local(cfg: LocalRun, *, progress: bool = True, log: Callable[[str], None] = print) -> int:
    """Run every slice as a child process, ``workers`` at a time, with the environment
    AWS Batch gives an array child. Writes ``_run.json``; returns the exit code."""
    from tqdm import tqdm

    manifest = manifest_mod.load(cfg.manifest)
    n_files = manifest["total_files"]
    if cfg.files_per_job < 1:
        raise ParamsError(f"files per job must be at least 1, got {cfg.files_per_job!r}")
    if cfg.workers < 1:
        raise ParamsError(f"workers must be at least 1, got {cfg.workers!r}")
    size = max(1, -(-n_files // cfg.files_per_job))
    paths = Paths(cfg.results, cfg.run_id)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    bar = tqdm(total=n_files, desc=f"run {cfg.run_id}", unit="file", disable=not progress,
               file=sys.stderr)
    lock = threading.Lock()
    stop = threading.Event()
    children: dict[int, subprocess.Popen] = {}
    codes: dict[int, int] = {}

    def emit(line: str):
        with lock:
            if line.startswith(("OK ", "FAIL ", "SKIP ")):
                bar.update(1)
            (bar.write if progress else log)(line)

    def child(i: int):
        env = dict(os.environ, **{ARRAY_INDEX_ENV: str(i), ARRAY_SIZE_ENV: str(size),
                                  RUN_ID_ENV: cfg.run_id, "AWS_BATCH_JOB_ID": f"local-{cfg.run_id}:{i}",
                                  "AWS_BATCH_JOB_ATTEMPT": "1", "PYTHONUNBUFFERED": "1"})
        cmd = [sys.executable, "-m", "telemetry_lab", "slice", "--manifest", cfg.manifest,
               "--results", cfg.results, "--engine", cfg.engine]
        if cfg.params_uri:
            cmd += ["--params", cfg.params_uri]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        with lock:
            children[i] = proc
        for line in proc.stdout:
            emit(line.rstrip("\n"))
        codes[i] = proc.wait()

    def forward(signum, frame):
        stopped_by.append(signum)
        stop.set()
        with lock:
            for proc in children.values():
                if proc.poll() is None:
                    proc.send_signal(signum)

    stopped_by: list[int] = []
    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        pending = list(range(size))
        running: list[threading.Thread] = []
        while pending or running:
            running = [t for t in running if t.is_alive()]
            while pending and len(running) < cfg.workers and not stop.is_set():
                t = threading.Thread(target=child, args=(pending.pop(0),), daemon=True)
                t.start()
                running.append(t)
            if stop.is_set():
                pending.clear()
            time.sleep(0.05)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        bar.close()

    slices = []
    for i in range(size):
        try:
            slices.append(json.loads(storage.read_bytes(paths.slice_summary(i))))
        except (TelemetryLabError, json.JSONDecodeError):
            slices.append({"index": i, "exit_code": codes.get(i), "files": [], "missing": True})
    files = [f for s in slices for f in s.get("files", [])]
    counts = {s: sum(1 for f in files if f["status"] == s) for s in ("OK", "FAIL", "SKIP")}
    counts["NOT_RUN"] = n_files - len(files)
    exit_code = EXIT_OK
    failed_children = [codes.get(i, EXIT_UNEXPECTED) for i in range(size) if codes.get(i, 1) != 0]
    if stop.is_set() or counts["SKIP"]:
        exit_code = exit_code_for_signal(stopped_by[0] if stopped_by else None)
    elif failed_children:  # a child that crashed leaves files NOT_RUN: its own code says why
        exit_code = failed_children[0]
    summary = {
        "run_id": cfg.run_id,
        "manifest": cfg.manifest,
        "results": cfg.results,
        "params": cfg.params_uri,
        "engine": cfg.engine,
        "files_per_job": cfg.files_per_job,
        "workers": cfg.workers,
        "array_size": size,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t0, 3),
        "total_files": n_files,
        "counts": counts,
        "exit_code": exit_code,
        "slices": [{k: s.get(k) for k in ("index", "exit_code", "seconds", "counts")} for s in slices],
        "files": [{k: f.get(k) for k in ("stem", "status", "rows", "events", "health", "seconds")}
                  | ({"error": f["error"]["message"]} if f.get("error") else {}) for f in files],
    }
    storage.write_bytes(paths.run_summary, _dump(summary))
    log(f"run {cfg.run_id}: {_files(n_files)}, {counts['OK']} OK, {counts['FAIL']} FAIL, "
        f"{counts['SKIP'] + counts['NOT_RUN']} SKIP in {summary['seconds']:.1f}s")
    return exit_code
