import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from telemetry_lab.generate import (Anomaly, SiteSpec, fleet_specs, generate, truth_document,
                                    write_site)
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
