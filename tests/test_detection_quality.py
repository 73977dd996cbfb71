"""The default preset meets the detection targets on a small fixed benchmark set.

Targets (the issue): event recall at least 0.95 for anomalies at or above a documented
amplitude per kind, and at most 1 false event per clean 500,000-row file. The set is built
by ``benchmarks/detection/make_set.py`` with another seed than the benchmark's own, so it
is not the set the preset was tuned on: 2 clean sites of 250,000 rows, a spike site and
two mixed sites, with only the amplitudes at and above each kind's floor. The
false-event target is scaled to the clean rows (500,000 rows allow 1 false event).
Numbers come from the scorer, ``telemetry_lab.evaluate.score``.
"""

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from telemetry_lab import analyse_file
from telemetry_lab.evaluate import CLEAN_ROWS_UNIT, score, truth_uri
from telemetry_lab.generate import ANOMALY_KINDS, generate, truth_document
from telemetry_lab.layout import default_layout
from telemetry_lab.params import AnalysisParams

#: Smallest amplitude (noise standard deviations) per kind at which the default preset
#: must reach RECALL_TARGET; the benchmark README documents the same floors.
AMPLITUDE_FLOORS = {
    "spike": 8,
    "level_shift": 2,
    "vibration_burst": 3,
    "overheat_ramp": 20,
}
#: Higher floors where the channel's own signal hides small anomalies: a spike on a
#: vibration channel rides on the spindle signal (4-6 noise sigmas itself).
ROLE_FLOORS = {("spike", "vibration"): 20}
RECALL_TARGET = 0.95
MAX_FALSE_PER_CLEAN_500K_ROWS = 1.0
CLEAN_ROWS = 250_000
SEED = 7

# benchmarks/ is not a package; load the set builder from its file (dataclasses need the
# module registered while it executes).
_spec = importlib.util.spec_from_file_location(
    "detection_make_set",
    Path(__file__).resolve().parents[1] / "benchmarks" / "detection" / "make_set.py")
make_set = sys.modules.setdefault("detection_make_set", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(make_set)


def quality_set_specs():
    """2 clean sites of 250,000 rows, 1 spike site of 100,000 and 2 mixed sites of
    200,000 with 30-45 s overheating ramps (so that a dozen fit)."""
    ladders = {kind: tuple(a for a in make_set.LADDERS[kind] if a >= floor)
               for kind, floor in AMPLITUDE_FLOORS.items()}
    parts = [make_set.SetConfig(rows=CLEAN_ROWS, clean_sites=2, spike_sites=0, mixed_sites=0,
                                seed=SEED),
             make_set.SetConfig(rows=100_000, clean_sites=0, spike_sites=1, mixed_sites=0,
                                seed=SEED + 1),
             make_set.SetConfig(rows=200_000, clean_sites=0, spike_sites=0, mixed_sites=2,
                                seed=SEED + 2)]
    roles = {c.name: c.role for c in default_layout().channels}
    keep = lambda a: a.amplitude >= ROLE_FLOORS.get((a.kind, roles[a.channel]), 0)
    return [replace(s, anomalies=tuple(a for a in s.anomalies if keep(a))) for cfg in parts
            for s in make_set.build_specs(cfg, ladders=ladders,
                                          durations={"overheat_ramp": (30.0, 45.0)})]


def score_preset(params: AnalysisParams, out) -> dict:
    """Generate the quality set into ``out`` (once) and score ``params`` on it."""
    specs = quality_set_specs()
    if not (Path(out) / "manifest.json").exists():
        generate(specs, str(out), workers=2)
    pairs = []
    for s in specs:
        uri = str(Path(out) / f"{s.stem}.parquet")
        assert Path(truth_uri(uri)).exists()
        pairs.append((analyse_file(uri, params), truth_document(s)))
    return score(pairs)


@pytest.fixture(scope="module")
def default_table(tmp_path_factory):
    return score_preset(AnalysisParams(), tmp_path_factory.mktemp("quality-set"))


def test_the_set_has_every_kind_at_its_floor_and_clean_rows():
    specs = quality_set_specs()
    for kind, floor in AMPLITUDE_FLOORS.items():
        amps = {a.amplitude for s in specs for a in s.anomalies if a.kind == kind}
        assert amps and min(amps) == floor, kind
    roles = {c.name: c.role for c in default_layout().channels}
    for (kind, role), floor in ROLE_FLOORS.items():
        amps = {a.amplitude for s in specs for a in s.anomalies
                if a.kind == kind and roles[a.channel] == role}
        assert amps and min(amps) == floor, (kind, role)
    assert sum(s.rows for s in specs if not s.anomalies) == 2 * CLEAN_ROWS
    assert len({s.stem for s in specs}) == len(specs)
    ramps = [a for s in specs for a in s.anomalies if a.kind == "overheat_ramp"]
    assert len(ramps) >= 10


@pytest.mark.parametrize("kind", ANOMALY_KINDS)
def test_default_recall_at_or_above_floor(default_table, kind):
    row = default_table["kinds"][kind]
    assert row["recall"] >= RECALL_TARGET, (
        f"{kind} at >= {AMPLITUDE_FLOORS[kind]} sigma: {row['detected']}/{row['truths']} "
        f"detected; by amplitude {[(b['amplitude_sigma'], b['recall']) for b in row.get('amplitudes', [])]}; "
        f"by role {row.get('roles')}")


def test_default_false_events_per_clean_file(default_table):
    c = default_table["clean"]
    assert c["rows"] == 2 * CLEAN_ROWS
    allowed = MAX_FALSE_PER_CLEAN_500K_ROWS * c["rows"] / CLEAN_ROWS_UNIT
    assert c["false_events"] <= allowed, (
        f"{c['false_events']} false events on {c['files']} clean files of {CLEAN_ROWS:,} rows "
        f"({c['false_events_per_clean_500k_rows']:.2f} per 500,000 rows; at most "
        f"{MAX_FALSE_PER_CLEAN_500K_ROWS:g} allowed)")
