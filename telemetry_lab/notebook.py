"""The papermill engine of ``telemetry-lab slice``: one notebook execution per slice.

``telemetry-lab slice --engine papermill`` runs ``notebooks/site_analysis.ipynb`` once for
its whole slice. Inside the kernel the notebook builds a :class:`SliceJob`, which loops over
the slice with :func:`telemetry_lab.jobs.run_slice` (each result written as soon as its
file is done, its HTML report right after it) and prints the same ``OK``/``FAIL``/``SKIP``
lines as the plain runner. A kernel costs about 3 s to start, more than analysing a
500,000-row file, so it is started once per slice, never per file.

Parent side (:func:`run_slice_papermill`, in the slice process):

* Parameters are checked against the notebook's ``parameters`` cell (read with
  ``papermill.inspect_notebook``) before any kernel starts: an unknown name, or a required
  one left out, raises :class:`~telemetry_lab.errors.ParamsError`. Required parameters are
  the ones whose comment in the ``parameters`` cell starts with ``required``; the notebook
  checks them again itself, so a hand-run papermill fails just as loudly.
* The kernel's output lines are streamed to ``log`` (stdout) as they arrive.
* The slice summary comes back from the executed notebook itself (a display output of type
  :data:`SUMMARY_MIME`), so an old summary left in storage by an earlier attempt can never
  be mistaken for this one.
* A failure inside the notebook (papermill's ``PapermillExecutionError``, or a recorded
  ``metadata.papermill.exception``, or an error output) raises the error class the notebook
  raised, when it is one of :mod:`telemetry_lab.errors` (so a bad params file still exits
  with 5), else :class:`~telemetry_lab.errors.TelemetryLabError`; the message names the
  cell and the uploaded executed notebook.
* SIGTERM: the kernel is a separate process in its own session (jupyter_client starts it
  with ``start_new_session``), so a signal to the slice process or its group never reaches
  it. The notebook installs a :class:`~telemetry_lab.jobs.StopFlag` in the kernel, then
  writes the kernel's pid to a file in the scratch folder; a thread of the parent sends
  SIGTERM to that pid once ``should_stop()`` is true. The kernel finishes its current file
  and marks the rest SKIP, and the slice exits with 143 as the plain runner does. The pid
  file doubles as the handshake: no signal is sent before the kernel can handle it.
* Read-only root filesystem: ``HOME``, ``JUPYTER_RUNTIME_DIR``, ``IPYTHONDIR`` and
  ``MPLCONFIGDIR`` are pointed at folders below the temporary directory for the execution
  unless they already name writable folders (:func:`scratch_environment`); the connection
  file, the kernel's sockets (IPC transport), the pid file and the executed notebook live
  in a private folder there, removed afterwards. The executed notebook is uploaded to
  ``results/{run_id}/_notebooks/slice-<index>.ipynb``.
* The kernel is always the IPython kernel of this interpreter (``sys.executable``): no
  kernelspec lookup, so nothing needs installing and a user-level ``python3`` kernelspec
  pointing at another environment cannot be picked up.

Notebooks are found in ``$TELEMETRY_LAB_NOTEBOOKS_DIR``, then in the repository's
``notebooks/`` folder next to the package (source checkout, editable install), then in
``<prefix>/share/telemetry-lab/notebooks`` (a non-editable install that ships the folder as
data files).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import sysconfig
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Mapping

from . import errors, jobs, storage
from .errors import Interrupted, ParamsError, StorageError, TelemetryLabError
from .params import AnalysisParams

NOTEBOOKS_DIR_ENV = "TELEMETRY_LAB_NOTEBOOKS_DIR"
SITE_ANALYSIS = "site_analysis.ipynb"
#: MIME type of the slice summary the notebook displays for the parent to read.
SUMMARY_MIME = "application/vnd.telemetry-lab.slice-summary+json"
#: Variables pointed at scratch folders for a kernel, and their folder names there.
SCRATCH_VARS = {
    "HOME": "home",
    "JUPYTER_RUNTIME_DIR": "jupyter-runtime",
    "IPYTHONDIR": "ipython",
    "MPLCONFIGDIR": "matplotlib",
}
#: Bytes of an AF_UNIX socket path Linux accepts (108 with the terminating NUL), less room
#: for the ``-<n>`` suffix the kernel appends.
_MAX_IPC_PATH = 100
_FORWARD_POLL_S = 0.1


# -- finding notebooks --------------------------------------------------------------------

def notebooks_dir() -> Path:
    """The folder holding the project's notebooks.

    Raises
    ------
    StorageError
        When no candidate folder holds ``site_analysis.ipynb``; the message lists them.
    """
    env = os.environ.get(NOTEBOOKS_DIR_ENV)
    candidates = [Path(env)] if env else [
        Path(__file__).resolve().parents[1] / "notebooks",
        Path(sysconfig.get_path("data")) / "share" / "telemetry-lab" / "notebooks",
    ]
    for folder in candidates:
        if (folder / SITE_ANALYSIS).is_file():
            return folder
    where = ", ".join(str(c) for c in candidates)
    raise StorageError(f"{SITE_ANALYSIS} not found in {where}; set ${NOTEBOOKS_DIR_ENV} to the "
                       f"repository's notebooks/ folder")


def notebook_uri(paths: jobs.Paths, index: int) -> str:
    """Where the executed notebook of slice ``index`` is kept:
    ``results/{run_id}/_notebooks/slice-<index>.ipynb`` (index zero-padded like the slice
    summaries)."""
    return storage.join(paths.root, "results", paths.run_id, "_notebooks",
                        f"slice-{index:05d}.ipynb")


# -- parameters ---------------------------------------------------------------------------

def notebook_parameters(path: str | Path) -> dict[str, dict]:
    """The parameters a notebook declares in its cell tagged ``parameters``.

    Returns
    -------
    dict
        ``name -> {"default": source text of the default, "required": bool, "help": str}``.
        Required means the parameter's comment starts with ``required``.

    Raises
    ------
    ParamsError
        When the notebook has no ``parameters`` cell.
    """
    import papermill

    declared = papermill.inspect_notebook(str(path))
    if not declared:
        raise ParamsError("notebook has no cell tagged 'parameters'", file=str(path))
    return {name: {"default": p["default"], "help": p["help"],
                   "required": p["help"].lower().startswith("required")}
            for name, p in declared.items()}


def check_parameters(path: str | Path, parameters: Mapping[str, object]) -> None:
    """Reject names the notebook does not declare and required ones left out or empty.

    Papermill itself only logs a warning for an unknown name and injects it anyway, so a
    renamed parameter would silently fall back to its default.

    Raises
    ------
    ParamsError
        Naming the notebook, the offending names and the declared ones.
    """
    declared = notebook_parameters(path)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ParamsError(f"unknown notebook parameter(s) {unknown}; the notebook declares "
                          f"{sorted(declared)}", file=str(path))
    missing = sorted(n for n, p in declared.items()
                     if p["required"] and parameters.get(n) in (None, ""))
    if missing:
        raise ParamsError(f"required notebook parameter(s) {missing} not given", file=str(path))


# -- environment --------------------------------------------------------------------------

def _writable_dir(path: str) -> bool:
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def scratch_base() -> str:
    """This user's folder below the temporary directory (``$TMPDIR``, else ``/tmp``).

    Raises
    ------
    StorageError
        When there is no writable temporary directory or the folder cannot be created.
    """
    from .container import scratch_root

    base = os.path.join(scratch_root(), f"telemetry-lab-{os.getuid()}")
    if not _writable_dir(base):
        raise StorageError("cannot create a private scratch folder; set TMPDIR to a writable "
                           "folder", file=base)
    return base


def scratch_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Values for ``HOME``, ``JUPYTER_RUNTIME_DIR``, ``IPYTHONDIR`` and ``MPLCONFIGDIR``
    under which a kernel can start on a read-only filesystem.

    A variable of ``env`` (default ``os.environ``) that names a writable folder (created if
    need be) keeps it; any other gets ``<scratch base>/<name>`` (see :data:`SCRATCH_VARS`).
    The scratch folders are stable, so matplotlib's font cache is built once, not per slice.
    """
    env = os.environ if env is None else env
    base = None
    out = {}
    for name, sub in SCRATCH_VARS.items():
        value = env.get(name)
        if not (value and _writable_dir(value)):
            base = base or scratch_base()
            value = os.path.join(base, sub)
            if not _writable_dir(value):
                raise StorageError(f"cannot create the scratch folder for {name}", file=value)
        out[name] = value
    return out


@contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    # The kernel inherits os.environ: papermill gives no way to pass it an environment.
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _kernel_manager_class(connection_file: str):
    """A kernel manager starting this interpreter's IPython kernel, with its connection
    file (and IPC sockets beside it) at ``connection_file``."""
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager
    from traitlets import default

    # IPC sockets need no TCP port and keep ipykernel from warning about unencrypted TCP;
    # a socket path too long for AF_UNIX falls back to loopback TCP.
    transport = "ipc" if len(os.fsencode(connection_file)) <= _MAX_IPC_PATH else "tcp"

    class SliceKernelManager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _native_kernel_only(self):
            # No kernel folders: "python3" resolves to ipykernel's own spec, which runs
            # sys.executable.
            return KernelSpecManager(kernel_dirs=[], parent=self)

        @default("transport")
        def _transport(self):
            return transport

        @default("connection_file")
        def _connection_file(self):
            return connection_file

    return SliceKernelManager


# -- executing a notebook -----------------------------------------------------------------

class _LineWriter:
    """File-like sink for papermill's ``stdout_file``: passes complete lines to ``log``."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log
        self._partial = ""

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self.log(line)
        return len(text)

    def flush(self) -> None:
        """Partial lines wait for their end: papermill flushes after every message."""

    def close(self) -> None:
        if self._partial:
            self.log(self._partial)
            self._partial = ""


def _forward_stop(should_stop: Callable[[], bool], pid_file: str, done: threading.Event) -> None:
    """Send SIGTERM to the kernel once ``should_stop()`` and the kernel's pid file exist."""
    while not done.wait(_FORWARD_POLL_S):
        if not (should_stop() and os.path.exists(pid_file)):
            continue
        try:
            with open(pid_file) as f:
                pid = int(f.read().strip())
            os.kill(pid, signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass  # the kernel is already gone, or wrote nothing usable: nothing to stop
        return


def _error_class(ename: str) -> type[TelemetryLabError]:
    cls = getattr(errors, ename, None)
    if isinstance(cls, type) and issubclass(cls, TelemetryLabError):
        return cls
    return TelemetryLabError


def _failure(nb_name: str, where: str, ename: str, evalue: str, record: str) -> TelemetryLabError:
    return _error_class(ename)(f"{nb_name} failed in {where} with {ename}: {evalue} "
                               f"(executed notebook: {record})")


def _recorded_failure(nb, nb_name: str, record: str) -> TelemetryLabError | None:
    """The failure papermill recorded in an executed notebook, if any."""
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return _failure(nb_name, f"cell {i}", out.get("ename", "Error"),
                                out.get("evalue", ""), record)
        if cell.get("metadata", {}).get("papermill", {}).get("exception"):
            return _failure(nb_name, f"cell {i}", "CellExecutionError", "(no error output)",
                            record)
    if nb.metadata.get("papermill", {}).get("exception"):
        return TelemetryLabError(f"{nb_name}: papermill recorded an exception "
                                 f"(executed notebook: {record})")
    return None


def execute(notebook: str | Path, parameters: Mapping[str, object], *, workdir: str,
            record: str | None = None, log: Callable[[str], None] = print,
            should_stop: Callable[[], bool] | None = None, pid_file: str | None = None,
            start_timeout: float = 60.0):
    """Execute a notebook with papermill in this interpreter's kernel.

    Parameters
    ----------
    notebook : str or Path
        The notebook to run.
    parameters : mapping
        Values injected after its ``parameters`` cell; checked first
        (:func:`check_parameters`), before any kernel starts.
    workdir : str
        Private scratch folder for the connection file, sockets and the executed notebook
        ``executed.ipynb``.
    record : str, optional
        URI the executed notebook is uploaded to afterwards, failed or not.
    log : callable
        Receives each line the kernel prints to stdout, as it arrives.
    should_stop : callable, optional
        Polled every 0.1 s; once true, SIGTERM goes to the kernel whose pid the notebook
        wrote to ``pid_file``.
    pid_file : str, optional
        Local path the notebook writes its kernel's pid to once it handles SIGTERM.
    start_timeout : float
        Kernel start-up limit, s.

    Returns
    -------
    nbformat.NotebookNode
        The executed notebook.

    Raises
    ------
    ParamsError
        Bad parameters (no kernel was started).
    TelemetryLabError
        Or the subclass the notebook raised: the notebook failed.
    Interrupted
        The kernel died after a stop was requested.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    notebook = str(notebook)
    nb_name = os.path.basename(notebook)
    check_parameters(notebook, parameters)
    executed = os.path.join(workdir, "executed.ipynb")
    shown = record or executed
    writer = _LineWriter(log)
    done = threading.Event()
    forwarder = None
    if should_stop is not None and pid_file:
        forwarder = threading.Thread(target=_forward_stop, args=(should_stop, pid_file, done),
                                     name="forward-sigterm", daemon=True)
        forwarder.start()
    try:
        with _environ(scratch_environment()):
            nb = papermill.execute_notebook(
                notebook, executed, parameters=dict(parameters), kernel_name="python3",
                progress_bar=False, stdout_file=writer, stderr_file=sys.stderr,
                start_timeout=start_timeout,
                kernel_manager_class=_kernel_manager_class(os.path.join(workdir, "kernel.json")))
    except PapermillExecutionError as exc:
        raise _failure(nb_name, f"cell {exc.cell_index} (execution count {exc.exec_count})",
                       exc.ename, exc.evalue, shown) from None
    except Exception as exc:  # kernel died or never started: papermill raises many types
        if should_stop is not None and should_stop():
            raise Interrupted(f"{nb_name}: the kernel ended after a stop was requested "
                              f"({type(exc).__name__}: {exc})", file=shown) from None
        raise TelemetryLabError(f"{nb_name} could not run: {type(exc).__name__}: {exc} "
                                f"(executed notebook: {shown})") from None
    finally:
        done.set()
        if forwarder is not None:
            forwarder.join()
        writer.close()
        if record and os.path.exists(executed):
            _upload(executed, record)
    failure = _recorded_failure(nb, nb_name, shown)
    if failure is not None:
        raise failure
    return nb


def _upload(local: str, uri: str) -> None:
    # A copy, not storage.put_file: that renames, which fails from a tmpfs scratch to a
    # local results folder on another filesystem.
    try:
        with open(local, "rb") as f:
            storage.write_bytes(uri, f.read())
    except TelemetryLabError as exc:
        # The results themselves are written; a missing record must not fail the slice.
        print(f"telemetry-lab: warning: executed notebook not kept: {exc}", file=sys.stderr,
              flush=True)


# -- the slice, parent side ---------------------------------------------------------------

def _print_line(line: str) -> None:
    print(line, flush=True)


def summary_from_notebook(nb) -> jobs.SliceSummary | None:
    """The slice summary an executed ``site_analysis`` notebook displayed, if any."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if SUMMARY_MIME in data:
                d = data[SUMMARY_MIME]
                return jobs.SliceSummary(d["run_id"], d["index"], d["size"],
                                         [jobs.FileOutcome(**f) for f in d["files"]],
                                         d["seconds"], d["interrupted"], d.get("stop_signal"))
    return None


def run_slice_papermill(manifest: str, paths: jobs.Paths, params_uri: str | None, *,
                        index: int = 0, size: int = 1,
                        should_stop: Callable[[], bool] = lambda: False,
                        log: Callable[[str], None] = _print_line,
                        notebook: str | Path | None = None,
                        render_reports: bool = True) -> jobs.SliceSummary:
    """Run one slice of the array job through ``site_analysis.ipynb``, in one kernel.

    Parameters
    ----------
    manifest : str
        Manifest URI.
    paths : jobs.Paths
        Results root and run id.
    params_uri : str or None
        Params file; ``None`` for the default preset.
    index, size : int
        This slice's position in the array.
    should_stop : callable
        Polled while the notebook runs (the slice process's :class:`jobs.StopFlag`); when
        true the kernel gets SIGTERM and skips the files it has not started.
    log : callable
        Receives the ``OK``/``FAIL``/``SKIP`` lines and the totals line as they happen.
    notebook : str or Path, optional
        Notebook to run instead of the shipped ``site_analysis.ipynb``.
    render_reports : bool
        Write each site's HTML report beside its result.

    Returns
    -------
    jobs.SliceSummary
        As written to ``results/{run_id}/_slices/<index>.json``; its ``exit_code`` is the
        slice's.

    Raises
    ------
    ParamsError, TelemetryLabError
        See :func:`execute`.
    """
    notebook = Path(notebook) if notebook else notebooks_dir() / SITE_ANALYSIS
    if should_stop():
        # Stopped before a kernel was worth starting: the plain runner's SKIP lines and
        # summary. With every file skipped the params are never used.
        return jobs.run_slice(jobs.slice_entries(manifest, index, size), paths,
                              AnalysisParams(), index=index, size=size,
                              should_stop=lambda: True, log=log)
    workdir = tempfile.mkdtemp(prefix="tl-", dir=scratch_base())
    pid_file = os.path.join(workdir, "kernel.pid")
    parameters = {"manifest": manifest, "results": paths.root, "run_id": paths.run_id,
                  "params": params_uri or "", "array_index": index, "array_size": size,
                  "render_reports": render_reports, "pid_file": pid_file}
    # The executed notebook is the slice's log: always kept, failed or not.
    record = notebook_uri(paths, index)
    try:
        nb = execute(notebook, parameters, workdir=workdir, record=record, log=log,
                     should_stop=should_stop, pid_file=pid_file)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary = summary_from_notebook(nb)
    if summary is None:
        raise TelemetryLabError(f"{notebook.name} finished without displaying its slice "
                                f"summary ({SUMMARY_MIME}); executed notebook: {record}")
    return summary


# -- the slice, kernel side ---------------------------------------------------------------

class SliceJob:
    """One slice of the array job, run inside ``site_analysis.ipynb``.

    Building it validates the notebook's parameters, loads the params and the slice's
    files, and installs a :class:`jobs.StopFlag` for SIGTERM and SIGINT (an interrupt from
    JupyterLab also stops the slice cleanly after the current file). Then, if ``pid_file``
    is given, it writes the kernel's pid there for the parent to forward SIGTERM.

    Parameters
    ----------
    manifest, results, run_id : str
        Required: manifest URI, results root, run id.
    params : str
        Params file URI; empty for the default preset.
    array_index, array_size : int
        This slice's position in the array.
    render_reports : bool
        Write each site's HTML report right after its result.
    pid_file : str
        Local path for the kernel's pid; empty when nothing forwards signals.

    Raises
    ------
    ParamsError
        A required parameter is empty, the params file is invalid, the run id or array
        position is bad.
    ManifestError
        The manifest cannot be read.
    """

    def __init__(self, *, manifest: str, results: str, run_id: str, params: str = "",
                 array_index: int = 0, array_size: int = 1, render_reports: bool = True,
                 pid_file: str = ""):
        missing = [n for n, v in (("manifest", manifest), ("results", results),
                                  ("run_id", run_id)) if not v]
        if missing:
            raise ParamsError(f"site_analysis needs the parameter(s) {missing}: pass them with "
                              f"`papermill -p NAME VALUE` or run `telemetry-lab slice --engine "
                              f"papermill`")
        self.paths = jobs.Paths(results, jobs.check_run_id(run_id))
        self.params = AnalysisParams.load(params) if params else AnalysisParams.preset("default")
        self.index, self.size = jobs.array_position(int(array_index), int(array_size))
        self.entries = jobs.slice_entries(manifest, self.index, self.size)
        self.render_reports = bool(render_reports)
        self.stop = jobs.StopFlag()
        self.stop.install()
        if pid_file:
            storage.write_bytes(pid_file, f"{os.getpid()}\n".encode())

    def run(self) -> jobs.SliceSummary:
        """Process the slice: results, reports and summary written as each is done; prints
        one line per file and the totals line."""
        hook = None
        if self.render_reports:
            from .render import site_report_hook

            hook = site_report_hook(self.paths)
        return jobs.run_slice(self.entries, self.paths, self.params, index=self.index,
                              size=self.size, should_stop=self.stop, log=_print_line,
                              on_result=hook)

    @staticmethod
    def show(summary: jobs.SliceSummary) -> None:
        """Display the summary: a table for readers, and :data:`SUMMARY_MIME` for the
        parent process."""
        from html import escape

        from IPython.display import display

        rows = "".join(
            f"<tr><td>{escape(f.stem)}</td><td>{f.status}</td><td>{f.rows or ''}</td>"
            f"<td>{'' if f.events is None else f.events}</td><td>{escape(f.health or '')}</td>"
            f"<td>{f.seconds:.2f}</td><td>{escape(f.error['message']) if f.error else ''}</td>"
            f"</tr>" for f in summary.files)
        html = (f"<p>{escape(summary.totals_line())}</p><table><thead><tr><th>file</th>"
                f"<th>status</th><th>rows</th><th>events</th><th>health</th><th>s</th>"
                f"<th>error</th></tr></thead><tbody>{rows}</tbody></table>")
        display({SUMMARY_MIME: summary.to_dict(), "text/html": html,
                 "text/plain": summary.totals_line()}, raw=True)
