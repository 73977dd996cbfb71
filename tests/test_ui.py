"""Widget panels and plots of the analyst notebooks (telemetry_lab.ui), driven by calling
their callbacks and by setting widget values as a user would."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import read_json
from telemetry_lab import jobs, manifest as manifest_mod, ui
from telemetry_lab.analysis import analyse
from telemetry_lab.errors import DataError
from telemetry_lab.params import AnalysisParams

PNG = b"\x89PNG\r\n\x1a\n"
TOLERANCE_NS = int(1e9)  # evaluate.DEFAULT_TOLERANCE_S


def sites(fleet) -> list[str]:
    return [uri for _, uri in manifest_mod.entries(manifest_mod.load(fleet["manifest"]))]


def site(fleet, i: int) -> str:
    return str(fleet["dir"] / f"site-{i:04d}.parquet")


def overlaps(event: dict, anomaly: dict) -> bool:
    return (event["start_ns"] <= anomaly["end_ns"] + TOLERANCE_NS
            and event["end_ns"] >= anomaly["start_ns"] - TOLERANCE_NS)


# -- tuning ---------------------------------------------------------------------------------

def test_tune_panel_scores_the_chosen_channel_against_the_truth_sidecar(small_fleet):
    panel = ui.TuneDetectionPanel(sites(small_fleet), site=site(small_fleet, 1))
    truth = read_json(small_fleet["dir"] / "site-0001.truth.json")
    assert panel.channel.value == truth["anomalies"][0]["channel"]  # starts on an anomaly
    panel.channel.value = "sensor_13"  # the widget fires on_change
    r = panel.result
    assert r.channel == "sensor_13" and panel.status.value == ""
    events = [e for e in r.analysis.document["events"] if e["channel"] == "sensor_13"]
    anomalies = [a for a in truth["anomalies"] if a["channel"] == "sensor_13"]
    true_events = [e for e in events if any(overlaps(e, a) for a in anomalies)]
    detected = [a for a in anomalies if any(overlaps(e, a) for e in events)]
    assert r.score.precision == len(true_events) / len(events)
    assert r.score.recall == len(detected) / len(anomalies) == 1.0  # a 30-sigma spike
    assert r.event_count == r.analysis.document["sensor_stats"]["sensor_13"]["event_count"]
    assert f"{r.event_count} events" in panel.summary.value and "recall 1" in panel.summary.value
    assert bytes(panel.image.value).startswith(PNG)


def test_tune_panel_follows_threshold_window_and_nperseg(small_fleet):
    panel = ui.TuneDetectionPanel(sites(small_fleet), site=site(small_fleet, 0))
    panel.channel.value = "sensor_13"
    panel.threshold.value = 12.0
    strict, strict_png = panel.result, panel.image.value
    panel.threshold.value = 3.0
    loose = panel.result
    assert panel.status.value == ""
    assert loose.event_count > strict.event_count
    png = bytes(panel.image.value)
    assert png != bytes(strict_png) and png.startswith(PNG)
    # site-0000 has a truth sidecar listing no anomalies: every event is a false one.
    assert loose.score.anomalies == 0 and loose.score.recall is None
    assert loose.score.precision == 0.0
    panel.nperseg.value = 1024
    panel.window.value = 2000
    doc = panel.result.analysis.document
    assert doc["spectral"]["sensor_13"]["nperseg"] == 1024  # any channel gets its spectrum
    assert doc["params"]["window"] == 2000 and doc["params"]["z_threshold"] == 3.0


@pytest.mark.parametrize("base", [AnalysisParams().replace(window=8000, min_reference=6000,
                                                           chunk_rows=16_000),
                                  AnalysisParams.preset("seed").replace(window=30)])
def test_tune_panel_keeps_a_loaded_window_outside_the_usual_range(small_fleet, base):
    panel = ui.TuneDetectionPanel(sites(small_fleet), site=site(small_fleet, 0), params=base)
    assert panel.window.value == base.window and panel.params.window == base.window


def test_tune_panel_without_truth_and_with_a_broken_site(small_fleet, tmp_path):
    copy = tmp_path / "plain.parquet"
    shutil.copy(site(small_fleet, 2), copy)
    broken = tmp_path / "broken.parquet"
    broken.write_text("not parquet")
    panel = ui.TuneDetectionPanel([str(copy), str(broken)])
    assert panel.result.score is None and "no truth sidecar" in panel.summary.value
    before = panel.result
    panel.site.value = str(broken)
    assert "error" in panel.status.value and "broken.parquet" in panel.status.value
    assert panel.result is before


def test_save_params_writes_whole_site_params_that_runs_load(small_fleet, tmp_path):
    panel = ui.TuneDetectionPanel(sites(small_fleet), site=site(small_fleet, 1))
    panel.threshold.value = 5.5
    panel.window.value = 2000
    uri = panel.save_params(str(tmp_path / "tuned.json"))
    saved = AnalysisParams.load(uri)
    assert saved == panel.params
    assert (saved.z_threshold, saved.window, saved.channels) == (5.5, 2000, None)
    panel.save_path.value = str(tmp_path / "by-button.json")
    panel.save_button.click()
    assert AnalysisParams.load(str(tmp_path / "by-button.json")) == saved
    assert "--params" in panel.status.value
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert panel.save_params(str(blocker / "p.json")) is None
    assert "error" in panel.status.value


# -- submitting -----------------------------------------------------------------------------

def test_submit_panel_runs_the_array_job_and_follows_its_progress(small_fleet, tmp_path):
    # Two of the fleet's files in one child: every child process costs seconds to start.
    m = manifest_mod.from_uris(str(small_fleet["dir"]), sites(small_fleet)[:2])
    manifest_mod.save(m, str(tmp_path / "two.json"))
    results = tmp_path / "out"
    panel = ui.SubmitPanel(str(tmp_path / "two.json"), str(results), files_per_job=2,
                           workers=1, poll_s=0.2)
    run_id = panel.submit()
    assert run_id is not None, panel.status.value
    assert panel.submission.wait(timeout=300) == 0, panel.submission.output()
    deadline = time.monotonic() + 30
    while panel.progress.bar_style != "success" and time.monotonic() < deadline:
        time.sleep(0.1)  # the watcher thread notices the end
    assert panel.progress.bar_style == "success", panel.status.value
    p = panel.refresh_progress()
    run = read_json(results / "results" / run_id / "_run.json")
    assert (p.finished, p.exit_code, p.ok, p.failed) == (True, 0, 2, 0)
    assert run["counts"]["OK"] == 2 and run["files_per_job"] == 2
    assert panel.progress.value == panel.progress.max == 2
    assert f"run {run_id}: 2/2 files done" in panel.status.value


def test_submit_panel_refuses_bad_inputs_without_starting_a_run(small_fleet, tmp_path):
    panel = ui.SubmitPanel(str(tmp_path / "missing.json"), str(tmp_path / "out"))
    assert panel.submit() is None
    assert "not submitted" in panel.status.value and "missing.json" in panel.status.value
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"window": 1}))
    panel.manifest.value = small_fleet["manifest"]
    panel.params.value = str(bad)
    assert panel.submit() is None and "window=1" in panel.status.value
    assert panel.submission is None and not (tmp_path / "out").exists()


# -- comparing ------------------------------------------------------------------------------

def expected_side(root, run_id, stem):
    folder = root / "results" / run_id
    if (folder / f"{stem}.json").exists():
        doc = read_json(folder / f"{stem}.json")
        return (sum(s["event_count"] for s in doc["sensor_stats"].values()),
                doc["report"]["equipment_health"])
    if (folder / "errors" / f"{stem}.json").exists():
        return None, "FAIL"
    return None, None


def test_run_comparison_shows_what_a_new_threshold_changed(small_fleet, tmp_path):
    root = tmp_path / "root"
    broken = tmp_path / "broken.parquet"
    broken.write_text("not parquet")
    entries = manifest_mod.entries(manifest_mod.load(small_fleet["manifest"]))
    base = AnalysisParams.preset("default")
    lower = base.replace(z_threshold=3.0)
    quiet = lambda line: None  # noqa: E731
    jobs.run_slice(entries, jobs.Paths(str(root), "a-default"), base, log=quiet)
    jobs.run_slice(entries + [("broken", str(broken))], jobs.Paths(str(root), "b-lower"), lower,
                   log=quiet)

    cmp = ui.RunComparison(str(root))  # the last two runs by name
    assert (cmp.run_a.value, cmp.run_b.value) == ("a-default", "b-lower")
    rows = cmp.table()
    assert [r["site"] for r in rows] == sorted([s for s, _ in entries] + ["broken"])
    for r in rows:
        ea, ha = expected_side(root, "a-default", r["site"])
        eb, hb = expected_side(root, "b-lower", r["site"])
        assert (r["events_a"], r["health_a"], r["events_b"], r["health_b"]) == (ea, ha, eb, hb)
        assert r["events_delta"] == (None if ea is None or eb is None else eb - ea)
    assert sum(r["events_b"] or 0 for r in rows) > sum(r["events_a"] or 0 for r in rows)
    assert {r["site"] for r in cmp.health_changes()} == {
        r["site"] for r in rows if r["health_a"] != r["health_b"]} >= {"broken"}
    assert cmp.params_diff() == {"z_threshold": (base.z_threshold, 3.0)}
    assert "z_threshold" in cmp.params_html.value and "site-0001" in cmp.table_html.value

    cmp.run_a.value = "b-lower"  # the widget fires on_change
    assert cmp.params_diff() == {} and "Same params" in cmp.params_html.value
    assert cmp.health_changes() == []


def test_run_comparison_needs_two_runs(small_fleet, tmp_path):
    entries = manifest_mod.entries(manifest_mod.load(small_fleet["manifest"]))[:1]
    jobs.run_slice(entries, jobs.Paths(str(tmp_path), "only"), AnalysisParams(),
                   log=lambda line: None)
    with pytest.raises(DataError, match="need two runs"):
        ui.RunComparison(str(tmp_path))
    cmp = ui.RunComparison(str(tmp_path), "only", "missing")
    assert "has no results" in cmp.status.value and cmp.b is None


# -- plots ------------------------------------------------------------------------------------

def test_fault_flag_timeline_shows_the_bits_the_file_sets(small_fleet):
    uri = site(small_fleet, 1)
    t_s, active = ui.fault_flag_timeline(uri, buckets=200)
    flags = pq.read_table(uri, columns=["status_flags"]).column(0).to_numpy()
    per_bucket = np.bitwise_or.reduce(flags.reshape(200, -1), axis=1)
    assert len(t_s) == 200 and t_s[1] - t_s[0] == pytest.approx(len(flags) / 200 / 1000.0)
    for bit, name in enumerate(active):
        assert list(active[name]) == list((per_bucket >> bit) & 1 == 1), name
    # The injected overheat ramp raises bearing_overtemp in its second half, nothing else.
    ramp = next(a for a in read_json(small_fleet["dir"] / "site-0001.truth.json")["anomalies"]
                if a["kind"] == "overheat_ramp")
    start = (ramp["start_ns"] + ramp["end_ns"]) / 2e9 - small_fleet["specs"][1].start_ns / 1e9
    on = t_s[active["bearing_overtemp"]]
    assert on.min() == pytest.approx(start, abs=0.2)
    assert [n for n, a in active.items() if a.any()] == ["bearing_overtemp"]


def test_plots_have_a_panel_per_role_group_and_fault_bit(small_fleet):
    uri = site(small_fleet, 1)
    analysis = analyse(uri, trace_buckets=ui.PLOT_BUCKETS)
    roles = {s["role"] for s in analysis.document["sensor_stats"].values()}
    fig = ui.plot_channels(analysis, ui.truth(uri))
    assert len(fig.axes) == len(roles)
    groups = {analysis.document["sensor_stats"][n]["group"] for n in analysis.psd}
    assert len(ui.plot_spectra(analysis).axes) == len(groups)
    flags_fig = ui.plot_fault_flags(uri)
    assert [t.get_text() for t in flags_fig.axes[0].get_yticklabels()] == \
        list(analysis.layout.fault_bits[b] for b in sorted(analysis.layout.fault_bits))
    assert ui._png(fig).startswith(PNG)
    with pytest.raises(DataError, match="trace_buckets"):
        ui.plot_channels(analyse(uri))
