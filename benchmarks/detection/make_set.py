"""The detection benchmark set: every anomaly kind on an amplitude ladder, plus clean sites.

Deterministic: the same arguments give byte-identical files. Three kinds of site:

* ``clean-NN``: no anomaly at all; every event on them is a false event.
* ``spike-NN``: spikes on all 24 channels, the ladder's amplitudes in a per-channel
  rotated order, 1, 2 or 4 samples long, at least ``GAP_S["spike"]`` apart.
* ``mixed-NN``: one kind per channel role, never two kinds on one channel, so a false
  event is attributable to the kind injected on its channel: vibration bursts on the 9
  vibration channels, level shifts on the 9 oil-pressure / coolant-flow / motor-current
  channels, overheating ramps on the 3 bearing temperatures; the 3 environment channels
  stay clean.

On each channel the anomalies are laid out one after another with a gap of quiet signal
between them (``GAP_S``) and none in the first and last ``MARGIN_S`` seconds, so no
detector window sees two anomalies or a file edge. Each channel starts the ladder at a
different rung, so across channels and files every amplitude is about equally frequent
and none is always first or last. Positions get a seeded jitter.

Amplitudes are in standard deviations of the channel's Gaussian noise
(``generate.ROLE_MODEL``). Why these ladders (see README.md):

* spike 4..20: over 12 million noise samples (a 500,000-row file, 24 channels) the
  largest |noise| is about 5.5 sigma, so 4 is below any detector's reach at 1 false event
  per file, 6 marginal, 8 and up should be found. On vibration channels the spindle
  harmonics add about 2.9 sigma of RMS, which moves the limit up.
* level_shift 0.5..12: a sustained shift is seen by averaging many samples, so a good
  detector finds far smaller shifts than spikes (the generator's fleet uses 10-30).
* vibration_burst 1..10: extra broadband RMS; the baseline already has about 2.9 sigma of
  periodic RMS, so 1-2 barely changes the total power (the fleet uses 4-10).
* overheat_ramp 10..400: the rise at the end of a 30-90 s ramp; 10 sigma (1 degC) over
  90 s is about the steepest slope of the temperature drift itself (the fleet uses
  200-420).

The bearing part lives in its own folder, ``<out>/bearing`` with its own manifest, so
that the event part's files, scores and published tables stay as they were. It is
sampled at ``generate.BEARING_FS`` (12 kHz) and judged by the bearing verdicts:

* ``bearing-NN``: a bearing defect on one vibration channel of each of the 3 spindles
  (the other 6 vibration channels are clean); over 6 sites every defect (outer race,
  inner race, ball) appears twice at every amplitude of ``BEARING_LADDER``, on varying
  spindles and axes.
* ``bearing-clean-NN``: no anomaly; every defect called on them is a false call.

    python benchmarks/detection/make_set.py [--out build/detection-set] [--rows 500000]
        [--part events|bearing|both] [--bearing-rows 240000] [--small] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from telemetry_lab import storage
from telemetry_lab.generate import (ANOMALY_KINDS, BEARING_DEFECTS, BEARING_FS, KIND_MODEL,
                                    REGIONS, Anomaly, SiteSpec, generate)
from telemetry_lab.layout import default_layout

#: Amplitude ladders, noise standard deviations (see the module docstring).
LADDERS: dict[str, tuple[float, ...]] = {
    "spike": (4, 6, 8, 12, 20),
    "level_shift": (0.5, 1, 2, 3, 5, 8, 12),
    "vibration_burst": (1, 2, 3, 4, 6, 10),
    "overheat_ramp": (10, 20, 50, 100, 200, 400),
}

#: Durations cycled through per kind, seconds (inside the generator's fleet ranges).
DURATIONS_S: dict[str, tuple[float, ...]] = {
    "spike": (0.001, 0.002, 0.004),
    "level_shift": (5.0, 10.0, 20.0),
    "vibration_burst": (1.0, 3.0, 6.0),
    "overheat_ramp": (30.0, 60.0, 90.0),
}

#: Quiet signal between two anomalies on one channel, seconds (plus a jitter of up to half
#: as much): longer than any sensible detector window plus the scorer's tolerance, and for
#: ramps long enough that a slow baseline settles between them.
GAP_S: dict[str, float] = {"spike": 15.0, "level_shift": 20.0, "vibration_burst": 20.0,
                           "overheat_ramp": 40.0}
#: No anomaly this close to either end of a file, seconds.
MARGIN_S = 10.0

#: Which kind each role carries in a ``mixed`` site.
MIXED_KIND_OF_ROLE = {
    "vibration": "vibration_burst",
    "oil_pressure": "level_shift",
    "coolant_flow": "level_shift",
    "motor_current": "level_shift",
    "bearing_temperature": "overheat_ramp",
}


#: Bearing-defect amplitudes: the bottom, middle and top of the fleet's range
#: ``KIND_MODEL["bearing_defect"]["amplitude"]`` (3-8 noise sigmas of impact peak).
BEARING_LADDER: tuple[float, ...] = (3.0, 5.0, 8.0)
#: Subfolder of the set holding the bearing part.
BEARING_DIR = "bearing"
#: Added to the site index of bearing sites, so that with the set's seed they draw other
#: spindle speeds and resonances than the event part's sites.
BEARING_INDEX_OFFSET = 1000


@dataclass(frozen=True)
class SetConfig:
    """What determines the set; stored as ``set.json`` beside the manifest."""

    rows: int = 500_000
    clean_sites: int = 16
    spike_sites: int = 2
    mixed_sites: int = 12
    seed: int = 2026
    fs: float = 1000.0

    @classmethod
    def small(cls) -> "SetConfig":
        """A few short files: for a smoke run, not for quoting numbers."""
        return cls(rows=120_000, clean_sites=2, spike_sites=1, mixed_sites=1)


@dataclass(frozen=True)
class BearingSetConfig:
    """What determines the bearing part; stored as ``<out>/bearing/set.json``.

    240,000 rows at 12 kHz are 20 s of signal: about 3 s of analysis per file with the
    envelope, against 7 s for 500,000.
    """

    rows: int = 240_000
    defect_sites: int = 6
    clean_sites: int = 3
    seed: int = 2026
    fs: float = BEARING_FS

    @classmethod
    def small(cls) -> "BearingSetConfig":
        """One site per spindle rotation and one clean site, 5 s each: a smoke run."""
        return cls(rows=60_000, defect_sites=3, clean_sites=1)


def _channel_plan(kind: str, ladder, durations, rung: int, duration_rung: int,
                  duration_s: float, rng: np.random.Generator, channel: str) -> list[Anomaly]:
    """Anomalies of one kind on one channel: the ladder from ``rung`` on, as many as fit."""
    gap = GAP_S[kind]
    out = []
    t = MARGIN_S
    i = 0
    while True:
        amp = ladder[(rung + i) % len(ladder)]
        dur = durations[(duration_rung + i) % len(durations)]
        start = t + float(rng.uniform(0.0, gap / 2))
        if start + dur + MARGIN_S > duration_s:
            break
        out.append(Anomaly(kind, channel, round(start, 3), dur, float(amp)))
        t = start + dur + gap
        i += 1
    return out


def build_specs(cfg: SetConfig, *, ladders: dict[str, tuple[float, ...]] | None = None,
                durations: dict[str, tuple[float, ...]] | None = None) -> list[SiteSpec]:
    """The site specs of the set, clean sites first.

    ``ladders`` and ``durations`` override :data:`LADDERS` and :data:`DURATIONS_S` per
    kind (the quality test uses the amplitudes at and above a floor, and short ramps to
    fit more of them into short files).
    """
    ladders = {**LADDERS, **(ladders or {})}
    durations = {**DURATIONS_S, **(durations or {})}
    for kind in ladders:
        if kind not in ANOMALY_KINDS or not ladders[kind]:
            raise ValueError(f"ladder for {kind!r}: kind must be one of {ANOMALY_KINDS} "
                             f"with at least one amplitude")
    layout = default_layout(cfg.fs)
    duration_s = cfg.rows / cfg.fs
    specs: list[SiteSpec] = []

    def add(name: str, anomalies: tuple[Anomaly, ...]) -> None:
        i = len(specs)
        specs.append(SiteSpec(site_id=name, region=REGIONS[i % len(REGIONS)],
                              rows=cfg.rows, seed=cfg.seed, index=i, fs=cfg.fs,
                              anomalies=anomalies))

    for n in range(cfg.clean_sites):
        add(f"clean-{n:02d}", ())
    for n in range(cfg.spike_sites):
        anomalies = []
        for c, ch in enumerate(layout.channels):
            if ch.role not in KIND_MODEL["spike"]["roles"]:
                continue
            rng = np.random.default_rng([cfg.seed, 1, n, c])
            anomalies += _channel_plan("spike", ladders["spike"], durations["spike"], n + c,
                                       n + 2 * c, duration_s, rng, ch.name)
        add(f"spike-{n:02d}", tuple(anomalies))
    for n in range(cfg.mixed_sites):
        anomalies = []
        for c, ch in enumerate(layout.channels):
            kind = MIXED_KIND_OF_ROLE.get(ch.role)
            if kind is None:
                continue
            rng = np.random.default_rng([cfg.seed, 2, n, c])
            # Rotate the start rung by file and channel so that a ladder longer than what
            # fits on one channel is still covered evenly across channels and files.
            anomalies += _channel_plan(kind, ladders[kind], durations[kind], 3 * n + c, n + c,
                                       duration_s, rng, ch.name)
        add(f"mixed-{n:02d}", tuple(anomalies))
    return specs


def build_bearing_specs(cfg: BearingSetConfig) -> list[SiteSpec]:
    """The site specs of the bearing part, defect sites first.

    Site ``n`` carries one defect per spindle ``k``: defect ``(n + k) mod 3``, amplitude
    rung ``k + n // 3`` (mod the ladder), on axis ``(n + 2k) mod 3``. Every 3 sites give
    each (defect, amplitude) pair once; the next 3 shift the amplitudes by one spindle, so
    6 sites hold each pair twice, on two spindles.
    """
    vibration = [c.name for c in default_layout(cfg.fs).by_role("vibration")]
    spindles = len(vibration) // 3
    duration_s = cfg.rows / cfg.fs
    specs: list[SiteSpec] = []

    def add(name: str, anomalies: tuple[Anomaly, ...]) -> None:
        i = len(specs)
        specs.append(SiteSpec(site_id=name, region=REGIONS[i % len(REGIONS)], rows=cfg.rows,
                              seed=cfg.seed, index=BEARING_INDEX_OFFSET + i, fs=cfg.fs,
                              anomalies=anomalies))

    for n in range(cfg.defect_sites):
        anomalies = []
        for k in range(spindles):
            defect = BEARING_DEFECTS[(n + k) % len(BEARING_DEFECTS)]
            amp = BEARING_LADDER[(k + n // 3) % len(BEARING_LADDER)]
            channel = vibration[3 * k + (n + 2 * k) % 3]
            anomalies.append(Anomaly("bearing_defect", channel, 0.0, duration_s, amp, defect))
        add(f"bearing-{n:02d}", tuple(anomalies))
    for n in range(cfg.clean_sites):
        add(f"bearing-clean-{n:02d}", ())
    return specs


def _write(out: str, specs: list[SiteSpec], cfg, workers: int, progress: bool) -> dict:
    manifest = generate(specs, out, workers=workers, progress=progress)
    storage.write_bytes(storage.join(out, "set.json"),
                        (json.dumps(asdict(cfg), indent=1) + "\n").encode())
    return manifest


def make_set(out: str, cfg: SetConfig = SetConfig(), *, workers: int = 2,
             progress: bool = False) -> dict:
    """Generate the event part into ``out`` (folder or ``s3://`` prefix) with its
    manifest and ``set.json``; returns the manifest."""
    return _write(out, build_specs(cfg), cfg, workers, progress)


def make_bearing_set(out: str, cfg: BearingSetConfig = BearingSetConfig(), *,
                     workers: int = 2, progress: bool = False) -> dict:
    """Generate the bearing part into ``out`` (the set's ``bearing`` folder, see
    :func:`bearing_dir`) with its manifest and ``set.json``; returns the manifest."""
    return _write(out, build_bearing_specs(cfg), cfg, workers, progress)


def bearing_dir(set_dir: str) -> str:
    """Where the bearing part of the set in ``set_dir`` lives."""
    return storage.join(set_dir, BEARING_DIR)


def existing_config(out: str, config_class=SetConfig):
    """The config (a ``config_class``) of a complete set already in ``out``, or None."""
    cfg_uri = storage.join(out, "set.json")
    if not (storage.exists(cfg_uri) and storage.exists(storage.join(out, "manifest.json"))):
        return None
    return config_class(**json.loads(storage.read_bytes(cfg_uri)))


def describe(specs: list[SiteSpec]) -> str:
    """Counts of injected anomalies per kind and amplitude, for the log."""
    counts: dict[str, dict[float, int]] = {}
    for s in specs:
        for a in s.anomalies:
            kind = a.kind if a.defect is None else f"{a.kind} {a.defect}"
            counts.setdefault(kind, {}).setdefault(a.amplitude, 0)
            counts[kind][a.amplitude] += 1
    lines = [f"{len(specs)} sites: {sum(1 for s in specs if not s.anomalies)} clean, "
             f"{sum(len(s.anomalies) for s in specs)} anomalies"]
    for kind in sorted(counts):
        per = ", ".join(f"{a:g}σ x{n}" for a, n in sorted(counts[kind].items()))
        lines.append(f"  {kind}: {per}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="build/detection-set", help="folder or s3:// prefix; the "
                   f"bearing part goes to its {BEARING_DIR!r} folder")
    p.add_argument("--part", choices=("events", "bearing", "both"), default="both",
                   help="which part of the set to generate (default both)")
    p.add_argument("--rows", type=int, help="rows per file of the event part (default 500,000; "
                   "120,000 with --small)")
    p.add_argument("--bearing-rows", type=int, help="rows per file of the bearing part "
                   "(default 240,000 = 20 s at 12 kHz; 60,000 with --small)")
    p.add_argument("--small", action="store_true", help="4 + 4 short files, for a smoke run")
    p.add_argument("--clean-sites", type=int)
    p.add_argument("--spike-sites", type=int)
    p.add_argument("--mixed-sites", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    cfg = SetConfig.small() if a.small else SetConfig()
    overrides = {k: v for k, v in {"rows": a.rows, "clean_sites": a.clean_sites,
                                   "spike_sites": a.spike_sites, "mixed_sites": a.mixed_sites,
                                   "seed": a.seed}.items() if v is not None}
    cfg = SetConfig(**{**asdict(cfg), **overrides})
    bcfg = BearingSetConfig.small() if a.small else BearingSetConfig()
    boverrides = {k: v for k, v in {"rows": a.bearing_rows, "seed": a.seed}.items()
                  if v is not None}
    bcfg = BearingSetConfig(**{**asdict(bcfg), **boverrides})
    parts = []
    if a.part in ("events", "both"):
        parts.append((a.out, build_specs(cfg), cfg))
    if a.part in ("bearing", "both"):
        parts.append((bearing_dir(a.out), build_bearing_specs(bcfg), bcfg))
    for out, specs, c in parts:
        print(describe(specs))
        t0 = time.perf_counter()
        manifest = _write(out, specs, c, a.workers, sys.stderr.isatty())
        print(f"wrote {manifest['total_files']} files x {c.rows:,} rows to {out} in "
              f"{time.perf_counter() - t0:.0f} s; manifest {storage.join(out, 'manifest.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
