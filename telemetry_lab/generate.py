"""Synthetic telemetry sites with known, injected anomalies.

Every site is a deterministic function of ``(seed, site index)``: periodic spindle
vibration with harmonics, slowly drifting temperature and pressure baselines, Gaussian
noise on every channel, and, in about one file in ten, anomaly events (spikes, level
shifts, vibration bursts, overheating ramps) with the matching fault flags. Each file gets
a ground-truth sidecar ``<stem>.truth.json`` listing what was injected.

Signals are produced chunk by chunk, so a 3.6-million-row site needs little memory.
"""

from __future__ import annotations

import json
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import manifest as manifest_mod
from . import storage
from .layout import LAYOUT_METADATA_KEY, Layout, default_layout

ANOMALY_KINDS = ("spike", "level_shift", "vibration_burst", "overheat_ramp")
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
#: (in noise standard deviations) and duration range (seconds).
KIND_MODEL = {
    "spike": {"roles": tuple(ROLE_MODEL), "amplitude": (12, 40), "duration": (0.001, 0.004)},
    "level_shift": {"roles": ("oil_pressure", "coolant_flow", "motor_current"),
                    "amplitude": (10, 30), "duration": (5, 30)},
    "vibration_burst": {"roles": ("vibration",), "amplitude": (4, 10), "duration": (1, 6)},
    "overheat_ramp": {"roles": ("bearing_temperature",), "amplitude": (200, 420),
                      "duration": (30, 120)},
}


@dataclass(frozen=True)
class Anomaly:
    """One injected anomaly.

    ``amplitude`` is in standard deviations of the channel's noise: the spike height, the
    shift size, the burst's extra noise or the ramp's final rise. Level shifts go down on
    pressure and flow (a leak, a blockage) and up elsewhere.
    """

    kind: str
    channel: str
    start_s: float
    duration_s: float
    amplitude: float

    def __post_init__(self):
        if self.kind not in ANOMALY_KINDS:
            raise ValueError(f"unknown anomaly kind {self.kind!r}; choose from {ANOMALY_KINDS}")
        if self.duration_s <= 0 or self.amplitude <= 0 or self.start_s < 0:
            raise ValueError(f"anomaly needs start_s >= 0, duration_s > 0, amplitude > 0: {self!r}")


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
    harmonics: np.ndarray  # (9, 3) amplitudes, mm/s
    phases: np.ndarray  # (9, 3)
    drift_periods: np.ndarray  # (24, 2) seconds
    drift_phases: np.ndarray  # (24, 2)
    offsets: np.ndarray  # (24,)
    noise: np.random.Generator = field(repr=False, default=None)


def _model(spec: SiteSpec, layout: Layout) -> _SiteModel:
    rng = np.random.default_rng([spec.seed, spec.index])
    spindle_hz = list(rng.uniform(18.0, 55.0, size=3))
    base = rng.uniform(0.8, 1.4, size=(9, 1))
    harmonics = base * np.array([1.0, 0.35, 0.15]) * rng.uniform(0.8, 1.2, size=(9, 3))
    phases = rng.uniform(0, 2 * np.pi, size=(9, 3))
    n = len(layout.channels)
    return _SiteModel(
        spindle_hz=spindle_hz,
        harmonics=harmonics,
        phases=phases,
        drift_periods=rng.uniform(900.0, 7200.0, size=(n, 2)),
        drift_phases=rng.uniform(0, 2 * np.pi, size=(n, 2)),
        offsets=rng.normal(0.0, 0.5, size=n),
        noise=np.random.default_rng([spec.seed, spec.index, 1]),
    )


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
        fault = FAULT_FOR.get((a.kind, role))
        if fault in bit_of:
            on = np.ones(hi - lo, dtype=bool)
            if a.kind == "overheat_ramp":
                on = (np.arange(lo, hi) - s0) >= (s1 - s0) // 2  # alarm once half-way up
            flags[sl] |= np.where(on, np.uint32(1 << bit_of[fault]), np.uint32(0))
    return out, flags


def _schema(layout: Layout) -> pa.Schema:
    fields = [pa.field("timestamp_ns", pa.int64()),
              pa.field("site_id", pa.dictionary(pa.int32(), pa.string())),
              pa.field("region", pa.dictionary(pa.int32(), pa.string()))]
    fields += [pa.field(c.name, pa.float64()) for c in layout.channels]
    fields.append(pa.field("status_flags", pa.uint32()))
    return pa.schema(fields, metadata={LAYOUT_METADATA_KEY: layout.to_json().encode()})


def truth_document(spec: SiteSpec) -> dict:
    """The ground truth of a site: what was injected where (ns timestamps, inclusive end)."""
    items = []
    step = 1e9 / spec.fs
    for a in spec.anomalies:
        s0 = int(round(a.start_s * spec.fs))
        s1 = min(spec.rows, s0 + max(1, int(round(a.duration_s * spec.fs))))
        items.append({
            "channel": a.channel,
            "kind": a.kind,
            "start_ns": spec.start_ns + int(round(s0 * step)),
            "end_ns": spec.start_ns + int(round((s1 - 1) * step)),
            "amplitude_sigma": a.amplitude,
        })
    return {"site_id": spec.site_id, "region": spec.region, "rows": spec.rows,
            "sample_rate_hz": spec.fs, "start_ns": spec.start_ns, "anomalies": items}


def write_site(spec: SiteSpec, out_prefix: str, layout: Layout | None = None) -> str:
    """Generate one site into ``<out_prefix>/<stem>.parquet`` plus its truth sidecar.

    Returns the parquet URI. The file appears atomically, complete or not at all.
    """
    layout = layout or default_layout(spec.fs)
    model = _model(spec, layout)
    schema = _schema(layout)
    uri = storage.join(out_prefix, f"{spec.stem}.parquet")
    site_dict = pa.array([spec.site_id])
    region_dict = pa.array([spec.region])
    fd, tmp = tempfile.mkstemp(suffix=".parquet.tmp",
                               dir=storage.resolve(out_prefix)[1] if not storage.is_s3(out_prefix) else None)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
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
    """One to three anomalies of random kinds, channels, times and sizes."""
    out = []
    duration_s = rows / fs
    for _ in range(int(rng.integers(1, 4))):
        kind = ANOMALY_KINDS[int(rng.integers(len(ANOMALY_KINDS)))]
        km = KIND_MODEL[kind]
        candidates = [c.name for c in layout.channels if c.role in km["roles"]]
        channel = candidates[int(rng.integers(len(candidates)))]
        dur = float(rng.uniform(*km["duration"]))
        dur = min(dur, 0.3 * duration_s)
        start = float(rng.uniform(0.05 * duration_s, max(0.05 * duration_s, 0.95 * duration_s - dur)))
        out.append(Anomaly(kind, channel, round(start, 3), round(dur, 3),
                           round(float(rng.uniform(*km["amplitude"])), 2)))
    return tuple(out)


def fleet_specs(sites: int, rows: int, *, seed: int = 0, anomaly_rate: float = 0.1,
                fs: float = 1000.0, start_ns: int = DEFAULT_START_NS) -> list[SiteSpec]:
    """Specs for a fleet: about ``anomaly_rate`` of the sites (at least one, when the rate
    is positive) get anomalies; which ones is fixed by the seed."""
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
        os.makedirs(storage.resolve(out_prefix)[1], exist_ok=True)
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

