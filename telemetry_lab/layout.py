"""Channel layout: which column is which sensor, in what unit, at what rate.

The layout is data, not code. A file may carry its own layout as JSON in its parquet
key-value metadata under :data:`LAYOUT_METADATA_KEY`; a file without one gets
:func:`default_layout`, the 24-channel fleet layout, with the sample rate taken from the
timestamps.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

from .errors import LayoutError

LAYOUT_METADATA_KEY = b"telemetry_lab.layout"
LAYOUT_VERSION = 1

#: Roles the analysis and the rule-based reporter understand. Anything else is allowed
#: and analysed generically (statistics and detection, no role-specific rules).
ROLES = (
    "vibration",
    "bearing_temperature",
    "oil_pressure",
    "coolant_flow",
    "motor_current",
    "ambient_temperature",
    "humidity",
    "acoustic",
)

#: Named bits of the ``status_flags`` bitfield in the fleet layout.
DEFAULT_FAULT_BITS: dict[int, str] = {
    0: "bearing_overtemp",
    1: "low_oil_pressure",
    2: "coolant_flow_low",
    3: "motor_overcurrent",
    4: "vibration_high",
    5: "humidity_high",
    6: "acoustic_alarm",
    7: "sensor_fault",
    8: "emergency_stop",
}


@dataclass(frozen=True)
class Channel:
    """One sensor column.

    Parameters
    ----------
    name : str
        Column name in the parquet file.
    role : str
        What it measures, one of :data:`ROLES` or any other label.
    unit : str
        Physical unit of the samples, e.g. ``"mm/s"``.
    label : str
        Human-readable description.
    group : str
        Machine part the sensor belongs to (e.g. ``"spindle_1"``), used to group findings.
    """

    name: str
    role: str
    unit: str = ""
    label: str = ""
    group: str = ""


@dataclass(frozen=True)
class Layout:
    """Column roles and timing of one telemetry file."""

    channels: tuple[Channel, ...]
    sample_rate_hz: float | None = None
    timestamp_column: str = "timestamp_ns"
    flags_column: str | None = "status_flags"
    site_id_column: str | None = "site_id"
    region_column: str | None = "region"
    fault_bits: Mapping[int, str] = field(default_factory=lambda: dict(DEFAULT_FAULT_BITS))
    #: Free-form facts about the machine (shaft speed, bearing), used by diagnostics.
    machine: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        names = [c.name for c in self.channels]
        if not names:
            raise LayoutError("layout has no channels")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise LayoutError(f"layout names channels more than once: {dupes}")
        if self.sample_rate_hz is not None and not (0 < self.sample_rate_hz < float("inf")):
            raise LayoutError(f"sample_rate_hz must be positive, got {self.sample_rate_hz!r}")
        for bit in self.fault_bits:
            if not 0 <= int(bit) < 32:
                raise LayoutError(f"fault bit {bit!r} is outside 0..31 of a uint32 bitfield")

    @property
    def channel_names(self) -> list[str]:
        return [c.name for c in self.channels]

    def channel(self, name: str) -> Channel:
        for c in self.channels:
            if c.name == name:
                return c
        raise KeyError(name)

    def by_role(self, role: str) -> list[Channel]:
        return [c for c in self.channels if c.role == role]

    def with_sample_rate(self, fs: float) -> "Layout":
        return replace(self, sample_rate_hz=float(fs))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["version"] = LAYOUT_VERSION
        d["channels"] = [asdict(c) for c in self.channels]
        d["fault_bits"] = {str(k): v for k, v in self.fault_bits.items()}
        d["machine"] = dict(self.machine)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Layout":
        try:
            return cls._from_dict(d)
        except LayoutError:
            raise
        except (TypeError, ValueError, AttributeError) as exc:
            # A field of the wrong type deep inside: say so instead of a traceback.
            raise LayoutError(f"layout metadata is malformed: {exc}") from None

    @classmethod
    def _from_dict(cls, d: Mapping[str, Any]) -> "Layout":
        if not isinstance(d, Mapping):
            raise LayoutError(f"layout must be a JSON object, got {type(d).__name__}")
        version = d.get("version", LAYOUT_VERSION)
        if version != LAYOUT_VERSION:
            raise LayoutError(f"unsupported layout version {version!r} (expected {LAYOUT_VERSION})")
        known = {"version", "channels", "sample_rate_hz", "timestamp_column", "flags_column",
                 "site_id_column", "region_column", "fault_bits", "machine"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise LayoutError(f"unknown layout keys {unknown}")
        raw_channels = d.get("channels")
        if not isinstance(raw_channels, list):
            raise LayoutError(f"layout 'channels' must be a list, got {raw_channels!r:.80}")
        channels = []
        for i, c in enumerate(raw_channels):
            if not isinstance(c, Mapping) or "name" not in c or "role" not in c:
                raise LayoutError(f"layout channel #{i} needs 'name' and 'role', got {c!r:.80}")
            try:
                channels.append(Channel(**c))
            except TypeError as exc:
                raise LayoutError(f"layout channel #{i} {c.get('name')!r}: {exc}") from None
        kwargs = {k: d[k] for k in ("timestamp_column", "flags_column", "site_id_column",
                                    "region_column") if k in d}
        try:
            fault_bits = {int(k): str(v) for k, v in d.get("fault_bits", DEFAULT_FAULT_BITS).items()}
        except (ValueError, AttributeError):
            raise LayoutError(f"layout 'fault_bits' must map bit numbers to names, got "
                              f"{d.get('fault_bits')!r:.80}") from None
        fs = d.get("sample_rate_hz")
        if fs is not None and (isinstance(fs, bool) or not isinstance(fs, (int, float))):
            raise LayoutError(f"layout 'sample_rate_hz' must be a number, got {fs!r:.40}")
        machine = d.get("machine") or {}
        if not isinstance(machine, Mapping) or not isinstance(machine.get("groups") or {}, Mapping) \
                or not all(isinstance(g, Mapping) for g in (machine.get("groups") or {}).values()):
            raise LayoutError(f"layout 'machine' must be an object whose 'groups' map group names "
                              f"to objects, got {machine!r:.80}")
        for c in channels:
            for field_name in ("name", "role", "unit", "label", "group"):
                if not isinstance(getattr(c, field_name), str):
                    raise LayoutError(f"layout channel {c.name!r:.40}: '{field_name}' must be a "
                                      "string")
        if "timestamp_column" in kwargs and not isinstance(kwargs["timestamp_column"], str):
            raise LayoutError("layout 'timestamp_column' must be a column name, got "
                              f"{kwargs['timestamp_column']!r:.40}")
        for col in ("flags_column", "site_id_column", "region_column"):
            if col in kwargs and not (kwargs[col] is None or isinstance(kwargs[col], str)):
                raise LayoutError(f"layout '{col}' must be a column name, got {kwargs[col]!r:.40}")
        return cls(
            channels=tuple(channels),
            sample_rate_hz=None if fs is None else float(fs),
            fault_bits=fault_bits,
            machine=dict(machine),
            **kwargs,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> "Layout":
        try:
            return cls.from_dict(json.loads(text))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LayoutError(f"layout metadata is not valid JSON: {exc}") from None


_FLEET_CHANNELS = (
    [("vibration", "mm/s", f"spindle {s} vibration {axis}", f"spindle_{s}")
     for s in (1, 2, 3) for axis in "XYZ"]
    + [("bearing_temperature", "degC", f"bearing {b} temperature", f"spindle_{b}") for b in (1, 2, 3)]
    + [("oil_pressure", "bar", f"oil pressure {i}", f"lubrication_{i}") for i in (1, 2, 3)]
    + [("coolant_flow", "L/min", f"coolant flow {i}", f"cooling_{i}") for i in (1, 2, 3)]
    + [("motor_current", "A", f"motor {i} current", f"motor_{i}") for i in (1, 2, 3)]
    + [("ambient_temperature", "degC", "ambient air temperature", "environment"),
       ("humidity", "%", "relative humidity", "environment"),
       ("acoustic", "dB", "acoustic noise", "environment")]
)


def default_layout(sample_rate_hz: float | None = None) -> Layout:
    """The fleet's 24-channel layout: ``sensor_00`` .. ``sensor_23``.

    00-08 vibration X/Y/Z on 3 spindles (mm/s), 09-11 bearing temperatures (degC),
    12-14 oil pressure (bar), 15-17 coolant flow (L/min), 18-20 motor current (A),
    21 ambient temperature (degC), 22 relative humidity (%), 23 acoustic noise (dB).
    """
    channels = tuple(
        Channel(name=f"sensor_{i:02d}", role=role, unit=unit, label=label, group=group)
        for i, (role, unit, label, group) in enumerate(_FLEET_CHANNELS)
    )
    return Layout(channels=channels, sample_rate_hz=sample_rate_hz)
