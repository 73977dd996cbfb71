"""The array job at scale: submitting to AWS Batch and watching it.

``telemetry-lab submit --backend batch`` sends one array job of ``ceil(files / K)``
children (AWS Batch arrays need at least 2 children, so a single child goes as a plain
job). Each child runs ``slice`` on the manifest; the array size, run id and params reach it
through container overrides (Batch itself only tells a child its index)::

    command:     slice --manifest s3://... --results s3://...
    environment: TELEMETRY_LAB_ARRAY_SIZE, TELEMETRY_LAB_RUN_ID[, TELEMETRY_LAB_PARAMS]

``--backend local`` runs the same array on this machine (:func:`telemetry_lab.jobs.run_local`).
``telemetry-lab watch JOB_ID`` follows the children until they are done, then lists the
failed ones with their status reasons and log stream names.

Every AWS call goes through boto3, so endpoint, region and credentials follow the usual
AWS settings (``AWS_ENDPOINT_URL``, ``AWS_REGION``/``AWS_DEFAULT_REGION``, profiles, roles).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
from typing import Callable

from . import jobs, storage
from . import manifest as manifest_mod
from .errors import EXIT_OK, EXIT_UNEXPECTED, ParamsError, TelemetryLabError

#: AWS Batch limits an array job to this many children.
MAX_ARRAY_SIZE = 10_000
DONE = ("SUCCEEDED", "FAILED")
CHILD_STATES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")
#: Options of ``submit --backend batch`` that default to the stack's environment.
STACK_OPTIONS = (("--job-queue", "job_queue", "TELEMETRY_LAB_JOB_QUEUE"),
                 ("--job-definition", "job_definition", "TELEMETRY_LAB_JOB_DEFINITION"),
                 ("--results", "results", "TELEMETRY_LAB_RESULTS"))


class BatchError(TelemetryLabError):
    """AWS Batch refused a call or could not be reached."""

    kind = "batch"


def batch_client(region: str | None = None):
    """A Batch client; region from the argument, else ``AWS_REGION``/``AWS_DEFAULT_REGION``."""
    try:
        import boto3
    except ImportError:
        raise BatchError("the batch backend needs boto3: pip install 'telemetry-lab[aws]'") from None
    from botocore.exceptions import NoRegionError

    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    try:
        return boto3.client("batch", region_name=region)
    except NoRegionError:
        raise BatchError("no AWS region: pass --region or set AWS_REGION") from None


def _call(what: str, fn: Callable, **kwargs):
    """Run one Batch API call, turning AWS errors into :class:`BatchError`."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(**kwargs)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        raise BatchError(f"{what} failed: {err.get('Code', 'ClientError')}: "
                         f"{err.get('Message', '').strip() or exc}") from None
    except BotoCoreError as exc:
        raise BatchError(f"{what} failed: {exc}") from None


# -- submit -------------------------------------------------------------------------------

def array_size(total_files: int, files_per_job: int) -> int:
    """Children needed for ``total_files`` at ``files_per_job`` each: ``ceil(files / K)``,
    within the AWS Batch limit."""
    if isinstance(files_per_job, bool) or not isinstance(files_per_job, int) or files_per_job < 1:
        raise ParamsError(f"files per job must be a positive integer, got {files_per_job!r}")
    if total_files < 1:
        raise ParamsError("the manifest lists no files; nothing to submit")
    size = math.ceil(total_files / files_per_job)
    if size > MAX_ARRAY_SIZE:
        raise ParamsError(f"{total_files} files at {files_per_job} per job need {size} children; "
                          f"AWS Batch allows {MAX_ARRAY_SIZE}: use --files-per-job "
                          f"{math.ceil(total_files / MAX_ARRAY_SIZE)} or more")
    return size


def job_request(*, manifest: str, results: str, size: int, run_id: str, job_queue: str,
                job_definition: str, params: str | None = None, engine: str | None = None,
                job_name: str | None = None) -> dict:
    """The ``submit_job`` arguments of a run: an array of ``size`` children, or a plain job
    when ``size`` is 1."""
    command = ["slice", "--manifest", manifest, "--results", results]
    if engine:
        command += ["--engine", engine]
    environment = [{"name": jobs.ARRAY_SIZE_ENV, "value": str(size)},
                   {"name": jobs.RUN_ID_ENV, "value": run_id}]
    if params:
        environment.append({"name": jobs.PARAMS_ENV, "value": params})
    request = {
        # Batch job names allow letters, digits, hyphens and underscores only.
        "jobName": job_name or re.sub(r"[^A-Za-z0-9_-]", "-", f"telemetry-lab-{run_id}")[:128],
        "jobQueue": job_queue,
        "jobDefinition": job_definition,
        "containerOverrides": {"command": command, "environment": environment},
        # The job definition's Ref::manifest / Ref::results, so a describe shows the run's.
        "parameters": {"manifest": manifest, "results": results},
    }
    if size > 1:
        request["arrayProperties"] = {"size": size}
    return request


def submit_batch(*, manifest: str, results: str, files_per_job: int, job_queue: str,
                 job_definition: str, params: str | None = None, run_id: str | None = None,
                 engine: str | None = None, job_name: str | None = None,
                 region: str | None = None, client=None) -> dict:
    """Check the inputs, submit the run, return ``{"jobId", "jobName", "size", "runId"}``.

    The manifest (and params file) are read here, so a bad one fails before any container
    starts. Everything the children read must be on S3: they share no disk with this machine.
    """
    for label, uri in (("--manifest", manifest), ("--results", results), ("--params", params)):
        if uri is not None and not storage.is_s3(uri):
            raise ParamsError(f"{label} {uri!r} must be an s3:// URI for the batch backend: "
                              "the containers cannot see this machine's files")
    run_id = jobs.check_run_id(run_id or jobs.new_run_id())
    if params:
        from .params import AnalysisParams

        AnalysisParams.load(params)
    total = manifest_mod.load(manifest)["total_files"]
    size = array_size(total, files_per_job)
    request = job_request(manifest=manifest, results=results, size=size, run_id=run_id,
                          job_queue=job_queue, job_definition=job_definition, params=params,
                          engine=engine, job_name=job_name)
    client = client or batch_client(region)
    answer = _call("submit_job", client.submit_job, **request)
    return {"jobId": answer["jobId"], "jobName": answer.get("jobName", request["jobName"]),
            "size": size, "runId": run_id}


def cmd_submit(a) -> int:
    if a.backend == "local":
        run_id = jobs.check_run_id(a.run_id or jobs.new_run_id())
        if a.params:
            from .params import AnalysisParams

            AnalysisParams.load(a.params)  # fail before starting any child
        cfg = jobs.LocalRun(manifest=a.manifest, results=a.results or "output", run_id=run_id,
                            files_per_job=a.files_per_job, workers=a.workers,
                            params_uri=a.params, engine=a.engine or "python")
        code = jobs.run_local(cfg, progress=not a.quiet)
        print(f"run {run_id}: run summary {jobs.Paths(cfg.results, run_id).run_summary}",
              file=sys.stderr)
        return code
    # Unset options come from the environment `make env` exports (terraform outputs).
    given = {flag: getattr(a, dest) or os.environ.get(env) for flag, dest, env in STACK_OPTIONS}
    missing = [f"{flag} (or ${env})" for flag, _, env in STACK_OPTIONS if not given[flag]]
    if missing:
        raise ParamsError(f"--backend batch needs {', '.join(missing)}")
    job = submit_batch(manifest=a.manifest, results=given["--results"],
                       files_per_job=a.files_per_job, job_queue=given["--job-queue"],
                       job_definition=given["--job-definition"], params=a.params,
                       run_id=a.run_id, engine=a.engine, job_name=a.job_name, region=a.region)
    kind = f"array job of {job['size']} children" if job["size"] > 1 else "job (one child)"
    print(f"submitted {kind} {job['jobName']} for run {job['runId']}", file=sys.stderr)
    print(job["jobId"])
    return EXIT_OK


# -- watch --------------------------------------------------------------------------------

def describe(client, job_id: str) -> dict:
    jobs_ = _call("describe_jobs", client.describe_jobs, jobs=[job_id])["jobs"]
    if not jobs_:
        raise BatchError(f"no job {job_id!r} in this account and region (Batch keeps finished "
                         "jobs for about 7 days)")
    return jobs_[0]


def child_counts(job: dict) -> tuple[int, dict[str, int]]:
    """Array size and children per state; a plain job counts as an array of one."""
    array = job.get("arrayProperties") or {}
    if "size" in array:
        summary = array.get("statusSummary") or {}
        return array["size"], {s: int(summary.get(s, 0)) for s in CHILD_STATES}
    return 1, {s: int(job.get("status") == s) for s in CHILD_STATES}


def failed_children(client, job: dict) -> list[dict]:
    """``describe_jobs`` of every failed child (or the job itself when it is not an array)."""
    if "size" not in (job.get("arrayProperties") or {}):
        return [job] if job.get("status") == "FAILED" else []
    ids, token = [], None
    while True:
        kwargs = {"arrayJobId": job["jobId"], "jobStatus": "FAILED"}
        if token:
            kwargs["nextToken"] = token
        page = _call("list_jobs", client.list_jobs, **kwargs)
        ids += [j["jobId"] for j in page.get("jobSummaryList", [])]
        token = page.get("nextToken")
        if not token:
            break
    out = []
    for i in range(0, len(ids), 100):  # describe_jobs takes at most 100 ids
        out += _call("describe_jobs", client.describe_jobs, jobs=ids[i:i + 100])["jobs"]
    return sorted(out, key=lambda j: _child_index(j) or 0)


def _child_index(job: dict) -> int | None:
    index = (job.get("arrayProperties") or {}).get("index")
    if index is None and ":" in job.get("jobId", ""):
        # Batch names array children "<parent job id>:<index>".
        tail = job["jobId"].rsplit(":", 1)[1]
        index = int(tail) if tail.isdigit() else None
    return index


def _log_stream(job: dict) -> str | None:
    stream = (job.get("container") or {}).get("logStreamName")
    for attempt in reversed(job.get("attempts") or []):
        stream = stream or (attempt.get("container") or {}).get("logStreamName")
    return stream


def _exit_code(job: dict) -> int | None:
    code = (job.get("container") or {}).get("exitCode")
    for attempt in reversed(job.get("attempts") or []):
        code = code if code is not None else (attempt.get("container") or {}).get("exitCode")
    return code


def failure_line(job: dict) -> str:
    index = _child_index(job)
    where = f"child {index}" if index is not None else "job"
    code = _exit_code(job)
    reason = job.get("statusReason") or "no status reason given"
    return (f"FAILED {where} {job['jobId']}: {reason}"
            f"{f' (exit code {code})' if code is not None else ''}; "
            f"log stream {_log_stream(job) or '(none)'}")


def is_done(job: dict) -> bool:
    """Whether a job and all its children have finished."""
    size, counts = child_counts(job)
    done = counts["SUCCEEDED"] + counts["FAILED"]
    # A parent cancelled before its children existed never counts them all done.
    active = sum(counts[s] for s in CHILD_STATES if s not in DONE)
    return job.get("status") in DONE and (done >= size or not active)


def outcome(client, job: dict) -> tuple[int, list[str]]:
    """Exit code and report lines of a finished job: a totals line, then one line per
    failed child.

    The code is 0 when every child succeeded, else the exit code of the first failed child
    (1 when Batch reports none, for example a container that never started).
    """
    size, counts = child_counts(job)
    failed = failed_children(client, job) if counts["FAILED"] else []
    lines = [f"job {job.get('jobName', '')} {job['jobId']}: {job['status']}: "
             f"{counts['SUCCEEDED']} succeeded, {counts['FAILED']} failed of {size}"]
    lines += [failure_line(child) for child in failed]
    if not counts["FAILED"] and job["status"] == "SUCCEEDED":
        return EXIT_OK, lines
    codes = [c for c in map(_exit_code, failed) if c]
    return (codes[0] if codes else EXIT_UNEXPECTED), lines


def watch(job_id: str, *, client=None, interval: float = 15.0, progress: bool = True,
          log: Callable[[str], None] = print, region: str | None = None) -> int:
    """Follow a job until every child is done, with a progress bar of the children
    succeeded / failed / running; then print the failed children. Returns the exit code
    of :func:`outcome`."""
    from tqdm import tqdm

    client = client or batch_client(region)
    job = describe(client, job_id)
    bar = tqdm(total=child_counts(job)[0], desc=f"{job.get('jobName', job_id)}", unit="child",
               disable=not progress, file=sys.stderr)
    try:
        while True:
            _, counts = child_counts(job)
            bar.update(counts["SUCCEEDED"] + counts["FAILED"] - bar.n)
            bar.set_postfix(succeeded=counts["SUCCEEDED"], failed=counts["FAILED"],
                            running=counts["RUNNING"] + counts["STARTING"], refresh=True)
            if is_done(job):
                break
            time.sleep(interval)
            job = describe(client, job_id)
    finally:
        bar.close()
    code, lines = outcome(client, job)
    for line in lines:
        log(line)
    return code


class BatchSubmission:
    """A run on AWS Batch with the interface of the notebook's submit panel backends
    (``poll()``, ``wait()``, ``output()``; see :data:`telemetry_lab.ui.BACKENDS`).

    Parameters
    ----------
    cfg : jobs.LocalRun
        Manifest, results root, run id, files per job and params of the run (``workers``
        and ``engine`` do not apply: Batch runs the children, with the image's engine).
    job_queue, job_definition : str, optional
        Default: ``$TELEMETRY_LAB_JOB_QUEUE`` / ``$TELEMETRY_LAB_JOB_DEFINITION``.
    client : botocore client, optional
        A Batch client; default :func:`batch_client`.
    """

    def __init__(self, cfg: jobs.LocalRun, *, job_queue: str | None = None,
                 job_definition: str | None = None, region: str | None = None, client=None):
        job_queue = job_queue or os.environ.get("TELEMETRY_LAB_JOB_QUEUE")
        job_definition = job_definition or os.environ.get("TELEMETRY_LAB_JOB_DEFINITION")
        if not (job_queue and job_definition):
            raise ParamsError("the batch backend needs a job queue and a job definition: set "
                              "TELEMETRY_LAB_JOB_QUEUE and TELEMETRY_LAB_JOB_DEFINITION "
                              "(`eval $(make env)`)")
        self.client = client or batch_client(region)
        self.job = submit_batch(manifest=cfg.manifest, results=cfg.results,
                                files_per_job=cfg.files_per_job, job_queue=job_queue,
                                job_definition=job_definition, params=cfg.params_uri,
                                run_id=cfg.run_id, client=self.client)
        self._lines = [f"submitted {self.job['jobName']} {self.job['jobId']} "
                       f"({self.job['size']} children)"]
        self._code: int | None = None

    def poll(self) -> int | None:
        """The exit code once every child is done, else None."""
        if self._code is None:
            job = describe(self.client, self.job["jobId"])
            if is_done(job):
                self._code, lines = outcome(self.client, job)
                self._lines += lines
        return self._code

    def wait(self, timeout: float | None = None, *, interval: float = 15.0) -> int:
        """Poll every ``interval`` s until done; raise TimeoutError after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {self.job['jobId']} still running after {timeout} s")
            time.sleep(interval)
        return self._code

    def output(self) -> str:
        return "\n".join(self._lines)


def cmd_watch(a) -> int:
    return watch(a.job_id, interval=a.interval, progress=not a.quiet, region=a.region)


# -- command line -------------------------------------------------------------------------

def add_aws_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Register ``submit`` and ``watch`` on the ``telemetry-lab`` command line."""
    s = subparsers.add_parser("submit", help="run the array job on AWS Batch (or locally)")
    s.add_argument("--backend", choices=("batch", "local"), default="batch")
    s.add_argument("--manifest", required=True, help="manifest (s3:// for batch)")
    s.add_argument("--files-per-job", type=int, required=True,
                   help="files per child; the array has ceil(files / K) children")
    s.add_argument("--results", help="results root (batch: an s3:// prefix, default "
                                     "$TELEMETRY_LAB_RESULTS; local: default ./output)")
    s.add_argument("--job-queue", help="Batch job queue name or ARN (default "
                                       "$TELEMETRY_LAB_JOB_QUEUE)")
    s.add_argument("--job-definition", help="Batch job definition name[:revision] or ARN "
                                            "(default $TELEMETRY_LAB_JOB_DEFINITION)")
    s.add_argument("--params", help="params file the children load (s3:// for batch)")
    s.add_argument("--run-id", help="default: a new timestamped id")
    s.add_argument("--job-name", help="default: telemetry-lab-<run id>")
    s.add_argument("--engine", choices=("python", "papermill"),
                   help="slice engine (batch default: the image's; local default: python)")
    s.add_argument("--region", help="AWS region (default: AWS_REGION / AWS_DEFAULT_REGION)")
    s.add_argument("--workers", type=int, default=2, help="children at a time (local)")
    s.add_argument("--quiet", action="store_true", help="no progress bar (local)")
    s.set_defaults(func=cmd_submit)

    w = subparsers.add_parser("watch", help="follow a Batch job until its children are done")
    w.add_argument("job_id")
    w.add_argument("--interval", type=float, default=15.0, help="seconds between polls")
    w.add_argument("--region", help="AWS region (default: AWS_REGION / AWS_DEFAULT_REGION)")
    w.add_argument("--quiet", action="store_true", help="no progress bar")
    w.set_defaults(func=cmd_watch)
