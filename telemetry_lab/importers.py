"""Bringing outside recordings into the project's file layout: MATLAB ``.mat`` and CSV.

``telemetry-lab import mat FILE.mat --site-id ID [--fs HZ] [--rpm N] [--bearing NAME]``
reads a CWRU record (variables ``XnnnDE_time``, ``XnnnFE_time``, ``XnnnBA_time`` and
``XnnnRPM``) or an MFPT record (struct ``bearing`` with ``gs``, ``sr``, ``rate``,
``load``). ``telemetry-lab import csv FILE --site-id ID --role ROLE ...`` reads a table
with a timestamp column.

Both write one parquet file in the layout the analysis reads (``timestamp_ns`` int64,
``site_id`` and ``region`` dictionary strings, one float64 column per channel,
``status_flags`` uint32 zeros) carrying its own :class:`~telemetry_lab.layout.Layout`
as metadata: channel roles and units, the sample rate, and under ``machine`` the shaft
speed (``shaft_hz``, ``shaft_rpm``) and the bearing (see
:class:`~telemetry_lab.bearing.BearingSpec`) when they are known.

Nothing is guessed: a file that does not state its sample rate needs ``--fs`` (CWRU
records are 12 kHz or 48 kHz and do not say which), and a value given on the command
line that contradicts the file is an error, not an override.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from . import storage
from .bearing import BearingSpec, lookup_bearing
from .errors import DataError, ParamsError, TelemetryLabError
from .io import file_stem, write_table
from .layout import LAYOUT_METADATA_KEY, Channel, Layout

RESERVED_COLUMNS = ("timestamp_ns", "site_id", "region", "status_flags")
_CWRU_SIGNAL = re.compile(r"^X(\d+)_(DE|FE|BA)_time$")
_CWRU_RPM = re.compile(r"^X(\d+)RPM$")
_CWRU_CHANNELS = {
    "DE": ("drive_end", "drive-end accelerometer", "drive_end"),
    "FE": ("fan_end", "fan-end accelerometer", "fan_end"),
    "BA": ("base", "base accelerometer", "base"),
}


@dataclass
class Recording:
    """Signals read from an outside file, before they are written in the project layout.

    Attributes
    ----------
    source : str
        The file read.
    channels : list of (Channel, ndarray)
        Each channel's description and its float64 samples.
    fs : float
        Sample rate, Hz.
    timestamps_ns : ndarray of int64, optional
        Sample times when the file has them; otherwise they are made from ``fs``.
    start_ns : int
        Time of the first sample, ns since the epoch, when there are no timestamps.
    shaft_hz : float, optional
        Shaft speed, Hz.
    machine : dict
        Further facts for the layout's ``machine`` (e.g. the load).
    """

    source: str
    channels: list[tuple[Channel, np.ndarray]]
    fs: float
    timestamps_ns: np.ndarray | None = None
    start_ns: int = 0
    shaft_hz: float | None = None
    machine: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return len(self.channels[0][1])


# -- MATLAB ---------------------------------------------------------------------------


def read_mat(uri: str, *, fs: float | None = None, rpm: float | None = None) -> Recording:
    """Read a CWRU or MFPT bearing record.

    Parameters
    ----------
    uri : str
        Local path or ``s3://`` URI of a MATLAB v5 file.
    fs : float, optional
        Sample rate, Hz. Required when the file does not state it (CWRU); must agree
        with the file when it does (MFPT ``sr``).
    rpm : float, optional
        Shaft speed, rev/min. Fills in a missing speed; must agree (within 0.5 rpm)
        with the file's ``XnnnRPM`` or ``rate`` when it has one.

    Raises
    ------
    DataError
        Not a readable MAT file, or no recognisable signal variables.
    ParamsError
        Sample rate missing, or ``fs`` / ``rpm`` contradicting the file.
    """
    import scipy.io as sio

    raw = storage.read_bytes(uri)
    try:
        mat = sio.loadmat(io.BytesIO(raw), squeeze_me=True, struct_as_record=False)
    except (ValueError, TypeError, NotImplementedError, OSError, sio.matlab.MatReadError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"not a readable MATLAB v5 file ({text})", file=uri) from None
    names = sorted(k for k in mat if not k.startswith("__"))
    try:
        if any(_CWRU_SIGNAL.match(k) for k in names):
            rec = _read_cwru(uri, mat, fs=fs, rpm=rpm)
        elif "bearing" in names and hasattr(mat["bearing"], "_fieldnames"):
            rec = _read_mfpt(uri, mat["bearing"], fs=fs, rpm=rpm)
        else:
            raise DataError(f"no recognisable signal variables: expected CWRU XnnnDE_time/FE/BA "
                            f"or an MFPT struct 'bearing' with gs and sr; found {names}")
    except TelemetryLabError as exc:
        raise exc.with_file(uri)
    rec.start_ns = _header_time_ns(mat.get("__header__"))
    return rec


def _read_cwru(uri: str, mat: dict, *, fs: float | None, rpm: float | None) -> Recording:
    records = sorted({_CWRU_SIGNAL.match(k).group(1) for k in mat if _CWRU_SIGNAL.match(k)})
    if len(records) > 1:
        # Some CWRU files also hold a neighbouring record; the file's own number decides.
        numbers = re.findall(r"\d+", _stem(uri))
        matching = [r for r in records if numbers and int(r) == int(numbers[-1])]
        if not matching:
            raise DataError(f"holds CWRU records {records}; cannot tell which one this file is "
                            "(name the file by its record number)")
        records = matching
    rec_no = records[0]
    if fs is None:
        raise ParamsError(f"CWRU record {int(rec_no)} does not state its sample rate; pass --fs "
                          "(12000 or 48000 Hz: see the data set's README)")
    channels = []
    for code, (name, label, group) in _CWRU_CHANNELS.items():
        var = f"X{rec_no}_{code}_time"
        if var in mat:
            x = _signal(mat[var], var)
            channels.append((Channel(name=name, role="vibration", unit="g",
                                     label=f"{label} ({var})", group=group), x))
    lengths = {len(x) for _, x in channels}
    if len(lengths) != 1:
        raise DataError(f"CWRU record {int(rec_no)} channels differ in length: "
                        f"{ {c.name: len(x) for c, x in channels} }")
    file_rpm = None
    rpm_var = next((k for k in mat if _CWRU_RPM.match(k) and _CWRU_RPM.match(k).group(1) == rec_no), None)
    if rpm_var is not None:
        file_rpm = float(np.asarray(mat[rpm_var], dtype=float).ravel()[0])
    shaft_rpm = _agree("shaft speed (rpm)", file_rpm, rpm, tol=0.5)
    return Recording(source=uri, channels=channels, fs=_check_fs(fs), shaft_hz=_hz(shaft_rpm),
                     machine={"record": f"CWRU {int(rec_no)}"})


def _read_mfpt(uri: str, b: Any, *, fs: float | None, rpm: float | None) -> Recording:
    fields = set(b._fieldnames)
    missing = sorted({"gs", "sr"} - fields)
    if missing:
        raise DataError(f"MFPT struct 'bearing' lacks {missing}; has {sorted(fields)}")
    x = _signal(b.gs, "bearing.gs")
    file_fs = float(np.asarray(b.sr, dtype=float).ravel()[0])
    file_rpm = float(np.asarray(b.rate, dtype=float).ravel()[0]) * 60 if "rate" in fields else None
    machine: dict[str, Any] = {"record": f"MFPT {_stem(uri)}"}
    if "load" in fields:
        try:
            machine["load_lbs"] = float(np.asarray(b.load).ravel()[0])
        except (TypeError, ValueError):
            machine["load"] = str(b.load)
    return Recording(source=uri, fs=_check_fs(_agree("sample rate (Hz)", file_fs, fs, tol=1e-6 * file_fs)),
                     channels=[(Channel(name="accel", role="vibration", unit="g",
                                        label="MFPT accelerometer (bearing.gs)", group="test_bearing"), x)],
                     shaft_hz=_hz(_agree("shaft speed (rpm)", file_rpm, rpm, tol=0.5)), machine=machine)


def _stem(uri: str) -> str:
    return re.sub(r"\.[^./]*$", "", file_stem(uri))


def _signal(value: Any, name: str) -> np.ndarray:
    try:
        x = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"variable {name} is not numeric") from None
    if x.ndim != 1 and not (x.ndim == 2 and 1 in x.shape):
        raise DataError(f"variable {name} has shape {x.shape}; expected a vector")
    x = x.ravel()
    if len(x) < 2:
        raise DataError(f"variable {name} has {len(x)} samples")
    return x


def _agree(what: str, in_file: float | None, given: float | None, *, tol: float) -> float | None:
    if given is not None and in_file is not None and abs(given - in_file) > tol:
        raise ParamsError(f"the file states {what} {in_file:g} but {given:g} was given; leave "
                          "the option out or correct it")
    return in_file if in_file is not None else given


def _check_fs(fs: float) -> float:
    if isinstance(fs, bool) or not isinstance(fs, (int, float)) or not (math.isfinite(fs) and fs > 0):
        raise ParamsError(f"sample rate must be a positive number of Hz, got {fs!r}")
    return float(fs)


def _hz(rpm: float | None) -> float | None:
    if rpm is None:
        return None
    if not (math.isfinite(rpm) and rpm > 0):
        raise ParamsError(f"shaft speed must be a positive number of rpm, got {rpm!r}")
    return rpm / 60.0


def _header_time_ns(header: Any) -> int:
    """The MAT header's 'Created on' time (UTC assumed), the only date such files carry."""
    text = header.decode("latin-1") if isinstance(header, bytes) else str(header or "")
    m = re.search(r"Created on:\s*(\w{3} \w{3}\s+\d+ \d\d:\d\d:\d\d \d{4})", text)
    if not m:
        return 0
    try:
        t = datetime.strptime(re.sub(r"\s+", " ", m.group(1)), "%a %b %d %H:%M:%S %Y")
    except ValueError:
        return 0
    return int(t.replace(tzinfo=timezone.utc).timestamp()) * 1_000_000_000


# -- CSV ------------------------------------------------------------------------------


def read_csv(uri: str, *, timestamp_column: str | None = None, timestamp_format: str | None = None,
             columns: Sequence[str] | None = None, names: Sequence[str] | None = None,
             roles: Sequence[str] = (), units: Sequence[str] = ()) -> Recording:
    """Read a table with one timestamp column and numeric value columns.

    Parameters
    ----------
    uri : str
        Local path or ``s3://`` URI of a CSV file with a header row.
    timestamp_column : str, optional
        Header of the timestamp column (``""`` for an unnamed index column, ``#N`` for
        the N-th column from 0). Default: the first column.
    timestamp_format : str, optional
        ``strptime`` format of the timestamps, e.g. ``%Y.%m.%d.%H.%M.%S``; read as UTC.
        Without it the timestamps must be ISO 8601 or numbers of seconds since the epoch.
    columns : sequence of str, optional
        Headers of the value columns to import; default every other column.
    names : sequence of str, optional
        Channel names, one per value column; default the headers made into identifiers
        (lower case, ``_`` for other characters, ``ch_`` before a leading digit).
    roles, units : sequence of str
        ``ROLE`` for every channel, or ``NAME=ROLE`` per channel (likewise units). Every
        channel needs a role; the unit defaults to empty.

    Raises
    ------
    DataError
        Unreadable CSV, missing column, non-numeric values, unparseable or
        non-increasing timestamps.
    ParamsError
        Bad names, roles or units.
    """
    try:
        return _read_csv(uri, timestamp_column, timestamp_format, columns, names, roles, units)
    except TelemetryLabError as exc:
        raise exc.with_file(uri)


def _read_csv(uri, timestamp_column, timestamp_format, columns, names, roles, units) -> Recording:
    source = storage.open_input(uri)
    try:
        table = pacsv.read_csv(source)
    except (pa.ArrowException, OSError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"not a readable CSV file ({text})") from None
    finally:
        source.close()
    headers = table.column_names
    if table.num_rows < 2:
        raise DataError(f"has {table.num_rows} data rows; at least 2 are needed for a sample rate")
    ts_name = _pick_column(headers, headers[0] if timestamp_column is None else timestamp_column)
    value_headers = [h for h in headers if h != ts_name] if columns is None else \
        [_pick_column(headers, c) for c in columns]
    if not value_headers:
        raise DataError("has no value columns besides the timestamp column")
    if ts_name in value_headers:
        raise ParamsError(f"column {ts_name!r} cannot be both the timestamp and a value column")
    ts = _parse_timestamps(table.column(ts_name), ts_name, timestamp_format)
    step = np.diff(ts)
    if (step <= 0).any():
        row = int(np.flatnonzero(step <= 0)[0]) + 1
        raise DataError(f"timestamps in column {ts_name!r} do not increase at data row {row + 1}")
    fs = 1e9 / float(np.median(step))

    if names is None:
        names = _unique([_identifier(h, i) for i, h in enumerate(value_headers)])
    else:
        names = list(names)
        if len(names) != len(value_headers):
            raise ParamsError(f"--names gives {len(names)} names for {len(value_headers)} value "
                              f"columns {value_headers}")
        bad = [n for n in names if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n) or n in RESERVED_COLUMNS]
        if bad or len(set(names)) != len(names):
            raise ParamsError(f"channel names must be distinct identifiers other than "
                              f"{list(RESERVED_COLUMNS)}; got {names}")
    role_of = _assignments("role", roles, names)
    unit_of = _assignments("unit", units, names)
    missing = [n for n in names if not role_of.get(n)]
    if missing:
        raise ParamsError(f"channels {missing} have no role; give --role ROLE for all columns or "
                          "--role NAME=ROLE (e.g. vibration, bearing_temperature)")
    channels = []
    for header, name in zip(value_headers, names):
        x = _numeric(table.column(header), header)
        channels.append((Channel(name=name, role=role_of[name], unit=unit_of.get(name, ""),
                                 label=f"column {header!r} of {_stem(uri)}"), x))
    return Recording(source=uri, channels=channels, fs=fs, timestamps_ns=ts)


def _pick_column(headers: list[str], wanted: str) -> str:
    if wanted in headers:
        return wanted
    m = re.fullmatch(r"#(\d+)", wanted)
    if m and int(m.group(1)) < len(headers):
        return headers[int(m.group(1))]
    raise DataError(f"has no column {wanted!r}; columns are {headers}")


def _parse_timestamps(col: pa.ChunkedArray, name: str, fmt: str | None) -> np.ndarray:
    if col.null_count:
        row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"timestamp column {name!r} is empty at data row {row + 1}")
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        secs = col.to_numpy().astype(np.float64)
        return np.round(secs * 1e9).astype(np.int64)
    if pa.types.is_timestamp(col.type):
        return col.cast(pa.timestamp("ns")).cast(pa.int64()).to_numpy()
    text = col.cast(pa.string())
    if fmt is not None:
        parsed = pc.strptime(text, format=fmt, unit="ns", error_is_null=True)
    else:
        try:
            parsed = text.cast(pa.timestamp("ns"))
        except pa.ArrowInvalid as exc:
            raise DataError(f"cannot read the timestamps in column {name!r} as ISO 8601 "
                            f"({str(exc).splitlines()[0]}); give --timestamp-format") from None
    if parsed.null_count:
        row = int(np.flatnonzero(parsed.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"timestamp {text[row].as_py()!r} in column {name!r} (data row {row + 1}) "
                        f"does not match the format {fmt!r}")
    return parsed.cast(pa.int64()).to_numpy()


def _numeric(col: pa.ChunkedArray, header: str) -> np.ndarray:
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type) or pa.types.is_null(col.type)):
        sample = next((v for v in col.to_pylist() if v is not None), None)
        raise DataError(f"column {header!r} is not numeric (e.g. {sample!r}); leave it out with "
                        "--columns", channel=header)
    return col.cast(pa.float64()).fill_null(float("nan")).to_numpy()


def _identifier(header: str, index: int) -> str:
    name = re.sub(r"[^0-9a-z]+", "_", header.strip().lower()).strip("_")
    if not name:
        name = f"ch_{index}"
    elif name[0].isdigit() or name in RESERVED_COLUMNS:
        name = f"ch_{name}"
    return name


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if n in seen:
            seen[n] += 1
            n = f"{n}_{seen[n]}"
        seen.setdefault(n, 0)
        out.append(n)
    return out


def _assignments(what: str, items: Sequence[str], names: Sequence[str]) -> dict[str, str]:
    # A blanket VALUE applies to every channel; NAME=VALUE wins over it, whatever the order.
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            out = {n: item for n in names}
    for item in items:
        if "=" in item:
            name, value = item.split("=", 1)
            if name not in names:
                raise ParamsError(f"--{what} {item!r} names no channel; channels are {list(names)}")
            out[name] = value
    return out


# -- writing --------------------------------------------------------------------------


def layout_for(rec: Recording, *, bearing: BearingSpec | None = None) -> Layout:
    """The layout that :func:`write_recording` embeds for ``rec``."""
    machine = dict(rec.machine)
    if rec.shaft_hz is not None:
        machine["shaft_hz"] = rec.shaft_hz
        machine["shaft_rpm"] = rec.shaft_hz * 60
    if bearing is not None:
        if rec.shaft_hz is None:
            raise ParamsError(f"a bearing ({bearing.name}) was given but no shaft speed: pass "
                              "--rpm", file=rec.source)
        machine["bearing"] = bearing.to_dict()
    return Layout(channels=tuple(c for c, _ in rec.channels), sample_rate_hz=rec.fs, machine=machine)


def write_recording(rec: Recording, out: str, *, site_id: str, region: str = "unknown",
                    bearing: BearingSpec | None = None, start_ns: int | None = None) -> Layout:
    """Write ``rec`` as a parquet file in the project layout; return the embedded layout.

    Parameters
    ----------
    rec : Recording
        What :func:`read_mat` or :func:`read_csv` returned.
    out : str
        Local path or ``s3://`` URI of the parquet file to write (atomically).
    site_id, region : str
        Stored in every row.
    bearing : BearingSpec, optional
        The monitored bearing; needs a shaft speed.
    start_ns : int, optional
        Time of the first sample (ns since the epoch) for files without timestamps;
        default ``rec.start_ns``.
    """
    if not isinstance(site_id, str) or not site_id.strip():
        raise ParamsError("site id must be a non-empty string")
    layout = layout_for(rec, bearing=bearing)
    n = rec.rows
    if rec.timestamps_ns is not None:
        ts = np.asarray(rec.timestamps_ns, dtype=np.int64)
    else:
        t0 = rec.start_ns if start_ns is None else int(start_ns)
        ts = t0 + np.round(np.arange(n) * (1e9 / rec.fs)).astype(np.int64)
    fields = [pa.field("timestamp_ns", pa.int64()),
              pa.field("site_id", pa.dictionary(pa.int32(), pa.string())),
              pa.field("region", pa.dictionary(pa.int32(), pa.string()))]
    fields += [pa.field(c.name, pa.float64()) for c, _ in rec.channels]
    fields.append(pa.field("status_flags", pa.uint32()))
    schema = pa.schema(fields, metadata={LAYOUT_METADATA_KEY: layout.to_json().encode()})
    zeros = pa.array(np.zeros(n, dtype=np.int32))
    arrays = [pa.array(ts),
              pa.DictionaryArray.from_arrays(zeros, pa.array([site_id])),
              pa.DictionaryArray.from_arrays(zeros, pa.array([region]))]
    arrays += [pa.array(x) for _, x in rec.channels]
    arrays.append(pa.array(np.zeros(n, dtype=np.uint32)))
    write_table(out, pa.Table.from_arrays(arrays, schema=schema))
    return layout


def import_mat(uri: str, out: str, *, site_id: str, region: str = "unknown", fs: float | None = None,
               rpm: float | None = None, bearing: BearingSpec | None = None,
               start_ns: int | None = None) -> Layout:
    """Read a CWRU/MFPT ``.mat`` file and write it in the project layout."""
    return write_recording(read_mat(uri, fs=fs, rpm=rpm), out, site_id=site_id, region=region,
                           bearing=bearing, start_ns=start_ns)


def import_csv(uri: str, out: str, *, site_id: str, region: str = "unknown",
               rpm: float | None = None, bearing: BearingSpec | None = None, **options) -> Layout:
    """Read a CSV table (options as for :func:`read_csv`) and write it in the project layout."""
    rec = read_csv(uri, **options)
    rec.shaft_hz = _hz(rpm)
    return write_recording(rec, out, site_id=site_id, region=region, bearing=bearing)


# -- command line ---------------------------------------------------------------------


def bearing_from_options(name: str | None = None, geometry: str | None = None,
                         multipliers: str | None = None) -> BearingSpec | None:
    """A bearing from at most one of: a catalogue name, ``N,d,D[,angle]`` or
    ``BPFO,BPFI,BSF,FTF`` (multiples of shaft speed)."""
    given = [v for v in (name, geometry, multipliers) if v is not None]
    if len(given) > 1:
        raise ParamsError("give the bearing one way: --bearing, --bearing-geometry or "
                          "--bearing-multipliers")
    if name is not None:
        return lookup_bearing(name)
    if geometry is not None:
        parts = _numbers("--bearing-geometry", geometry, (3, 4))
        n = parts[0]
        if n != int(n):
            raise ParamsError(f"--bearing-geometry: element count must be an integer, got {n:g}")
        return BearingSpec.from_geometry(int(n), parts[1], parts[2], parts[3] if len(parts) == 4 else 0.0,
                                         name=f"geometry {geometry}")
    if multipliers is not None:
        bpfo, bpfi, bsf, ftf = _numbers("--bearing-multipliers", multipliers, (4,))
        return BearingSpec.from_multipliers(bpfo=bpfo, bpfi=bpfi, bsf=bsf, ftf=ftf,
                                            name=f"multipliers {multipliers}")
    return None


def _numbers(option: str, text: str, counts: tuple[int, ...]) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in counts or not all(math.isfinite(v) for v in values):
        raise ParamsError(f"{option} {text!r}: expected {' or '.join(map(str, counts))} "
                          "comma-separated numbers")
    return values


def _start_ns(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ParamsError(f"--start {text!r} is not an ISO 8601 time") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int(round(t.timestamp() * 1e9))


def _summary(layout: Layout, rows: int, out: str) -> str:
    names = ", ".join(layout.channel_names)
    fs = layout.sample_rate_hz
    text = f"wrote {rows} rows x {len(layout.channels)} channels ({names}) at {fs:.6g} Hz to {out}"
    if "shaft_hz" in layout.machine:
        text += f"; shaft {layout.machine['shaft_hz']:.4g} Hz"
    if "bearing" in layout.machine:
        text += f"; bearing {layout.machine['bearing']['name']}"
    return text


def cmd_import_mat(a) -> int:
    bearing = bearing_from_options(a.bearing, a.bearing_geometry, a.bearing_multipliers)
    rec = read_mat(a.file, fs=a.fs, rpm=a.rpm)
    out = a.out or f"{a.site_id}.parquet"
    layout = write_recording(rec, out, site_id=a.site_id, region=a.region, bearing=bearing,
                             start_ns=_start_ns(a.start))
    print(_summary(layout, rec.rows, out))
    return 0


def cmd_import_csv(a) -> int:
    bearing = bearing_from_options(a.bearing, a.bearing_geometry, a.bearing_multipliers)
    names = None if a.names is None else [n.strip() for n in a.names.split(",")]
    columns = None if a.columns is None else [c for c in a.columns.split(",")]
    rec = read_csv(a.file, timestamp_column=a.timestamp_column, timestamp_format=a.timestamp_format,
                   columns=columns, names=names, roles=a.role or (), units=a.unit or ())
    rec.shaft_hz = _hz(a.rpm)
    out = a.out or f"{a.site_id}.parquet"
    layout = write_recording(rec, out, site_id=a.site_id, region=a.region, bearing=bearing)
    print(_summary(layout, rec.rows, out))
    return 0


def _common(p) -> None:
    p.add_argument("file", help="input file (local path or s3:// URI)")
    p.add_argument("--site-id", required=True, help="site id stored in every row")
    p.add_argument("--region", default="unknown", help="region stored in every row (default: unknown)")
    p.add_argument("--out", help="parquet file to write (default: ./<site-id>.parquet)")
    p.add_argument("--rpm", type=float, help="shaft speed, rev/min")
    b = p.add_mutually_exclusive_group()
    b.add_argument("--bearing", help="bearing by catalogue name, e.g. 'SKF 6205-2RS JEM'")
    b.add_argument("--bearing-geometry", metavar="N,d,D[,ANGLE]",
                   help="bearing by element count, element and pitch diameter, contact angle (deg)")
    b.add_argument("--bearing-multipliers", metavar="BPFO,BPFI,BSF,FTF",
                   help="bearing by defect frequencies in multiples of the shaft speed")


def add_import_parser(subparsers) -> None:
    """Register ``import mat`` and ``import csv`` on a CLI's subparsers."""
    imp = subparsers.add_parser("import", help="bring a .mat or CSV recording into the file layout")
    kinds = imp.add_subparsers(dest="import_kind", required=True)

    m = kinds.add_parser("mat", help="CWRU or MFPT MATLAB bearing record")
    _common(m)
    m.add_argument("--fs", type=float, help="sample rate, Hz (required when the file does not state it)")
    m.add_argument("--start", help="time of the first sample, ISO 8601 (default: the MAT header's "
                                   "creation time)")
    m.set_defaults(func=cmd_import_mat)

    c = kinds.add_parser("csv", help="table with a timestamp column and numeric value columns")
    _common(c)
    c.add_argument("--timestamp-column", help="header of the timestamp column, '' for an unnamed "
                                              "one, #N for the N-th (default: the first column)")
    c.add_argument("--timestamp-format", help="strptime format, e.g. %%Y.%%m.%%d.%%H.%%M.%%S (UTC); "
                                              "default ISO 8601 or epoch seconds")
    c.add_argument("--columns", help="comma-separated headers of the value columns to import "
                                     "(default: all but the timestamp)")
    c.add_argument("--names", help="comma-separated channel names, one per value column")
    c.add_argument("--role", action="append",
                   help="ROLE for all channels or NAME=ROLE for one (repeatable); required")
    c.add_argument("--unit", action="append", help="UNIT for all channels or NAME=UNIT (repeatable)")
    c.set_defaults(func=cmd_import_csv)
