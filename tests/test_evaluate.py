"""The scorer: matching rules on hand-made cases with numbers worked out by hand, reading a
run's results and truth sidecars, and the ``evaluate`` command."""

import argparse
import json
import math
import subprocess
import sys

import pytest

from telemetry_lab import evaluate, jobs
from telemetry_lab.errors import EXIT_DATA, DataError
from telemetry_lab.generate import Anomaly, SiteSpec, generate
from telemetry_lab.params import AnalysisParams

S = 1_000_000_000  # ns per second


def ev(channel, start, end):
    return {"channel": channel, "start_ns": start, "end_ns": end, "samples": 1, "peak_z": 9.0,
            "peak_value": 1.0}


def tr(channel, kind, start, end, amp=5.0):
    return {"channel": channel, "kind": kind, "start_ns": start, "end_ns": end,
            "amplitude_sigma": amp}


def doc(events, counts=None, rows=1000, roles=None, source="mem://x"):
    """A result document; ``counts`` gives sensor_stats event_count (truncation)."""
    counts = counts or {}
    channels = {e["channel"] for e in events} | set(counts) | set(roles or {})
    stats = {ch: {"role": (roles or {}).get(ch, "acoustic"),
                  "event_count": counts.get(ch, sum(e["channel"] == ch for e in events))}
             for ch in channels}
    return {"source": source, "rows": rows, "events": events, "sensor_stats": stats}


def truth(anomalies, rows=1000):
    return {"site_id": "x", "rows": rows, "anomalies": anomalies}


# -- match_events ----------------------------------------------------------------------

def test_touching_boundaries_overlap_and_one_nanosecond_past_does_not():
    t = [tr("a", "spike", 100, 200)]
    events = [ev("a", 50, 100), ev("a", 200, 300), ev("a", 201, 300), ev("a", 0, 99)]
    m = evaluate.match_events(events, t, tolerance_s=0)
    assert m.truth_events == [[0, 1]]
    assert m.event_truths == [[0], [0], [], []]
    assert m.false_events == [2, 3]
    assert m.delays_s == [0.0]  # the first event starts before the truth: clipped


def test_event_spanning_two_truths_detects_both_and_is_one_true_event():
    t = [tr("a", "level_shift", 100, 200), tr("a", "level_shift", 300, 400)]
    m = evaluate.match_events([ev("a", 150, 350)], t, tolerance_s=0)
    assert m.detected == [True, True]
    assert m.event_truths == [[0, 1]]
    assert m.delays_s == [50e-9, 0.0]


def test_two_events_on_one_truth_one_detection_delay_from_the_earliest():
    t = [tr("a", "level_shift", 1 * S, 3 * S)]
    m = evaluate.match_events([ev("a", 2 * S, 2 * S + 5), ev("a", int(1.25 * S), int(1.5 * S))],
                              t, tolerance_s=0)
    assert m.truth_events == [[0, 1]]
    assert m.false_events == []
    assert m.delays_s == [0.25]


def test_event_on_another_channel_is_false_and_truth_missed():
    m = evaluate.match_events([ev("b", 100, 200)], [tr("a", "spike", 100, 200)], tolerance_s=0)
    assert m.detected == [False]
    assert m.false_events == [0]
    assert m.delays_s == [None]


def test_tolerance_widens_truth_on_both_sides():
    t = [tr("a", "level_shift", 10 * S, 20 * S)]
    events = [ev("a", int(20.9 * S), 21 * S), ev("a", int(8.5 * S), int(9.2 * S)),
              ev("a", int(21.2 * S), 22 * S)]
    strict = evaluate.match_events(events, t, tolerance_s=0)
    loose = evaluate.match_events(events, t, tolerance_s=1.0)
    assert strict.false_events == [0, 1, 2]
    assert loose.truth_events == [[0, 1]] and loose.false_events == [2]
    assert loose.delays_s == [0.0]


@pytest.mark.parametrize("events,truths,message", [
    ([{"channel": "a", "start_ns": 1}], [], "events\\[0\\] must have keys"),
    ([ev("a", 5, 4)], [], "ends before it starts"),
    ([], [{"channel": "a", "start_ns": 1, "end_ns": 2}], "anomalies\\[0\\] must have keys"),
])
def test_malformed_items_raise_data_error_naming_the_file(events, truths, message):
    with pytest.raises(DataError, match=message) as info:
        evaluate.match_events(events, truths, source="run/x.json")
    assert info.value.file == "run/x.json"


# -- score -------------------------------------------------------------------------------

def _three_files():
    """File A: anomalies on a (spikes) and b (level shifts), events incl. one on clean
    channel c. File B: clean, 250,000 rows, channel d truncated (5 events, 1 kept).
    File C: one spike, channel a truncated (3 events, 1 kept and true)."""
    a = (doc([ev("a", 1000, 1000),          # detects spike t0 (delay 0)
              ev("a", 7000, 7000),          # false, attributed to spike (a has only spikes)
              ev("b", 2500, 4500),          # spans both shifts: delays 500 ns and 0
              ev("b", 5000, 5100),          # a second event on the second shift
              ev("c", 2000, 2000)],         # false, channel without truth
             roles={"a": "vibration", "b": "oil_pressure"}),
         truth([tr("a", "spike", 1000, 1000, 8), tr("a", "spike", 5000, 5003, 4),
                tr("b", "level_shift", 2000, 3000, 2), tr("b", "level_shift", 4000, 6000, 2)]))
    b = (doc([ev("a", 10, 10), ev("a", 50, 60), ev("d", 70, 70)], counts={"d": 5}, rows=250_000),
         truth([], rows=250_000))
    c = (doc([ev("a", 100, 100)], counts={"a": 3}, roles={"a": "coolant_flow"}),
         truth([tr("a", "spike", 100, 100, 8)]))
    return [a, b, c]


def test_score_three_files_worked_by_hand():
    t = evaluate.score(_three_files(), tolerance_s=0)
    assert t["files"] == 3
    sp = t["kinds"]["spike"]
    # truths 3 (amps 8, 4, 8), detected 2; true events 2; false 1 + 2 dropped by truncation
    assert (sp["truths"], sp["detected"], sp["events"], sp["true_events"], sp["false_events"]) == \
        (3, 2, 5, 2, 3)
    assert sp["recall"] == pytest.approx(2 / 3)
    assert sp["precision"] == pytest.approx(0.4)
    assert sp["f1"] == pytest.approx(0.5)  # 2 * 0.4 * 2/3 / (0.4 + 2/3)
    assert (sp["delay_median_s"], sp["delay_p90_s"]) == (0.0, 0.0)
    assert [(b["amplitude_sigma"], b["truths"], b["detected"], b["recall"], b["recall_at_or_above"])
            for b in sp["amplitudes"]] == [(4.0, 1, 0, 0.0, pytest.approx(2 / 3)),
                                           (8.0, 2, 2, 1.0, 1.0)]
    assert sp["roles"] == {"coolant_flow": {"truths": 1, "detected": 1, "recall": 1.0},
                           "vibration": {"truths": 2, "detected": 1, "recall": 0.5}}
    ls = t["kinds"]["level_shift"]
    assert (ls["truths"], ls["detected"], ls["events"], ls["true_events"], ls["false_events"]) == \
        (2, 2, 2, 2, 0)
    assert (ls["recall"], ls["precision"], ls["f1"]) == (1.0, 1.0, 1.0)
    assert ls["delay_median_s"] == pytest.approx(250e-9)
    assert ls["delay_p90_s"] == pytest.approx(450e-9)  # 0 + 0.9 * (500 - 0) ns
    assert "amplitudes" not in ls and "roles" not in ls  # one amplitude, one role
    o = t["overall"]
    # true: A e0, e2, e3 and C's kept event; false: A e1, e4; B 2 + 5; C 2 dropped
    assert (o["truths"], o["detected"], o["events"], o["true_events"], o["false_events"]) == \
        (5, 4, 15, 4, 11)
    assert o["recall"] == pytest.approx(0.8)
    assert o["precision"] == pytest.approx(4 / 15)
    assert o["f1"] == pytest.approx(0.4)
    assert o["false_events_without_truth"] == 1
    assert o["delay_median_s"] == 0.0
    assert o["delay_p90_s"] == pytest.approx(350e-9)  # sorted 0, 0, 0, 500 ns: 0.7 of the way
    assert t["clean"] == {"files": 1, "rows": 250_000, "false_events": 7,
                          "false_events_per_clean_file": 7.0,
                          "false_events_per_clean_500k_rows": 14.0}
    assert t["truncated"]["channels"] == 2 and t["truncated"]["files"] == 2
    assert t["truncated"]["dropped_events"] == 6 and "event_count" in t["truncated"]["note"]
    json.dumps(t, allow_nan=False)  # the table is plain JSON


def test_false_event_on_a_channel_with_two_kinds_is_not_given_to_either():
    t = evaluate.score([(doc([ev("x", 900, 900)]),
                         truth([tr("x", "spike", 100, 100), tr("x", "level_shift", 300, 400)]))],
                       tolerance_s=0)
    assert t["kinds"]["spike"]["false_events"] == 0
    assert t["kinds"]["level_shift"]["false_events"] == 0
    assert t["overall"]["false_events"] == 1 and t["overall"]["false_events_without_truth"] == 1
    assert t["clean"]["files"] == 0 and t["clean"]["false_events_per_clean_file"] is None
    assert t["truncated"]["note"] is None


def test_chance_recall_is_what_the_false_events_would_hit_at_random():
    # 10 s file, 2 false events on channel a; a 0.5 s truth widened by 0.25 s each side
    # is 1 s wide: 1 - exp(-2 / 10 * 1). Channel b has no false event: chance 0.
    d = doc([ev("a", 8 * S, 8 * S), ev("a", 9 * S, 9 * S), ev("b", 2 * S, 2 * S)], rows=10_000)
    t = truth([tr("a", "level_shift", 2 * S, int(2.5 * S), 1),
               tr("b", "level_shift", 2 * S, int(2.5 * S), 2)], rows=10_000)
    t["sample_rate_hz"] = 1000.0
    table = evaluate.score([(d, t)], tolerance_s=0.25)
    ls = table["kinds"]["level_shift"]
    assert ls["recall"] == 0.5 and ls["false_events"] == 2
    assert ls["chance_recall"] == pytest.approx((1 - math.exp(-0.2) + 0) / 2)
    assert [b["chance_recall"] for b in ls["amplitudes"]] == [pytest.approx(1 - math.exp(-0.2)), 0.0]
    del t["sample_rate_hz"]
    assert evaluate.score([(d, t)])["overall"]["chance_recall"] is None  # rate unknown


def test_many_distinct_amplitudes_are_binned_by_powers_of_two():
    amps = [3, 5, 6, 7, 9, 11, 13, 17, 40]
    truths = [tr("a", "spike", 1000 * i, 1000 * i, a) for i, a in enumerate(amps)]
    events = [ev("a", 1000 * i, 1000 * i) for i, a in enumerate(amps) if a >= 11]
    t = evaluate.score([(doc(events), truth(truths))], tolerance_s=0)
    rows = [(b["amplitude_sigma"], b["amplitude_below"], b["truths"], b["detected"])
            for b in t["kinds"]["spike"]["amplitudes"]]
    assert rows == [(2.0, 4.0, 1, 0), (4.0, 8.0, 3, 0), (8.0, 16.0, 3, 2), (16.0, 32.0, 1, 1),
                    (32.0, 64.0, 1, 1)]
    assert evaluate.amplitude_floor(t, "spike", target=0.8) == 8.0  # 4 of 5 at or above 8
    assert evaluate.amplitude_floor(t, "spike") == 16.0


def test_amplitude_floor_holds_at_every_larger_amplitude_too():
    # recall at or above 4: 2/3, above 8: 1/2, above 12: 1/1. 4 alone would pass 0.6, but
    # the pooled recall from 8 up does not, so the floor is 12.
    truths = [tr("a", "spike", 100, 100, 4), tr("a", "spike", 200, 200, 8),
              tr("a", "spike", 300, 300, 12)]
    t = evaluate.score([(doc([ev("a", 100, 100), ev("a", 300, 300)]), truth(truths))],
                       tolerance_s=0)
    assert [b["recall_at_or_above"] for b in t["kinds"]["spike"]["amplitudes"]] == \
        [pytest.approx(2 / 3), 0.5, 1.0]
    assert evaluate.amplitude_floor(t, "spike", target=0.6) == 12.0
    assert evaluate.amplitude_floor(t, "spike", target=1.0) == 12.0
    assert evaluate.amplitude_floor(t, "level_shift") is None


def test_results_of_another_generation_are_refused():
    with pytest.raises(DataError, match="different generations") as info:
        evaluate.score([(doc([], rows=999, source="r/site.json"), truth([], rows=1000))])
    assert info.value.file == "r/site.json"


# -- a generated set, its results and the command ----------------------------------------

@pytest.fixture
def tiny_set(tmp_path):
    """Three generated 5,000-row sites (one clean) and hand-written results under run r1."""
    specs = [SiteSpec("s0", "eu-west", 5000, seed=1, index=0),
             SiteSpec("s1", "eu-west", 5000, seed=1, index=1, anomalies=(
                 Anomaly("spike", "sensor_13", 1.0, 0.002, 10.0),
                 Anomaly("level_shift", "sensor_15", 2.0, 1.0, 5.0))),
             SiteSpec("s2", "eu-west", 5000, seed=1, index=2, anomalies=(
                 Anomaly("spike", "sensor_13", 3.0, 0.001, 20.0),))]
    data = tmp_path / "data"
    generate(specs, str(data), workers=1)
    root = str(tmp_path / "out")
    t0 = specs[0].start_ns
    results = {
        "s0": doc([ev("sensor_01", t0 + S, t0 + S)], rows=5000),
        # finds the spike 1 ms late, misses the shift, one false event on sensor_13
        "s1": doc([ev("sensor_13", t0 + 1001 * 10**6, t0 + 1001 * 10**6),
                   ev("sensor_13", t0 + 4 * S, t0 + 4 * S)], rows=5000),
        "s2": doc([ev("sensor_13", t0 + 3 * S, t0 + 3 * S)], rows=5000),
    }
    paths = jobs.Paths(root, "r1")
    for stem, d in results.items():
        d["site_id"] = stem
        for p in (paths.result(stem), paths.result(stem, latest=True)):
            jobs.storage.write_bytes(p, json.dumps(d).encode())
    return {"manifest": str(data / "manifest.json"), "root": root, "data": data, "paths": paths}


def test_evaluate_run_reads_sidecars_and_results(tiny_set):
    t = evaluate.evaluate_run(tiny_set["manifest"], tiny_set["root"], "r1", tolerance_s=0)
    assert t["files"] == 3 and t["skipped"] == {"no_truth": [], "no_result": []}
    sp, ls = t["kinds"]["spike"], t["kinds"]["level_shift"]
    assert (sp["truths"], sp["detected"], sp["true_events"], sp["false_events"]) == (2, 2, 2, 1)
    assert sp["delay_median_s"] == pytest.approx(0.0005)  # delays 1 ms and 0
    assert (ls["truths"], ls["detected"], ls["events"]) == (1, 0, 0)
    assert t["clean"]["files"] == 1 and t["clean"]["false_events"] == 1
    assert t["clean"]["false_events_per_clean_500k_rows"] == pytest.approx(100.0)
    assert t["run"]["run_id"] == "r1"
    assert evaluate.evaluate_run(tiny_set["manifest"], tiny_set["root"], tolerance_s=0)["overall"] \
        == t["overall"]  # latest holds the same documents


def test_files_without_sidecar_or_result_are_skipped_and_counted(tiny_set):
    (tiny_set["data"] / "s0.truth.json").unlink()
    jobs.storage.delete(tiny_set["paths"].result("s2"))
    t = evaluate.evaluate_run(tiny_set["manifest"], tiny_set["root"], "r1")
    assert t["skipped"] == {"no_truth": ["s0"], "no_result": ["s2"]}
    assert t["files"] == 1 and t["kinds"]["spike"]["truths"] == 1
    text = evaluate.format_table(t)
    assert "skipped 1 file without a truth sidecar" in text and "without a result: s2" in text
    assert "1 file scored;" in text
    with pytest.raises(DataError, match="nothing to score"):
        evaluate.evaluate_run(tiny_set["manifest"], tiny_set["root"], "no-such-run")


def _parser():
    p = argparse.ArgumentParser(prog="telemetry-lab")
    evaluate.add_evaluate_parser(p.add_subparsers(dest="command", required=True))
    return p


def test_evaluate_command_prints_table_and_writes_json(tiny_set, tmp_path, capsys):
    out = tmp_path / "scores.json"
    a = _parser().parse_args(["evaluate", "--manifest", tiny_set["manifest"], "--results",
                              tiny_set["root"], "--run-id", "r1", "--json", str(out),
                              "--tolerance-s", "0"])
    assert a.func(a) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[:3] == ["kind", "amp", "truths"]
    assert any(line.startswith("spike ") for line in printed.splitlines())
    assert json.loads(out.read_text()) == evaluate.evaluate_run(
        tiny_set["manifest"], tiny_set["root"], "r1", tolerance_s=0)


def test_evaluate_command_exits_3_when_results_are_missing(tiny_set, capsys):
    jobs.storage.delete(tiny_set["paths"].result("s1", latest=True))
    a = _parser().parse_args(["evaluate", "--manifest", tiny_set["manifest"], "--results",
                              tiny_set["root"]])
    assert a.func(a) == EXIT_DATA
    assert "no result in run 'latest'" in capsys.readouterr().err


def test_scoring_a_real_run_counts_every_event_of_the_documents(tiny_set, tmp_path):
    """The real pipeline (run_slice, seed preset) into a fresh root: every event of the
    documents, kept or truncated, is either true or false."""
    from telemetry_lab import manifest as manifest_mod

    root = str(tmp_path / "real")
    params = AnalysisParams.preset("seed").replace(max_events_per_channel=2)
    entries = manifest_mod.entries(manifest_mod.load(tiny_set["manifest"]))
    jobs.run_slice(entries, jobs.Paths(root, "real1"), params, log=lambda line: None)
    t = evaluate.evaluate_run(tiny_set["manifest"], root, "real1")
    docs = [json.loads(jobs.storage.read_bytes(jobs.Paths(root, "real1").result(s)))
            for s, _ in entries]
    total = sum(st["event_count"] for d in docs for st in d["sensor_stats"].values())
    assert t["overall"]["events"] == total
    assert t["overall"]["true_events"] + t["overall"]["false_events"] == total
    assert t["truncated"]["channels"] == sum(
        st["event_count"] > sum(e["channel"] == ch for e in d["events"])
        for d in docs for ch, st in d["sensor_stats"].items())


def test_telemetry_lab_evaluate_on_the_command_line(tiny_set):
    from telemetry_lab import cli

    try:
        cli.build_parser().parse_args(["evaluate", "--manifest", "m", "--results", "r"])
    except SystemExit:
        pytest.skip("cli.py does not register evaluate yet (evaluate.add_evaluate_parser)")
    p = subprocess.run([sys.executable, "-m", "telemetry_lab", "evaluate", "--manifest",
                        tiny_set["manifest"], "--results", tiny_set["root"], "--run-id", "r1"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "overall" in p.stdout and "clean files: 1" in p.stdout


# -- bearing defects -----------------------------------------------------------------------

def bearing(verdicts, site="none"):
    """A result's ``bearing`` section: channel -> verdict defect (None: not assessed)."""
    return {"verdict": {"defect": site, "channel": None, "score_db": None},
            "channels": {ch: {"verdict": None if d is None else {"defect": d, "score_db": 9.0}}
                         for ch, d in verdicts.items()},
            "skipped": None}


def btr(channel, defect, amp, rows=1000):
    return {**tr(channel, "bearing_defect", 0, (rows - 1) * 10**6, amp), "defect": defect}


def _bearing_files():
    """A: four defects (found, taken for another defect, called none, channel without a
    verdict), a cage call on clean v4, clean v5, unassessed v6, and an event on v0.
    B: no truth, outer race called on v1 and for the site. C: no truth, no bearing
    section. D: no truth, one clean verdict. F: a spike found by an event, v0 clean."""
    a = doc([ev("v0", 5 * 10**6, 5 * 10**6)])
    a["bearing"] = bearing({"v0": "outer_race", "v1": "ball", "v2": "none", "v3": None,
                            "v4": "cage", "v5": "none", "v6": None}, site="outer_race")
    a_truth = truth([btr("v0", "outer_race", 3), btr("v1", "inner_race", 3),
                     btr("v2", "ball", 8), btr("v3", "outer_race", 8)])
    b = doc([])
    b["bearing"] = bearing({"v0": "none", "v1": "outer_race"}, site="outer_race")
    c = doc([])
    c["bearing"] = None
    d = doc([])
    d["bearing"] = bearing({"v0": "none"})
    f = doc([ev("s", 100, 100)])
    f["bearing"] = bearing({"v0": "none"})
    return [(a, a_truth), (b, truth([])), (c, truth([])), (d, truth([])),
            (f, truth([tr("s", "spike", 100, 100, 8)]))]


def test_bearing_defects_scored_by_verdict_worked_by_hand():
    t = evaluate.score(_bearing_files(), tolerance_s=0)
    b = t["kinds"]["bearing_defect"]
    assert (b["truths"], b["detected"], b["wrong_defect"], b["missed"], b["not_assessed"]) == \
        (4, 1, 1, 1, 1)
    assert b["recall"] == 0.25
    # assessed channels without a bearing truth: A v4, v5; B v0, v1; D v0; F v0
    assert (b["clean_channels"], b["false_calls"]) == (6, 2)
    assert b["false_call_rate"] == pytest.approx(1 / 3)
    assert b["precision"] == 0.25  # 1 / (1 detected + 2 false calls + 1 wrong defect)
    assert b["f1"] == 0.25
    # files without a bearing truth and with a verdict: B (outer race called), D, F
    assert (b["clean_sites"], b["site_false_calls"]) == (3, 1)
    assert b["site_false_call_rate"] == pytest.approx(1 / 3)
    assert b["confusion"] == {"ball": {"none": 1}, "inner_race": {"ball": 1},
                              "outer_race": {"not_assessed": 1, "outer_race": 1},
                              "none": {"cage": 1, "none": 4, "outer_race": 1}}
    assert list(b["confusion"])[-1] == "none"
    assert b["defects"] == {"ball": {"truths": 1, "detected": 0, "recall": 0.0},
                            "inner_race": {"truths": 1, "detected": 0, "recall": 0.0},
                            "outer_race": {"truths": 2, "detected": 1, "recall": 0.5}}
    assert b["amplitudes"] == [
        {"amplitude_sigma": 3.0, "truths": 2, "detected": 1, "recall": 0.5, "wrong_defect": 1,
         "recall_at_or_above": 0.25},
        {"amplitude_sigma": 8.0, "truths": 2, "detected": 0, "recall": 0.0, "wrong_defect": 0,
         "recall_at_or_above": 0.0}]
    # events: only F's spike is an event truth; A's event on the defect channel is false and
    # belongs to no kind; A is not a clean file (it has truths), B, C and D are.
    o = t["overall"]
    assert (o["truths"], o["detected"], o["true_events"], o["false_events"]) == (1, 1, 1, 1)
    assert o["false_events_without_truth"] == 1
    assert set(t["kinds"]) == {"spike", "bearing_defect"}
    assert t["kinds"]["spike"]["false_events"] == 0
    assert (t["clean"]["files"], t["clean"]["false_events"]) == (3, 0)
    assert "bearing verdict" in t["bearing_rules"]
    json.dumps(t, allow_nan=False)


def test_bearing_row_in_the_text_table():
    text = evaluate.format_table(evaluate.score(_bearing_files(), tolerance_s=0))
    assert "bearing_defect" not in text[:text.index("\noverall")]  # not among event kinds
    lines = text.splitlines()
    head = next(i for i, x in enumerate(lines) if x.startswith("bearing_defect"))
    assert lines[head].split()[:4] == ["bearing_defect", "amp", "truths", "det"]
    assert lines[head + 2].split()[:4] == ["all", "4", "1", "0.250"]
    assert "truth inner_race  -> ball 1" in text
    assert "false calls 2 on 6 assessed clean channels" in text
    assert "site-level false calls 1 on 3 files" in text


def test_no_bearing_row_without_bearing_truths_or_verdicts():
    t = evaluate.score(_three_files(), tolerance_s=0)
    assert "bearing_defect" not in t["kinds"]
    assert "bearing_defect" not in evaluate.format_table(t)


def test_bearing_truth_without_defect_is_refused():
    item = tr("v0", "bearing_defect", 0, 10, 3)
    with pytest.raises(DataError, match="names no defect") as info:
        evaluate.score([(doc([], source="r/b.json"), truth([item]))])
    assert info.value.file == "r/b.json" and info.value.channel == "v0"


def test_generated_outer_race_defect_is_found_and_clean_site_has_no_false_call(tmp_path):
    """The generator, the analysis with default params and the scorer end to end: 5 s at
    12 kHz, an outer-race defect of 5 noise sigmas on sensor_04 and a clean site."""
    from telemetry_lab import analyse_file
    from telemetry_lab.generate import BEARING_FS
    from telemetry_lab.layout import default_layout

    rows = 60_000
    specs = [SiteSpec("defect", "eu-west", rows, seed=3, index=0, fs=BEARING_FS, anomalies=(
                 Anomaly("bearing_defect", "sensor_04", 0.0, rows / BEARING_FS, 5.0,
                         "outer_race"),)),
             SiteSpec("clean", "eu-west", rows, seed=3, index=1, fs=BEARING_FS)]
    generate(specs, str(tmp_path), workers=1)
    pairs = [(analyse_file(str(tmp_path / f"{s.stem}.parquet"), AnalysisParams()),
              json.loads((tmp_path / f"{s.stem}.truth.json").read_text())) for s in specs]
    b = evaluate.score(pairs)["kinds"]["bearing_defect"]
    vibration = len(default_layout().by_role("vibration"))
    assert (b["truths"], b["detected"], b["recall"]) == (1, 1, 1.0)
    assert b["clean_channels"] == 2 * vibration - 1  # every vibration channel assessed
    assert (b["false_calls"], b["site_false_calls"], b["clean_sites"]) == (0, 0, 1)
    assert b["precision"] == 1.0
