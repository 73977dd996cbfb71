"""Synthetic telemetry sites with known, injected anomalies.

Every site is a deterministic function of ``(seed, site index)``: periodic spindle
vibration with harmonics, slowly drifting temperature and pressure baselines, Gaussian
noise on every channel, and, in about one file in ten, anomaly events (spikes, level
shifts, vibration bursts, overheating ramps) with the matching fault flags. Each file gets
a ground-truth sidecar ``<stem>.truth.json`` listing what was injected.

Every spindle carries a catalogue bearing (:data:`FLEET_BEARING`), and each file's layout
metadata names it and the spindle's shaft speed (``machine["groups"]["spindle_N"]``), so
the analysis runs its bearing diagnostics on generated files as on imported recordings.
A ``bearing_defect`` anomaly adds the vibration of a local defect of that bearing (impacts
at the defect frequency ringing a housing resonance, :func:`~telemetry_lab.bearing.
bearing_defect_signal`); it needs a sample rate of at least ``KIND_MODEL["bearing_defect"]
["min_fs"]`` (use :data:`BEARING_FS`), and it is judged by the bearing verdict, not by
events.

Signals are produced chunk by chunk, so a 3.6-million-row site needs little memory.
"""

from __future__ import annotations

import json
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import manifest as manifest_mod
from . import storage
from .bearing import bearing_defect_signal, defect_impacts, lookup_bearing
from .errors import ParamsError, StorageError
from .layout import LAYOUT_METADATA_KEY, Layout, default_layout
from .io import dictionary_columns, with_required

#: Kinds judged by the detector's events (a truth is found by an overlapping event).
ANOMALY_KINDS = ("spike", "level_shift", "vibration_burst", "overheat_ramp")
#: Kinds judged by the bearing diagnosis (the channel's envelope verdict), not by events.
BEARING_KINDS = ("bearing_defect",)
#: Every kind an :class:`Anomaly` may have.
KINDS = ANOMALY_KINDS + BEARING_KINDS
#: Local bearing defects the generator can inject (a cage fault is not a spall that
#: strikes, so it is left out).
BEARING_DEFECTS = ("outer_race", "inner_race", "ball")
#: The bearing fitted to every generated spindle (the CWRU drive-end bearing, so that
#: synthetic and real recordings share defect frequencies).
FLEET_BEARING = "SKF 6205-2RS JEM"
#: Range of the spindle speeds drawn per site, Hz.
SPINDLE_HZ = (18.0, 55.0)
#: Range of the housing resonance drawn per spindle, Hz, that a defect's impacts ring:
#: a few kHz, like the ~3 kHz band where the CWRU drive-end records ring.
RESONANCE_HZ = (2500.0, 4500.0)
#: A resonance must lie below this fraction of the sample rate: its ringing band (about
#: +-10 % wide at the default damping of 0.05) then stays below fs/2.
_RESONANCE_MAX_FS = 0.45
#: Sample rate to generate sites with bearing defects at, Hz (the CWRU records' rate).
BEARING_FS = 12000.0
REGIONS = ("eu-west", "eu-north", "us-east", "us-west", "ap-south", "sa-east")
DEFAULT_START_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
_CHUNK = 1 << 16  # rows generated at a time; fixed so that output does not depend on it

#: Noise standard deviation and baseline of each role, in the channel's unit.
ROLE_MODEL = {
    "vibration": {"sigma": 0.3, "base": 0.0},
    "bearing_temperature": {"sigma": 0.1, "base": 60.0, "drift": 1.5},
    "oil_pressure": {"sigma": 0.02, "base": 4.0, "drift": 0.15},
    "coolant_flow": {"sigma": 0.1, "base": 12.0, "drift": 0.4},
    "motor_current": {"sigma": 0.3, "base": 30.0, "drift": 1.0},
    "ambient_temperature": {"sigma": 0.05, "base": 22.0, "drift": 1.0},
    "humidity": {"sigma": 0.3, "base": 45.0, "drift": 3.0},
    "acoustic": {"sigma": 0.5, "base": 72.0, "drift": 1.0},
}

#: Which fault bit an anomaly on a channel role raises while it lasts.
FAULT_FOR = {
    ("overheat_ramp", "bearing_temperature"): "bearing_overtemp",
    ("level_shift", "oil_pressure"): "low_oil_pressure",
    ("level_shift", "coolant_flow"): "coolant_flow_low",
    ("level_shift", "motor_current"): "motor_overcurrent",
    ("vibration_burst", "vibration"): "vibration_high",
}

#: Roles each kind is injected on by the random fleet generator, and its amplitude range
#: (in noise standard deviations) and duration range (seconds). ``bearing_defect``: the
#: peak of one impact's ringing, in noise standard deviations of the vibration channel;
#: its duration is None, meaning the whole file (a spall does not come and go), and it
#: is only drawn for sites sampled at ``min_fs`` or faster: the resonance must lie below
#: the Nyquist frequency with room for its ringing band.
KIND_MODEL = {
    "spike": {"roles": tuple(ROLE_MODEL), "amplitude": (12, 40), "duration": (0.001, 0.004)},
    "level_shift": {"roles": ("oil_pressure", "coolant_flow", "motor_current"),
                    "amplitude": (10, 30), "duration": (5, 30)},
    "vibration_burst": {"roles": ("vibration",), "amplitude": (4, 10), "duration": (1, 6)},
    "overheat_ramp": {"roles": ("bearing_temperature",), "amplitude": (200, 420),
                      "duration": (30, 120)},
    "bearing_defect": {"roles": ("vibration",), "amplitude": (3, 8), "duration": None,
                       "min_fs": RESONANCE_HZ[1] / _RESONANCE_MAX_FS, "defects": BEARING_DEFECTS},
}


@dataclass(frozen=True)
class Anomaly:
    """One injected anomaly.

    ``amplitude`` is in standard deviations of the channel's noise: the spike height, the
    shift size, the burst's extra noise, the ramp's final rise or the peak of one bearing
    defect impact. Level shifts go down on pressure and flow (a leak, a blockage) and up
    elsewhere. ``defect`` (``outer_race``, ``inner_race`` or ``ball``) is required for a
    ``bearing_defect`` on a vibration channel and not allowed for other kinds.
    """

    kind: str
    channel: str
    start_s: float
    duration_s: float
    amplitude: float
    defect: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ParamsError(f"unknown anomaly kind {self.kind!r}; choose from {KINDS}")
        if self.duration_s <= 0 or self.amplitude <= 0 or self.start_s < 0:
            raise ParamsError(f"anomaly needs start_s >= 0, duration_s > 0, amplitude > 0: {self!r}")
        if self.kind in BEARING_KINDS and self.defect not in BEARING_DEFECTS:
            raise ParamsError(f"a {self.kind} on {self.channel} needs defect in {BEARING_DEFECTS}, "
                              f"got {self.defect!r}")
        if self.kind not in BEARING_KINDS and self.defect is not None:
            raise ParamsError(f"defect={self.defect!r} is only for {BEARING_KINDS}, not {self.kind!r}")


@dataclass(frozen=True)
class SiteSpec:
    """Everything that determines one synthetic file."""

    site_id: str
    region: str
    rows: int
    seed: int
    index: int
    fs: float = 1000.0
    start_ns: int = DEFAULT_START_NS
    anomalies: tuple[Anomaly, ...] = ()
    row_group_rows: int = 65536

    @property
    def stem(self) -> str:
        return self.site_id


@dataclass
class _SiteModel:
    """Random per-site parameters, drawn once from the site's generator."""

    spindle_hz: list[float]
    resonance_hz: list[float]  # per spindle, rung by bearing-defect impacts
    harmonics: np.ndarray  # (9, 3) amplitudes, mm/s
    phases: np.ndarray  # (9, 3)
    drift_periods: np.ndarray  # (24, 2) seconds
    drift_phases: np.ndarray  # (24, 2)
    offsets: np.ndarray  # (24,)
    noise: np.random.Generator = field(repr=False, default=None)


def _model(spec: SiteSpec, layout: Layout) -> _SiteModel:
    rng = np.random.default_rng([spec.seed, spec.index])
    spindle_hz = list(rng.uniform(*SPINDLE_HZ, size=3))
    base = rng.uniform(0.8, 1.4, size=(9, 1))
    harmonics = base * np.array([1.0, 0.35, 0.15]) * rng.uniform(0.8, 1.2, size=(9, 3))
    phases = rng.uniform(0, 2 * np.pi, size=(9, 3))
    n = len(layout.channels)
    # Keyword arguments are evaluated in order: new draws go last, so that the earlier
    # ones (and every file generated before they existed) stay the same.
    return _SiteModel(
        spindle_hz=spindle_hz,
        harmonics=harmonics,
        phases=phases,
        drift_periods=rng.uniform(900.0, 7200.0, size=(n, 2)),
        drift_phases=rng.uniform(0, 2 * np.pi, size=(n, 2)),
        offsets=rng.normal(0.0, 0.5, size=n),
        resonance_hz=list(rng.uniform(*RESONANCE_HZ, size=3)),
        noise=np.random.default_rng([spec.seed, spec.index, 1]),
    )


def _spindle_of(layout: Layout) -> dict[str, int]:
    """Vibration channel name -> spindle number (0..2): three axes per spindle, in order."""
    return {c.name: min(k // 3, 2) for k, c in enumerate(layout.by_role("vibration"))}


def _with_machine(layout: Layout, model: _SiteModel) -> Layout:
    """The layout with the site's machine facts: shaft speed and bearing of each spindle
    group, as the analysis looks them up. They replace any the layout carried, since the
    signals are made from the model."""
    bearing = lookup_bearing(FLEET_BEARING).to_dict()
    groups = {}
    for name, k in _spindle_of(layout).items():
        group = layout.channel(name).group
        if group:
            groups[group] = {"shaft_hz": float(model.spindle_hz[k]), "bearing": bearing}
    return replace(layout, machine={"groups": groups}) if groups else layout


def _sigma(role: str) -> float:
    return ROLE_MODEL.get(role, {"sigma": 1.0})["sigma"]


def _chunk_signals(spec: SiteSpec, layout: Layout, model: _SiteModel, start: int, n: int):
    """Signals (channels x n) and flags for rows ``[start, start + n)``."""
    t = (start + np.arange(n)) / spec.fs
    out = np.empty((len(layout.channels), n))
    noise = model.noise.standard_normal((len(layout.channels), n))
    vib = 0
    for i, ch in enumerate(layout.channels):
        role_model = ROLE_MODEL.get(ch.role, {"sigma": 1.0, "base": 0.0})
        if ch.role == "vibration":
            f0 = model.spindle_hz[min(vib // 3, 2)]
            sig = np.zeros(n)
            for k in range(3):
                sig += model.harmonics[vib, k] * np.sin(2 * np.pi * (k + 1) * f0 * t + model.phases[vib, k])
            vib += 1
        else:
            drift = role_model.get("drift", 0.0)
            sig = np.full(n, role_model["base"] + model.offsets[i] * drift)
            for j in range(2):
                sig += 0.5 * drift * np.sin(2 * np.pi * t / model.drift_periods[i, j] + model.drift_phases[i, j])
        out[i] = sig + role_model["sigma"] * noise[i]
    flags = np.zeros(n, dtype=np.uint32)
    bit_of = {name: bit for bit, name in layout.fault_bits.items()}
    names = layout.channel_names
    for a in spec.anomalies:
        i = names.index(a.channel)
        role = layout.channels[i].role
        s0 = int(round(a.start_s * spec.fs))
        s1 = min(spec.rows, s0 + max(1, int(round(a.duration_s * spec.fs))))
        lo, hi = max(s0, start), min(s1, start + n)
        if lo >= hi:
            continue
        sl = slice(lo - start, hi - start)
        sigma = _sigma(role)
        down = -1.0 if role in ("oil_pressure", "coolant_flow") else 1.0
        if a.kind == "spike":
            out[i, sl] += a.amplitude * sigma
        elif a.kind == "level_shift":
            out[i, sl] += down * a.amplitude * sigma
        elif a.kind == "vibration_burst":
            # Extra broadband energy: a deterministic function of the row number, so that
            # the burst does not depend on where chunks fall.
            rows = np.arange(lo, hi)
            burst = np.sin(rows * 2.399963) * np.sin(rows * 0.7853 + 1.3) * np.sin(rows * 3.0001)
            out[i, sl] += a.amplitude * sigma * burst / 0.35
        elif a.kind == "overheat_ramp":
            frac = (np.arange(lo, hi) - s0 + 1) / (s1 - s0)
            out[i, sl] += a.amplitude * sigma * frac
        elif a.kind == "bearing_defect":
            out[i, sl] += _bearing_defect(spec, layout, model, a, lo, hi - lo)
        fault = FAULT_FOR.get((a.kind, role))
        if fault in bit_of:
            on = np.ones(hi - lo, dtype=bool)
            if a.kind == "overheat_ramp":
                on = (np.arange(lo, hi) - s0) >= (s1 - s0) // 2  # alarm once half-way up
            flags[sl] |= np.where(on, np.uint32(1 << bit_of[fault]), np.uint32(0))
    return out, flags


def _bearing_defect(spec: SiteSpec, layout: Layout, model: _SiteModel, a: Anomaly,
                    start: int, n: int) -> np.ndarray:
    """Rows ``[start, start + n)`` of a local bearing defect's vibration on ``a.channel``:
    impacts at the defect frequency of :data:`FLEET_BEARING` at the channel's spindle
    speed (what :func:`_with_machine` writes into the layout), ringing the spindle's
    resonance; a function of the row number only, so chunking does not matter."""
    spindle = _spindle_of(layout).get(a.channel)
    if spindle is None:
        raise ParamsError(f"site {spec.site_id}: a bearing defect needs a vibration channel, "
                          f"not {a.channel}")
    resonance = model.resonance_hz[spindle]
    if not resonance < _RESONANCE_MAX_FS * spec.fs:
        raise ParamsError(f"site {spec.site_id}: a bearing defect on {a.channel} rings at "
                          f"{resonance:.0f} Hz, too close to fs/2 at {spec.fs:g} Hz; generate "
                          f"it at {KIND_MODEL['bearing_defect']['min_fs']:.0f} Hz or more "
                          f"(BEARING_FS = {BEARING_FS:g})")
    impacts = defect_impacts(a.defect, lookup_bearing(FLEET_BEARING), model.spindle_hz[spindle])
    # The jitter seed follows the site and channel, so two defects never share impact times.
    seed = (spec.seed * 1_000_003 + spec.index * 97 + layout.channel_names.index(a.channel)) % 2**31
    return bearing_defect_signal(start, n, spec.fs, resonance_hz=resonance,
                                 amplitude=a.amplitude * _sigma("vibration"), seed=seed, **impacts)


def _schema(layout: Layout) -> pa.Schema:
    fields = [pa.field("timestamp_ns", pa.int64()),
              pa.field("site_id", pa.dictionary(pa.int32(), pa.string())),
              pa.field("region", pa.dictionary(pa.int32(), pa.string()))]
    fields += [pa.field(c.name, pa.float64()) for c in layout.channels]
    fields.append(pa.field("status_flags", pa.uint32()))
    schema = pa.schema(fields, metadata={LAYOUT_METADATA_KEY: layout.to_json().encode()})
    # The generator writes no nulls.
    return with_required(schema, ["timestamp_ns", *layout.channel_names, "status_flags"])


def truth_document(spec: SiteSpec) -> dict:
    """The ground truth of a site: what was injected where (ns timestamps, inclusive end)."""
    items = []
    # The file's own timestamp step (whole ns), so that the truth's times are rows' times.
    step = int(round(1e9 / spec.fs))
    for a in spec.anomalies:
        s0 = int(round(a.start_s * spec.fs))
        s1 = min(spec.rows, s0 + max(1, int(round(a.duration_s * spec.fs))))
        items.append({
            "channel": a.channel,
            "kind": a.kind,
            "start_ns": spec.start_ns + s0 * step,
            "end_ns": spec.start_ns + (s1 - 1) * step,
            "amplitude_sigma": a.amplitude,
            **({"defect": a.defect} if a.defect is not None else {}),
        })
    return {"site_id": spec.site_id, "region": spec.region, "rows": spec.rows,
            "sample_rate_hz": spec.fs, "start_ns": spec.start_ns, "anomalies": items}


def write_site(spec: SiteSpec, out_prefix: str, layout: Layout | None = None) -> str:
    """Generate one site into ``<out_prefix>/<stem>.parquet`` plus its truth sidecar.

    Returns the parquet URI. The file appears atomically, complete or not at all.
    """
    layout = layout or default_layout(spec.fs)
    model = _model(spec, layout)
    layout = _with_machine(layout, model)
    schema = _schema(layout)
    uri = storage.join(out_prefix, f"{spec.stem}.parquet")
    site_dict = pa.array([spec.site_id])
    region_dict = pa.array([spec.region])
    fd, tmp = tempfile.mkstemp(suffix=".parquet.tmp",
                               dir=storage.resolve(out_prefix)[1] if not storage.is_s3(out_prefix) else None)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        with pq.ParquetWriter(tmp, schema, use_dictionary=dictionary_columns(schema)) as writer:
            for start in range(0, spec.rows, _CHUNK):
                n = min(_CHUNK, spec.rows - start)
                sig, flags = _chunk_signals(spec, layout, model, start, n)
                ts = spec.start_ns + (start + np.arange(n, dtype=np.int64)) * int(round(1e9 / spec.fs))
                zeros = pa.array(np.zeros(n, dtype=np.int32))
                arrays = [pa.array(ts),
                          pa.DictionaryArray.from_arrays(zeros, site_dict),
                          pa.DictionaryArray.from_arrays(zeros, region_dict)]
                arrays += [pa.array(sig[i]) for i in range(len(layout.channels))]
                arrays.append(pa.array(flags))
                writer.write_table(pa.Table.from_arrays(arrays, schema=schema),
                                   row_group_size=spec.row_group_rows)
        storage.put_file(tmp, uri)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    truth_uri = storage.join(out_prefix, f"{spec.stem}.truth.json")
    storage.write_bytes(truth_uri, json.dumps(truth_document(spec), indent=2).encode())
    return uri


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def random_anomalies(rng: np.random.Generator, layout: Layout, rows: int, fs: float) -> tuple[Anomaly, ...]:
    """One to three anomalies of random kinds, channels, times and sizes.

    A bearing defect is drawn only at ``fs >= KIND_MODEL["bearing_defect"]["min_fs"]``
    (below, the kinds and draws are exactly those of the event kinds alone), covers the
    whole file, and at most one is drawn per site.
    """
    out = []
    duration_s = rows / fs
    kinds = [k for k in KINDS if fs >= KIND_MODEL[k].get("min_fs", 0.0)]
    for _ in range(int(rng.integers(1, 4))):
        kind = kinds[int(rng.integers(len(kinds)))]
        km = KIND_MODEL[kind]
        candidates = [c.name for c in layout.channels if c.role in km["roles"]]
        channel = candidates[int(rng.integers(len(candidates)))]
        if kind == "bearing_defect":
            amplitude = round(float(rng.uniform(*km["amplitude"])), 2)
            defect = km["defects"][int(rng.integers(len(km["defects"])))]
            if not any(a.kind == kind for a in out):
                out.append(Anomaly(kind, channel, 0.0, duration_s, amplitude, defect))
            continue
        dur = float(rng.uniform(*km["duration"]))
        dur = min(dur, 0.3 * duration_s)
        start = float(rng.uniform(0.05 * duration_s, max(0.05 * duration_s, 0.95 * duration_s - dur)))
        out.append(Anomaly(kind, channel, round(start, 3), round(dur, 3),
                           round(float(rng.uniform(*km["amplitude"])), 2)))
    return tuple(out)


def fleet_specs(sites: int, rows: int, *, seed: int = 0, anomaly_rate: float = 0.1,
                fs: float = 1000.0, start_ns: int = DEFAULT_START_NS) -> list[SiteSpec]:
    """Specs for a fleet: about ``anomaly_rate`` of the sites (at least one, when the rate
    is positive) get anomalies; which ones is fixed by the seed. Bearing defects are among
    the kinds drawn only when ``fs`` is high enough (e.g. :data:`BEARING_FS`; 500,000 rows
    at 12 kHz are 42 s)."""
    rng = np.random.default_rng([seed, 2**31])
    n_bad = 0 if anomaly_rate <= 0 else max(1, int(round(sites * anomaly_rate)))
    bad = set(rng.permutation(sites)[:n_bad].tolist())
    layout = default_layout(fs)
    specs = []
    for i in range(sites):
        site_rng = np.random.default_rng([seed, i, 2])
        anomalies = random_anomalies(site_rng, layout, rows, fs) if i in bad else ()
        specs.append(SiteSpec(site_id=f"site-{i:04d}", region=REGIONS[i % len(REGIONS)],
                              rows=rows, seed=seed, index=i, fs=fs, start_ns=start_ns,
                              anomalies=anomalies))
    return specs


def _write_site_job(args):
    spec, out = args
    return write_site(spec, out)


def generate(specs: list[SiteSpec], out_prefix: str, *, workers: int | None = None,
             progress: bool = False) -> dict:
    """Write every site (in parallel processes) and the manifest ``<out>/manifest.json``.

    Returns the manifest.
    """
    workers = workers or os.cpu_count() or 1
    if not storage.is_s3(out_prefix):
        try:
            os.makedirs(storage.resolve(out_prefix)[1], exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the output folder: {exc.strerror}",
                               file=out_prefix) from None
    jobs = [(s, out_prefix) for s in specs]
    if workers == 1 or len(specs) == 1:
        uris = [_write_site_job(j) for j in _progress(jobs, progress)]
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(specs))) as pool:
            uris = list(_progress(pool.map(_write_site_job, jobs), progress, total=len(jobs)))
    manifest = manifest_mod.from_uris(out_prefix, uris)
    manifest_mod.save(manifest, storage.join(out_prefix, "manifest.json"))
    return manifest


def _progress(it, enabled: bool, total: int | None = None):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc="generate", unit="site")

