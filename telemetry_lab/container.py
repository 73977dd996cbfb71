"""Entry point of the job image: make a read-only container usable, then run the CLI.

The image runs with a read-only root filesystem and a tmpfs at ``/tmp``. Jupyter, IPython
and matplotlib all want to write below ``$HOME`` at start-up, so before the CLI runs this
module points them at scratch directories under the temporary directory (``$TMPDIR``,
else ``/tmp``) and creates those directories. A variable that is already set keeps its
value (the image sets them all); its directory is still created, and an unwritable one
is an error naming the variable.

The CLI then runs in this same process, so the SIGTERM that AWS Batch sends (on
cancellation, timeout or a Spot reclaim) reaches Python, not a shell. Until ``slice``
installs its own handler, SIGTERM raises :class:`~telemetry_lab.errors.Interrupted`, so
the job stops with exit code 143 even when this process is PID 1 (where a signal without a
handler is ignored).

The engine of ``slice`` defaults to ``$TELEMETRY_LAB_ENGINE`` (``papermill`` when unset);
an explicit ``--engine`` wins. Usage, as in the image's ``ENTRYPOINT``::

    telemetry-lab-container slice --manifest s3://... --results s3://...
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import tempfile

from .errors import Interrupted, StorageError, TelemetryLabError

ENGINE_ENV = "TELEMETRY_LAB_ENGINE"
DEFAULT_ENGINE = "papermill"

#: Each variable and its directory below the scratch root when the variable is unset.
SCRATCH_DIRS = {
    "HOME": "home",
    "JUPYTER_RUNTIME_DIR": "jupyter-runtime",
    "IPYTHONDIR": "ipython",
    "MPLCONFIGDIR": "matplotlib",
}

_PR_SET_NO_NEW_PRIVS = 38  # from <linux/prctl.h>


def scratch_root() -> str:
    """The writable temporary directory: ``$TMPDIR`` if set, else ``/tmp``.

    Raises
    ------
    StorageError
        If no writable temporary directory exists (no tmpfs mounted at ``/tmp``).
    """
    try:
        return tempfile.gettempdir()
    except FileNotFoundError:
        raise StorageError("no writable temporary directory: mount a tmpfs at /tmp or set "
                           "TMPDIR to a writable folder",
                           file=os.environ.get("TMPDIR", "/tmp")) from None


def prepare_environment(env: dict | None = None) -> dict[str, str]:
    """Point the scratch variables of ``env`` (default ``os.environ``) at writable folders.

    Unset variables get ``<scratch root>/<name>`` (see :data:`SCRATCH_DIRS`); set ones keep
    their value. Every folder is created with mode 0700.

    Returns
    -------
    dict
        The variable names and the folders they now point at.

    Raises
    ------
    StorageError
        If a folder cannot be created, naming the variable that points at it.
    """
    env = os.environ if env is None else env
    root = scratch_root()
    chosen = {}
    for name, sub in SCRATCH_DIRS.items():
        path = env.get(name) or os.path.join(root, sub)
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the folder {name} points at ({exc.strerror}); "
                               f"on a read-only root filesystem it must be below {root}",
                               file=path) from None
        env[name] = path
        chosen[name] = path
    return chosen


def forbid_new_privileges() -> None:
    """Set the Linux ``no_new_privs`` flag for this process and all it starts.

    AWS Batch cannot drop Linux capabilities of a container; the job runs as a non-root
    user (so it holds none), and with this flag set no setuid binary or file capability
    can give it any. Does nothing on other systems.

    Raises
    ------
    TelemetryLabError
        If the kernel refuses the flag.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise TelemetryLabError(f"prctl(PR_SET_NO_NEW_PRIVS) failed: {os.strerror(err)}")


def with_engine(argv: list[str], env: dict | None = None) -> list[str]:
    """``argv`` with ``--engine`` added to a ``slice`` command that does not name one."""
    env = os.environ if env is None else env
    if not argv or argv[0] != "slice":
        return list(argv)
    if any(a == "--engine" or a.startswith("--engine=") for a in argv):
        return list(argv)
    return [*argv, "--engine", env.get(ENGINE_ENV) or DEFAULT_ENGINE]


def _interrupt(signum, frame):
    raise Interrupted(f"stopped by {signal.Signals(signum).name} during start-up")


def main(argv: list[str] | None = None) -> int:
    """Prepare the container environment, then run ``telemetry-lab`` with ``argv``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        forbid_new_privileges()
        dirs = prepare_environment()
        argv = with_engine(argv)
        print("telemetry-lab-container: " + " ".join(f"{k}={v}" for k, v in dirs.items()),
              file=sys.stderr, flush=True)
        from .cli import main as cli_main

        return cli_main(argv)
    except TelemetryLabError as exc:
        print(f"telemetry-lab-container: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
