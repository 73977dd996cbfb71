"""Importing .mat and CSV recordings into the project's file layout."""

from __future__ import annotations

import argparse
import csv
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.io as sio

from conftest import SHARED_DATA
from telemetry_lab.analysis import analyse_file
from telemetry_lab.errors import DataError, ParamsError
from telemetry_lab.importers import (add_import_parser, bearing_from_options, import_csv,
                                     import_mat, read_csv)
from telemetry_lab.io import TelemetryFile

CWRU, MFPT, IMS = SHARED_DATA / "cwru", SHARED_DATA / "mfpt", SHARED_DATA / "ims"
IMS_CSV = IMS / "merged_dataset_BearingTest_2.csv"
needs_data = pytest.mark.skipif(not (CWRU.is_dir() and MFPT.is_dir() and IMS.is_dir()),
                                reason="shared real data not present")


def cli(argv):
    p = argparse.ArgumentParser()
    add_import_parser(p.add_subparsers(dest="command", required=True))
    a = p.parse_args(argv)
    return a.func(a)


def read_all(tf, names):
    """Timestamps and columns of the whole file, streamed and joined."""
    chunks = list(tf.iter_chunks(names))
    return (np.concatenate([c.timestamps for c in chunks]),
            {n: np.concatenate([c.columns[n] for c in chunks]) for n in names})


def check_schema(path, channels):
    schema = pq.read_schema(path)
    assert schema.field("timestamp_ns").type == pa.int64()
    for col in ("site_id", "region"):
        assert schema.field(col).type == pa.dictionary(pa.int32(), pa.string())
    for c in channels:
        assert schema.field(c).type == pa.float64()
    assert schema.field("status_flags").type == pa.uint32()
    assert pq.read_table(path, columns=["status_flags"]).column(0).to_numpy().max() == 0


@needs_data
def test_cwru_import_carries_layout_bearing_and_samples(tmp_path):
    out = str(tmp_path / "cwru105.parquet")
    assert cli(["import", "mat", str(CWRU / "105.mat"), "--site-id", "cwru-105", "--fs", "12000",
                "--bearing", "SKF 6205-2RS JEM", "--out", out]) == 0
    check_schema(out, ["drive_end", "fan_end", "base"])
    raw = sio.loadmat(str(CWRU / "105.mat"))
    with TelemetryFile(out) as tf:
        lay = tf.layout
        assert [c.role for c in lay.channels] == ["vibration"] * 3
        assert {c.unit for c in lay.channels} == {"g"}
        assert lay.sample_rate_hz == 12000.0
        assert lay.machine["shaft_hz"] == pytest.approx(1797 / 60)
        assert lay.machine["bearing"]["name"] == "SKF 6205-2RS JEM"
        assert lay.machine["bearing"]["bpfi"] == 5.4152
        assert tf.site_id == "cwru-105" and tf.rows == 121_265
        ts, cols = read_all(tf, ["drive_end", "base"])
    np.testing.assert_array_equal(cols["drive_end"], raw["X105_DE_time"].ravel())
    np.testing.assert_array_equal(cols["base"], raw["X105_BA_time"].ravel())
    # No stored start time: the MAT header's creation time, then 1/12000 s steps.
    t0 = int(datetime(2000, 1, 31, 13, 49, 59, tzinfo=timezone.utc).timestamp()) * 10**9
    assert ts[0] == t0
    assert set(np.diff(ts)) == {83_333, 83_334}


@needs_data
def test_cwru_97_needs_fs_and_has_no_base_channel(tmp_path):
    with pytest.raises(ParamsError) as e:
        import_mat(str(CWRU / "97.mat"), str(tmp_path / "x.parquet"), site_id="x")
    assert "97.mat" in str(e.value) and "--fs" in str(e.value)
    lay = import_mat(str(CWRU / "97.mat"), str(tmp_path / "x.parquet"), site_id="x", fs=48000)
    assert lay.channel_names == ["drive_end", "fan_end"] and lay.sample_rate_hz == 48000.0


@needs_data
def test_imported_file_goes_through_the_analysis(tmp_path):
    out = str(tmp_path / "c130.parquet")
    import_mat(str(CWRU / "130.mat"), out, site_id="cwru-130", fs=12000,
               bearing=bearing_from_options("SKF 6205-2RS JEM"))
    doc = analyse_file(out)
    assert doc["rows"] == 121_991 and doc["sample_rate_hz"] == 12000.0
    assert set(doc["spectral"]) == {"drive_end", "fan_end", "base"}


@needs_data
def test_mfpt_import_takes_rate_and_shaft_from_the_file(tmp_path):
    path = str(MFPT / "OuterRaceFault_vload_1.mat")
    lay = import_mat(path, str(tmp_path / "m.parquet"), site_id="mfpt-or",
                     bearing=bearing_from_options("MFPT test bearing"))
    assert lay.sample_rate_hz == 48828.0 and lay.machine["shaft_hz"] == 25.0
    assert lay.machine["load_lbs"] == 25.0
    assert lay.channels[0].role == "vibration" and lay.channels[0].unit == "g"
    with pytest.raises(ParamsError, match="48828"):
        import_mat(path, str(tmp_path / "m.parquet"), site_id="x", fs=12000)
    with pytest.raises(ParamsError, match="1500"):
        import_mat(path, str(tmp_path / "m.parquet"), site_id="x", rpm=1800)


def test_not_a_mat_file_is_a_data_error_naming_it(tmp_path):
    bad = tmp_path / "junk.mat"
    bad.write_bytes(b"this is not MATLAB" * 20)
    with pytest.raises(DataError) as e:
        import_mat(str(bad), str(tmp_path / "o.parquet"), site_id="x", fs=1000)
    assert "junk.mat" in str(e.value)


def test_mat_without_signals_lists_what_it_found(tmp_path):
    path = tmp_path / "other.mat"
    sio.savemat(str(path), {"foo": np.arange(10.0), "bar": 3})
    with pytest.raises(DataError) as e:
        import_mat(str(path), str(tmp_path / "o.parquet"), site_id="x", fs=1000)
    assert "other.mat" in str(e.value) and "no recognisable signal" in str(e.value)
    assert "'foo'" in str(e.value)


def test_cwru_like_file_with_two_records_is_resolved_by_its_name(tmp_path):
    x = np.random.default_rng(0).standard_normal((3000, 1))
    path = tmp_path / "99.mat"
    sio.savemat(str(path), {"X098_DE_time": x, "X099_DE_time": 2 * x, "X099RPM": np.uint16(1750)})
    lay = import_mat(str(path), str(tmp_path / "o.parquet"), site_id="x", fs=12000)
    assert lay.machine["shaft_hz"] == pytest.approx(1750 / 60)
    with TelemetryFile(str(tmp_path / "o.parquet")) as tf:
        got = read_all(tf, ["drive_end"])[1]["drive_end"]
    np.testing.assert_array_equal(got, 2 * x.ravel())
    sio.savemat(str(tmp_path / "mixed.mat"), {"X098_DE_time": x, "X099_DE_time": x})
    with pytest.raises(DataError, match="cannot tell which"):
        import_mat(str(tmp_path / "mixed.mat"), str(tmp_path / "o.parquet"), site_id="x", fs=12000)


def test_bearing_options():
    with pytest.raises(ParamsError) as e:
        bearing_from_options("SKF 1234")
    assert "SKF 6205-2RS JEM" in str(e.value) and "MFPT test bearing" in str(e.value)
    geo = bearing_from_options(geometry="8,0.235,1.245,0")
    assert geo.bpfo == pytest.approx(bearing_from_options("mfpt").bpfo)
    mult = bearing_from_options(multipliers="3.5848,5.4152,2.3574,0.39828")
    assert mult.bpfi == 5.4152
    with pytest.raises(ParamsError, match="comma-separated"):
        bearing_from_options(geometry="8,0.2")
    with pytest.raises(ParamsError, match="one way"):
        bearing_from_options("mfpt", multipliers="1,2,3,0.4")


# -- CSV ------------------------------------------------------------------------------

IMS_ARGS = ["--timestamp-column", "", "--timestamp-format", "%Y.%m.%d.%H.%M.%S", "--role",
            "vibration", "--unit", "g"]


@needs_data
def test_ims_csv_round_trip(tmp_path):
    out = str(tmp_path / "ims.parquet")
    assert cli(["import", "csv", str(IMS_CSV), "--site-id", "ims-2", "--region", "us-east",
                "--names", "bearing_1,bearing_2,bearing_3,bearing_4", "--rpm", "2000",
                "--bearing", "Rexnord ZA-2115", "--out", out, *IMS_ARGS]) == 0
    with open(IMS_CSV, newline="") as f:
        rows = list(csv.reader(f))[1:]
    names = [f"bearing_{i}" for i in range(1, 5)]
    check_schema(out, names)
    with TelemetryFile(out) as tf:
        lay = tf.layout
        assert tf.rows == len(rows) == 984
        assert lay.sample_rate_hz == pytest.approx(1 / 600, rel=1e-12)
        assert [(c.name, c.role, c.unit) for c in lay.channels] == [(n, "vibration", "g") for n in names]
        assert lay.machine["bearing"]["name"] == "Rexnord ZA-2115"
        assert lay.machine["shaft_hz"] == pytest.approx(2000 / 60)
        assert (tf.site_id, tf.region) == ("ims-2", "us-east")
        ts, cols = read_all(tf, names)
    for i, n in enumerate(names):
        np.testing.assert_array_equal(cols[n], [float(r[i + 1]) for r in rows])
    first = datetime.strptime(rows[0][0], "%Y.%m.%d.%H.%M.%S").replace(tzinfo=timezone.utc)
    assert ts[0] == int(first.timestamp()) * 10**9
    assert set(np.diff(ts)) == {600 * 10**9}


@needs_data
def test_csv_default_names_are_sanitised_headers(tmp_path):
    rec = read_csv(str(IMS_CSV), timestamp_column="#0", timestamp_format="%Y.%m.%d.%H.%M.%S",
                   roles=["vibration", "ch_1=acoustic"], units=["g"])
    assert [c.name for c, _ in rec.channels] == ["ch_0", "ch_1", "ch_2", "ch_3"]
    assert [c.role for c, _ in rec.channels] == ["vibration", "acoustic", "vibration", "vibration"]


def write_csv(tmp_path, text, name="t.csv"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_csv_iso_timestamps_and_selected_columns(tmp_path):
    path = write_csv(tmp_path, "time,Temp (C),note,Flow\n2024-01-01T00:00:00,20.5,a,1\n"
                               "2024-01-01T00:00:02,20.7,b,\n2024-01-01T00:00:04,20.9,c,3\n")
    lay = import_csv(path, str(tmp_path / "o.parquet"), site_id="s", timestamp_column="time",
                     columns=["Temp (C)", "Flow"], roles=["temp_c=bearing_temperature", "flow=coolant_flow"],
                     units=["temp_c=degC"])
    assert [(c.name, c.role, c.unit) for c in lay.channels] == [
        ("temp_c", "bearing_temperature", "degC"), ("flow", "coolant_flow", "")]
    assert lay.sample_rate_hz == pytest.approx(0.5)
    with TelemetryFile(str(tmp_path / "o.parquet")) as tf:
        flow = read_all(tf, ["flow"])[1]["flow"]
    assert flow[0] == 1.0 and np.isnan(flow[1])


@pytest.mark.parametrize("text, options, error, words", [
    ("t,a\n3,1\n2,2\n4,3\n", {}, DataError, ["do not increase", "row 2"]),
    ("t,a\n2004.02.12.10.32.39,1\nyesterday,2\n", {"timestamp_format": "%Y.%m.%d.%H.%M.%S"},
     DataError, ["'yesterday'", "row 2"]),
    ("t,a\nmonday,1\ntuesday,2\n", {}, DataError, ["ISO 8601", "--timestamp-format"]),
    ("t,a,b\n1,1,x\n2,2,y\n", {}, DataError, ["'b' is not numeric"]),
    ("t,a\n1,1\n2,2\n", {"timestamp_column": "time"}, DataError, ["no column 'time'", "['t', 'a']"]),
    ("t,a,b\n1,1,1\n2,2,2\n", {"names": ["x"]}, ParamsError, ["1 names for 2 value columns"]),
    ("t,a\n1,1\n2,2\n", {"roles": []}, ParamsError, ["no role"]),
    ("t,a\n1,1\n2,2\n", {"roles": ["zz=vibration"]}, ParamsError, ["names no channel"]),
    ("t,a\n1,1\n", {}, DataError, ["at least 2"]),
])
def test_csv_bad_input(tmp_path, text, options, error, words):
    path = write_csv(tmp_path, text, name="bad.csv")
    options = {"roles": ["vibration"], **options}
    with pytest.raises(error) as e:
        read_csv(path, **options)
    for w in ["bad.csv", *words]:
        assert w in str(e.value)


def test_csv_bearing_without_shaft_speed_is_refused(tmp_path):
    path = write_csv(tmp_path, "t,a\n1,1\n2,2\n3,3\n")
    with pytest.raises(ParamsError, match="--rpm"):
        import_csv(path, str(tmp_path / "o.parquet"), site_id="s", roles=["vibration"],
                   bearing=bearing_from_options("mfpt"))
