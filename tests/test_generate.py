import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from telemetry_lab import AnalysisParams, analyse_file
from telemetry_lab.bearing import lookup_bearing, plan_envelope
from telemetry_lab.errors import ParamsError
from telemetry_lab.generate import (BEARING_DEFECTS, BEARING_FS, FLEET_BEARING, KIND_MODEL,
                                    SPINDLE_HZ, Anomaly, SiteSpec, fleet_specs, generate,
                                    truth_document, write_site)
from telemetry_lab.layout import LAYOUT_METADATA_KEY, Layout


def test_same_seed_same_files_whatever_the_worker_count(tmp_path):
    specs = fleet_specs(3, 70_000, seed=4, anomaly_rate=0.5)
    generate(specs, str(tmp_path / "a"), workers=1)
    generate(specs, str(tmp_path / "b"), workers=2)
    for i in range(3):
        a = pq.read_table(tmp_path / "a" / f"site-{i:04d}.parquet")
        b = pq.read_table(tmp_path / "b" / f"site-{i:04d}.parquet")
        assert a.equals(b)
    other = fleet_specs(3, 70_000, seed=5, anomaly_rate=0.5)
    generate(other[:1], str(tmp_path / "c"), workers=1)
    c = pq.read_table(tmp_path / "c" / "site-0000.parquet")
    assert not c.column("sensor_00").equals(
        pq.read_table(tmp_path / "a" / "site-0000.parquet").column("sensor_00"))


def test_file_layout_row_groups_and_metadata(tmp_path):
    spec = fleet_specs(1, 150_000, seed=0, anomaly_rate=0)[0]
    path = write_site(spec, str(tmp_path))
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    assert names == ["timestamp_ns", "site_id", "region"] + [f"sensor_{i:02d}" for i in range(24)] + ["status_flags"]
    assert str(pf.schema_arrow.field("site_id").type) == "dictionary<values=string, indices=int32, ordered=0>"
    assert str(pf.schema_arrow.field("status_flags").type) == "uint32"
    assert max(pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)) <= 65536
    layout = Layout.from_json(pf.schema_arrow.metadata[LAYOUT_METADATA_KEY])
    assert layout.sample_rate_hz == 1000.0 and layout.channels[9].role == "bearing_temperature"
    ts = pq.read_table(path, columns=["timestamp_ns"]).column(0).to_numpy()
    assert (np.diff(ts) == 1_000_000).all()


def test_vibration_has_spindle_lines_and_baselines_are_plausible(tmp_path):
    spec = fleet_specs(1, 60_000, seed=2, anomaly_rate=0)[0]
    t = pq.read_table(write_site(spec, str(tmp_path)))
    vib = t.column("sensor_00").to_numpy()
    spectrum = np.abs(np.fft.rfft(vib))
    f = np.fft.rfftfreq(len(vib), 1e-3)
    assert 18 <= f[1 + np.argmax(spectrum[1:])] <= 55  # spindle rotation rate
    assert 50 < t.column("sensor_09").to_numpy().mean() < 70
    assert 3 < t.column("sensor_12").to_numpy().mean() < 5


def test_truth_sidecar_matches_injected_anomalies_and_flags(tmp_path):
    spec = SiteSpec("site-t", "eu-west", 50_000, seed=1, index=0, anomalies=(
        Anomaly("level_shift", "sensor_12", 10.0, 5.0, 20.0),
        Anomaly("spike", "sensor_20", 30.0, 0.003, 25.0),
    ))
    path = write_site(spec, str(tmp_path))
    truth = json.loads((tmp_path / "site-t.truth.json").read_text())
    assert truth == truth_document(spec)
    shift = truth["anomalies"][0]
    assert shift["kind"] == "level_shift" and shift["channel"] == "sensor_12"
    assert shift["end_ns"] - shift["start_ns"] == 4_999 * 1_000_000
    t = pq.read_table(path)
    ts = t.column("timestamp_ns").to_numpy()
    flags = t.column("status_flags").to_numpy()
    low_oil = (flags & 2) != 0
    assert low_oil.sum() == 5000
    assert ts[low_oil][0] == shift["start_ns"] and ts[low_oil][-1] == shift["end_ns"]
    oil = t.column("sensor_12").to_numpy()
    assert oil[low_oil].mean() < oil[~low_oil].mean() - 0.3  # pressure drops by 20 sigma


def test_about_one_site_in_ten_gets_anomalies():
    specs = fleet_specs(50, 1000, seed=9)
    assert sum(1 for s in specs if s.anomalies) == 5
    assert fleet_specs(50, 1000, seed=9) == specs


def test_bad_anomaly_is_rejected():
    with pytest.raises(ValueError, match="unknown anomaly kind"):
        Anomaly("meteor", "sensor_00", 1.0, 1.0, 1.0)


def test_bad_bearing_defect_is_rejected(tmp_path):
    with pytest.raises(ParamsError, match="needs defect in"):
        Anomaly("bearing_defect", "sensor_00", 0.0, 1.0, 4.0)
    with pytest.raises(ParamsError, match="needs defect in"):
        Anomaly("bearing_defect", "sensor_00", 0.0, 1.0, 4.0, defect="cage")
    with pytest.raises(ParamsError, match="only for"):
        Anomaly("spike", "sensor_00", 0.0, 1.0, 4.0, defect="ball")
    # At 1 kHz the housing resonance (kHz) cannot be represented.
    spec = SiteSpec("slow", "eu-west", 5_000, seed=0, index=0, anomalies=(
        Anomaly("bearing_defect", "sensor_00", 0.0, 5.0, 4.0, defect="ball"),))
    with pytest.raises(ParamsError, match="too close to fs/2"):
        write_site(spec, str(tmp_path))
    spec = SiteSpec("temp", "eu-west", 12_000, seed=0, index=0, fs=BEARING_FS, anomalies=(
        Anomaly("bearing_defect", "sensor_09", 0.0, 1.0, 4.0, defect="ball"),))
    with pytest.raises(ParamsError, match="needs a vibration channel"):
        write_site(spec, str(tmp_path))


def _layout(path) -> Layout:
    return Layout.from_json(pq.ParquetFile(path).schema_arrow.metadata[LAYOUT_METADATA_KEY])


def test_layout_names_each_spindles_bearing_and_speed_and_1khz_skips_fast_ones(tmp_path):
    spec = fleet_specs(1, 60_000, seed=0, anomaly_rate=0)[0]
    path = write_site(spec, str(tmp_path))
    groups = _layout(path).machine["groups"]
    assert sorted(groups) == ["spindle_1", "spindle_2", "spindle_3"]
    for g in groups.values():
        assert g["bearing"] == lookup_bearing(FLEET_BEARING).to_dict()
        assert SPINDLE_HZ[0] <= g["shaft_hz"] <= SPINDLE_HZ[1]
    # The stated speed is the one in the signal: the strongest line of each spindle's X axis.
    t = pq.read_table(path)
    for name, group in (("sensor_00", "spindle_1"), ("sensor_03", "spindle_2"), ("sensor_06", "spindle_3")):
        vib = t.column(name).to_numpy()
        f = np.fft.rfftfreq(len(vib), 1e-3)
        peak = f[1 + np.argmax(np.abs(np.fft.rfft(vib))[1:])]
        assert abs(peak - groups[group]["shaft_hz"]) <= f[1]
    # At 1 kHz a spindle whose BPFI needs more than fs for envelope analysis is skipped, with
    # the reason; the others get a verdict (here none: the site is clean).
    doc = analyse_file(path, AnalysisParams())

    def plannable(shaft_hz):
        try:
            plan_envelope(1000.0, lookup_bearing(FLEET_BEARING).defect_frequencies(shaft_hz))
        except ParamsError:
            return False
        return True

    too_fast = {c for c in doc["bearing"]["channels"]
                if not plannable(groups[doc["sensor_stats"][c]["group"]]["shaft_hz"])}
    assert too_fast and len(too_fast) < 9  # seed 0 has one fast spindle of three
    assert set(doc["bearing"]["skipped"] or {}) == too_fast
    for name, ch in doc["bearing"]["channels"].items():
        assert (ch["verdict"] is None) == (name in too_fast)
        assert ch["verdict"] is None or ch["verdict"]["defect"] == "none"


def _defect_site(defect: str | None, channel: str = "sensor_03") -> SiteSpec:
    """5 s at 12 kHz, clean or with a defect of 4 sigma (inside the fleet's range) that
    covers the whole file; same seed and index, so the same noise and machine."""
    rows = 60_000
    anomalies = () if defect is None else (
        Anomaly("bearing_defect", channel, 0.0, rows / BEARING_FS, 4.0, defect=defect),)
    return SiteSpec(f"bearing-{defect or 'clean'}", "eu-west", rows, seed=0, index=0,
                    fs=BEARING_FS, anomalies=anomalies)


@pytest.mark.parametrize("defect,channel", [("inner_race", "sensor_03"), ("outer_race", "sensor_07"),
                                            (None, None)])
def test_generated_bearing_defect_is_diagnosed(tmp_path, defect, channel):
    spec = _defect_site(defect, channel)
    path = write_site(spec, str(tmp_path))
    truth = json.loads((tmp_path / f"{spec.stem}.truth.json").read_text())
    assert truth == truth_document(spec)
    doc = analyse_file(path, AnalysisParams())
    bearing = doc["bearing"]
    assert bearing["skipped"] is None and len(bearing["channels"]) == 9
    verdicts = {n: c["verdict"]["defect"] for n, c in bearing["channels"].items()}
    if defect is None:
        assert truth["anomalies"] == []
        assert bearing["verdict"]["defect"] == "none" and set(verdicts.values()) == {"none"}
        return
    [item] = truth["anomalies"]
    assert (item["kind"], item["defect"], item["channel"]) == ("bearing_defect", defect, channel)
    assert (item["start_ns"], item["end_ns"]) == tuple(doc["window"].values())  # whole file
    assert bearing["verdict"]["defect"] == defect and bearing["verdict"]["channel"] == channel
    assert verdicts.pop(channel) == defect and set(verdicts.values()) == {"none"}
    # Found at the line the layout's shaft speed and bearing predict.
    found = bearing["channels"][channel]["defects"][defect]
    group = _layout(path).machine["groups"][doc["sensor_stats"][channel]["group"]]
    line = getattr(lookup_bearing(FLEET_BEARING), found["line"]) * group["shaft_hz"]
    assert found["nominal_hz"] == pytest.approx(line)
    assert abs(found["measured_hz"] - line) <= 0.02 * line


def test_fleet_draws_bearing_defects_only_when_fast_enough():
    slow = fleet_specs(60, 1000, seed=9, anomaly_rate=1.0)
    assert not any(a.kind == "bearing_defect" for s in slow for a in s.anomalies)
    fast = fleet_specs(60, 24_000, seed=9, anomaly_rate=1.0, fs=BEARING_FS)
    drawn = [[a for a in s.anomalies if a.kind == "bearing_defect"] for s in fast]
    assert 5 <= sum(map(len, drawn)) and max(map(len, drawn)) == 1
    for a in (a for d in drawn for a in d):
        assert a.defect in BEARING_DEFECTS and a.channel in {f"sensor_{i:02d}" for i in range(9)}
        assert (a.start_s, a.duration_s) == (0.0, 2.0)  # the whole file
        assert KIND_MODEL["bearing_defect"]["amplitude"][0] <= a.amplitude <= KIND_MODEL["bearing_defect"]["amplitude"][1]
    assert fleet_specs(60, 24_000, seed=9, anomaly_rate=1.0, fs=BEARING_FS) == fast
