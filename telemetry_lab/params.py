"""AnalysisParams: everything tunable about the analysis, in one frozen object.

Build one from a preset and override what you tune::

    params = AnalysisParams.preset("seed").replace(z_threshold=5.0)

Every field is validated at construction; a bad value raises :class:`ParamsError` quoting
it. Nothing is clamped silently.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

from .errors import ParamsError

DETECTORS = ("zscore", "robust")
REPORT_BACKENDS = ("rules", "bedrock")
WELCH_WINDOWS = ("hann", "hamming", "blackman", "boxcar", "flattop")


@dataclass(frozen=True)
class AnalysisParams:
    """Settings of one analysis run.

    Attributes
    ----------
    preset_name : str
        Name of the preset these settings started from (recorded in results).
    detector : {"zscore", "robust"}
        ``zscore``: centred rolling mean and variance with zeros outside the file (the
        original method). ``robust``: a trailing, guarded reference window, a noise scale
        that trends do not inflate, and a short-mean statistic for level shifts; see
        :func:`telemetry_lab.detect.robust_zscore`.
    window : int
        Rolling window (``zscore``) or reference window (``robust``) length, samples.
    z_threshold : float
        An event must reach this z-score.
    z_exit : float or None
        Hysteresis: an event extends over neighbouring samples while their z-score exceeds
        this (``None``: only samples above ``z_threshold`` belong to events).
    guard_samples : int
        ``robust``: gap between a sample and its reference window, samples.
    short_window : int
        ``robust``: length of the short mean compared with the reference, samples.
    min_reference : int
        ``robust``: fewest reference samples needed before a sample is scored; at most
        ``window``.
    energy_roles : tuple of str
        ``robust``: channel roles scored on vibration energy (see the detector).
    variance_floor : float
        Lower bound of the rolling variance (squared channel units) so flat signals do not
        divide by zero.
    min_event_samples : int
        Events shorter than this many samples are dropped.
    merge_gap_samples : int
        Events separated by at most this many unflagged samples are merged.
    welch_nperseg : int
        Welch segment length, samples.
    welch_overlap : float
        Fraction of a segment shared with the next, in [0, 0.95]: beyond that the segments
        advance by a few samples and the FFTs multiply (0.999 is 500 times 0.5's work).
    welch_window : str
        Taper applied to each Welch segment.
    spectral_roles : tuple of str
        Channel roles that get a Welch spectrum.
    channels : tuple of str or None
        Channels to analyse; ``None`` means every sensor channel of the file's layout.
    chunk_rows : int
        Rows processed per streaming step; bounds memory. Results do not depend on it
        beyond rounding (the last digits of statistics and scores).
    max_events_per_channel : int
        At most this many events per channel are kept in the result (the strongest by
        peak z); the full count is always reported.
    report_backend : {"rules", "bedrock"}
        Who writes the incident report.
    bearing_diagnostics : bool
        Condition indicators (RMS, peak, crest factor, kurtosis) of every vibration channel
        and, where the file's layout names the bearing and shaft speed, envelope analysis
        at the bearing defect frequencies (:mod:`telemetry_lab.bearing`).
    envelope_band : tuple of float or None
        Fixed demodulation band ``(low_hz, high_hz)``; ``None`` lets the kurtogram choose.
    envelope_harmonics : int
        Harmonics of each defect frequency scored.
    envelope_tolerance : float
        Relative search range around each nominal defect frequency.
    envelope_threshold_db : float
        Score (dB over the local floor) from which a defect is reported.
    envelope_resolution_hz : float or None
        Envelope-spectrum resolution, Hz (default: chosen from the defect frequencies).
    """

    preset_name: str = "default"
    detector: str = "robust"
    window: int = 5000
    z_threshold: float = 6.5
    z_exit: float | None = 3.0
    guard_samples: int = 50
    short_window: int = 50
    min_reference: int = 200
    energy_roles: tuple[str, ...] = ("vibration",)
    variance_floor: float = 1e-9
    min_event_samples: int = 1
    merge_gap_samples: int = 100
    welch_nperseg: int = 8192
    welch_overlap: float = 0.5
    welch_window: str = "hann"
    spectral_roles: tuple[str, ...] = ("vibration",)
    channels: tuple[str, ...] | None = None
    chunk_rows: int = 131072
    max_events_per_channel: int = 1000
    report_backend: str = "rules"
    bearing_diagnostics: bool = True
    envelope_band: tuple[float, float] | None = None
    envelope_harmonics: int = 3
    envelope_tolerance: float = 0.02
    envelope_threshold_db: float = 6.0
    envelope_resolution_hz: float | None = None

    def __post_init__(self):
        # Lists from JSON become tuples so the object stays hashable and comparable.
        for name in ("spectral_roles", "channels", "energy_roles", "envelope_band"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        _check_choice("detector", self.detector, DETECTORS)
        _check_choice("report_backend", self.report_backend, REPORT_BACKENDS)
        _check_choice("welch_window", self.welch_window, WELCH_WINDOWS)
        _check_int("window", self.window, minimum=2, maximum=MAX_WINDOW)
        _check_int("min_event_samples", self.min_event_samples, minimum=1)
        _check_int("guard_samples", self.guard_samples, minimum=0, maximum=MAX_WINDOW)
        _check_int("short_window", self.short_window, minimum=1, maximum=MAX_WINDOW)
        _check_int("min_reference", self.min_reference, minimum=2, maximum=MAX_WINDOW)
        _check_int("merge_gap_samples", self.merge_gap_samples, minimum=0)
        _check_int("welch_nperseg", self.welch_nperseg, minimum=16, maximum=MAX_WINDOW)
        _check_int("chunk_rows", self.chunk_rows, minimum=1024, maximum=MAX_CHUNK_ROWS)
        _check_int("max_events_per_channel", self.max_events_per_channel, minimum=1)
        _check_number("z_threshold", self.z_threshold, lower=0.0, lower_open=True)
        _check_number("variance_floor", self.variance_floor, lower=0.0, lower_open=True)
        if self.z_exit is not None:
            _check_number("z_exit", self.z_exit, lower=0.0, lower_open=True)
            if self.z_exit > self.z_threshold:
                raise ParamsError(f"z_exit={self.z_exit!r} must not exceed "
                                  f"z_threshold={self.z_threshold!r}")
        _check_number("welch_overlap", self.welch_overlap, lower=0.0, upper=MAX_WELCH_OVERLAP)
        if not isinstance(self.preset_name, str) or not self.preset_name:
            raise ParamsError(f"preset_name={self.preset_name!r} must be a non-empty string")
        _check_names("spectral_roles", self.spectral_roles, allow_none=False)
        if self.energy_roles != ():
            _check_names("energy_roles", self.energy_roles, allow_none=False)
        _check_names("channels", self.channels, allow_none=True)
        if not isinstance(self.bearing_diagnostics, bool):
            raise ParamsError(f"bearing_diagnostics={self.bearing_diagnostics!r} must be true or false")
        self.envelope_settings  # validates the envelope fields
        if self.detector == "robust" and self.min_reference > self.window:
            raise ParamsError(f"min_reference={self.min_reference!r} must not exceed "
                              f"window={self.window!r}: the reference window holds at most "
                              "window samples, so no sample would ever be scored")
        if self.chunk_rows < 2 * self.window:
            raise ParamsError(f"chunk_rows={self.chunk_rows!r} must be at least twice "
                              f"window={self.window!r}")

    # -- construction -----------------------------------------------------------------

    @classmethod
    def preset(cls, name: str) -> "AnalysisParams":
        """A named preset: ``"default"`` or ``"seed"`` (see :data:`PRESETS`)."""
        try:
            overrides = PRESETS[name]
        except KeyError:
            raise ParamsError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
        return cls(preset_name=name, **overrides)

    def replace(self, **changes) -> "AnalysisParams":
        """A copy with some fields changed (validated like any construction)."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise ParamsError(f"unknown parameter(s) {unknown}")
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str | None = None) -> "AnalysisParams":
        """Parse ``{"preset": name, **overrides}``; the preset defaults to ``"default"``."""
        if not isinstance(d, Mapping):
            raise ParamsError(f"params must be a JSON object, got {type(d).__name__}", file=source)
        d = dict(d)
        base = d.pop("preset", "default")
        try:
            return cls.preset(base).replace(**d)
        except ParamsError as exc:
            raise exc.with_file(source) if source else exc
        except TypeError as exc:
            raise ParamsError(str(exc), file=source) from None

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str | None = None) -> "AnalysisParams":
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ParamsError(f"params file is not valid JSON: {exc}", file=source) from None
        return cls.from_dict(d, source=source)

    @classmethod
    def load(cls, uri: str) -> "AnalysisParams":
        """Read a params file (local path or URI) written by :meth:`to_json`."""
        from . import storage

        return cls.from_json(storage.read_bytes(uri), source=uri)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["spectral_roles"] = list(self.spectral_roles)
        d["energy_roles"] = list(self.energy_roles)
        d["envelope_band"] = None if self.envelope_band is None else list(self.envelope_band)
        d["channels"] = None if self.channels is None else list(self.channels)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def save(self, uri: str) -> None:
        from . import storage

        storage.write_bytes(uri, (self.to_json() + "\n").encode())

    def digest(self) -> str:
        """Short stable hash of the settings, to tell two runs' params apart."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def envelope_settings(self):
        """The envelope-analysis settings as :class:`telemetry_lab.bearing.EnvelopeSettings`."""
        from .bearing import EnvelopeSettings

        return EnvelopeSettings(harmonics=self.envelope_harmonics, tolerance=self.envelope_tolerance,
                                threshold_db=self.envelope_threshold_db,
                                resolution_hz=self.envelope_resolution_hz, band=self.envelope_band)

    @property
    def halo(self) -> tuple[int, int]:
        """Samples of context before and after a chunk that make chunked results exact."""
        if self.detector == "zscore":
            return self.window + 1, self.window + 1
        return self.window + self.guard_samples + self.short_window + 1, self.short_window + 1


#: Named presets: overrides of the dataclass defaults. ``seed`` is the original method
#: (z > 4 over a centred 1000-sample window, every flagged run an event) and never changes.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "seed": {
        "detector": "zscore",
        "window": 1000,
        "z_threshold": 4.0,
        "z_exit": None,
        "variance_floor": 1e-9,
        "min_event_samples": 1,
        "merge_gap_samples": 0,
        "welch_nperseg": 8192,
        "welch_overlap": 0.5,
        "welch_window": "hann",
        "bearing_diagnostics": False,
    },
}


def _check_choice(name, value, choices):
    if value not in choices:
        raise ParamsError(f"{name}={value!r} is not one of {list(choices)}")


#: The largest count any integer setting may hold: more rows than any file has, and small
#: enough that sums of rows and settings stay exact 64-bit integers.
MAX_COUNT = 2**53


#: The longest window or segment, samples (70 minutes at 1 kHz): scratch buffers scale
#: with it (five rings of this many samples for the rolling window, several segments for
#: Welch), and beyond it they would outgrow the analysis's memory bound.
MAX_WINDOW = 2**22

#: The most rows per streaming step: each analysis thread holds about this many rows of
#: its channels.
MAX_CHUNK_ROWS = 2**24


def _check_int(name, value, *, minimum, maximum=MAX_COUNT):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParamsError(f"{name}={value!r} must be an integer")
    if value < minimum:
        raise ParamsError(f"{name}={value!r} must be at least {minimum}")
    if value > maximum:
        raise ParamsError(f"{name}={value!r} must be at most {maximum:,}")


#: Segments sharing more than this fraction of their length cost FFTs without adding
#: information (the spectra of near-identical segments average nothing out).
MAX_WELCH_OVERLAP = 0.95


def _check_number(name, value, *, lower=None, upper=None, lower_open=False, upper_open=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ParamsError(f"{name}={value!r} must be a finite number")
    if lower is not None and (value < lower or (lower_open and value == lower)):
        raise ParamsError(f"{name}={value!r} must be {'>' if lower_open else '>='} {lower}")
    if upper is not None and (value > upper or (upper_open and value == upper)):
        raise ParamsError(f"{name}={value!r} must be {'<' if upper_open else '<='} {upper}")


def _check_names(name, value, *, allow_none):
    if value is None and allow_none:
        return
    if not isinstance(value, tuple) or not value or not all(isinstance(v, str) and v for v in value):
        raise ParamsError(f"{name}={value!r} must be a non-empty list of names")
    if len(set(value)) != len(value):
        raise ParamsError(f"{name}={value!r} lists a name more than once")
