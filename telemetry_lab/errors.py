"""Exception hierarchy.

Every error the pipeline raises on purpose derives from :class:`TelemetryLabError` and
carries the context an operator needs to act on it: the file and, where it applies, the
channel. The command-line exit code of each failure class is defined here, once.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_MANIFEST = 4
EXIT_PARAMS = 5
EXIT_STORAGE = 6
EXIT_REPORT = 7
EXIT_INTERRUPTED = 143  # 128 + SIGTERM, what a shell reports for a terminated process


def exit_code_for_signal(signum: int | None) -> int:
    """What a shell reports for a process a signal stopped: 128 + its number (130 for
    SIGINT, 143 for SIGTERM, the default when the signal is not known)."""
    return 128 + signum if signum else EXIT_INTERRUPTED


class TelemetryLabError(Exception):
    """Base class. ``file`` and ``channel`` say where the problem is."""

    exit_code = EXIT_UNEXPECTED
    kind = "error"

    def __init__(self, message: str, *, file: str | None = None, channel: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.channel = channel

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(str(self.file))
        if self.channel:
            where.append(f"channel {self.channel}")
        prefix = ": ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message

    def with_file(self, file: str) -> "TelemetryLabError":
        """Attach the file name if the raiser did not know it."""
        if self.file is None:
            self.file = file
        return self

    def to_record(self) -> dict:
        """A JSON-ready description, as written to ``errors/<stem>.json``."""
        return {
            "error": type(self).__name__,
            "kind": self.kind,
            "message": self.message,
            "file": self.file,
            "channel": self.channel,
            "exit_code": self.exit_code,
        }


class ParamsError(TelemetryLabError, ValueError):
    """An analysis setting or params file is invalid."""

    exit_code = EXIT_PARAMS
    kind = "params"


class DataError(TelemetryLabError):
    """An input file cannot be analysed: corrupt, wrong schema, too short, ...

    ``row`` is set when the error is a value at a known row (a missing timestamp, a flag
    outside the bitfield), as opposed to data that could not be decoded at all.
    """

    exit_code = EXIT_DATA
    kind = "data"

    def __init__(self, message: str, *, file: str | None = None, channel: str | None = None,
                 row: int | None = None):
        super().__init__(message, file=file, channel=channel)
        self.row = row


class LayoutError(DataError):
    """A channel layout (embedded in a file or given by hand) is inconsistent."""

    kind = "layout"


class ManifestError(TelemetryLabError):
    """A manifest is unreadable, malformed or names files that do not exist."""

    exit_code = EXIT_MANIFEST
    kind = "manifest"


class StorageError(TelemetryLabError):
    """Reading or writing a URI failed (missing bucket, permission, network)."""

    exit_code = EXIT_STORAGE
    kind = "storage"


class ReportError(TelemetryLabError):
    """A report could not be produced or failed schema validation."""

    exit_code = EXIT_REPORT
    kind = "report"


class Interrupted(TelemetryLabError):
    """The run was asked to stop (SIGTERM) before it finished."""

    exit_code = EXIT_INTERRUPTED
    kind = "interrupted"
