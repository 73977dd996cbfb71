"""Every kind of bad input gets a clear one-line error naming the file and the fault."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from telemetry_lab import AnalysisParams, analyse_file
from telemetry_lab.analysis import analyse
from telemetry_lab.errors import DataError, ManifestError, StorageError
from telemetry_lab import manifest as manifest_mod

from conftest import corrupt_page, fleet_channels, write_telemetry

PARAMS = AnalysisParams.preset("seed").replace(window=100, welch_nperseg=256)


@pytest.fixture
def good(tmp_path):
    return write_telemetry(tmp_path / "good.parquet", fleet_channels(3000))


def make_bad(kind, tmp_path, good) -> tuple[str, str]:
    """A bad file of the given kind and a fragment its error message must contain."""
    path = tmp_path / f"{kind}.parquet"
    if kind == "truncated":
        data = open(good, "rb").read()
        path.write_bytes(data[: len(data) // 2])
        return str(path), "not a readable parquet file"
    if kind == "corrupt":
        data = bytearray(open(good, "rb").read())
        meta = pq.ParquetFile(good).metadata
        col = meta.row_group(0).column(5)
        start = col.data_page_offset
        data[start + 8:start + 400] = b"\xff" * 392
        path.write_bytes(bytes(data))
        return str(path), "corrupt"
    if kind == "not_parquet":
        path.write_text("timestamp,value\n1,2\n")
        return str(path), "not a readable parquet file"
    if kind == "empty_file":
        path.write_bytes(b"")
        return str(path), "not a readable parquet file"
    if kind == "no_rows":
        table = pq.read_table(good).slice(0, 0)
        pq.write_table(table, path)
        return str(path), "no rows"
    if kind == "missing_column":
        table = pq.read_table(good).drop_columns(["sensor_12"])
        pq.write_table(table, path)
        return str(path), "missing required column 'sensor_12'"
    if kind == "wrong_dtype":
        table = pq.read_table(good)
        i = table.schema.get_field_index("sensor_03")
        table = table.set_column(i, "sensor_03", pa.array(np.arange(table.num_rows)))
        pq.write_table(table, path)
        return str(path), "'sensor_03' has type int64, expected float64"
    if kind == "string_timestamps":
        table = pq.read_table(good)
        i = table.schema.get_field_index("timestamp_ns")
        table = table.set_column(i, "timestamp_ns", pa.array([str(v) for v in range(table.num_rows)]))
        pq.write_table(table, path)
        return str(path), "'timestamp_ns' has type string"
    if kind == "shorter_than_window":
        write_telemetry(path, fleet_channels(50))
        return str(path), "fewer than the rolling window"
    if kind == "backwards_time":
        table = pq.read_table(good)
        ts = table.column("timestamp_ns").to_numpy().copy()
        ts[1500] = ts[10]
        table = table.set_column(0, "timestamp_ns", pa.array(ts))
        pq.write_table(table, path)
        return str(path), "not strictly increasing at row 1500"
    if kind == "all_nan_channel":
        chans = fleet_channels(3000)
        chans["sensor_20"][:] = np.nan
        write_telemetry(path, chans)
        return str(path), "sensor_20"
    if kind == "missing":
        return str(tmp_path / "missing.parquet"), "no such file"
    if kind == "overflowing_values":
        chans = fleet_channels(3000)
        chans["sensor_12"][700] = 1e200  # a glitch whose square is not a float64
        write_telemetry(path, chans)
        return str(path), "sensor_12"
    if kind == "bad_utf8_footer":
        table = pq.read_table(good).append_column("zzmarkerzz", pa.array(np.zeros(3000)))
        pq.write_table(table, path)
        path.write_bytes(path.read_bytes().replace(b"zzmarkerzz", b"\xff\xfemarker\xff\xfe"))
        return str(path), "not a readable parquet file"
    raise AssertionError(kind)


BAD_KINDS = ["truncated", "corrupt", "not_parquet", "empty_file", "no_rows", "missing_column",
             "wrong_dtype", "string_timestamps", "shorter_than_window", "backwards_time",
             "all_nan_channel", "missing", "overflowing_values", "bad_utf8_footer"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_file_raises_clear_error_naming_the_file(kind, tmp_path, good):
    path, fragment = make_bad(kind, tmp_path, good)
    with pytest.raises((DataError, StorageError)) as info:
        analyse_file(path, PARAMS)
    message = str(info.value)
    assert path in message and fragment in message
    assert "\n" not in message


def test_file_too_short_for_the_robust_reference(tmp_path):
    path = write_telemetry(tmp_path / "short.parquet", fleet_channels(60))
    with pytest.raises(DataError, match="too few to build a reference") as info:
        analyse_file(path, AnalysisParams().replace(welch_nperseg=256))
    assert str(path) in str(info.value)


def test_a_glitch_whose_energy_overflows_is_a_clear_error(tmp_path):
    """The default preset scores vibration energy: 1e154 squared is finite, its variance
    is not. An infinite score would be an event JSON cannot hold."""
    chans = fleet_channels(5000)
    chans["sensor_00"][2500] = 1e154
    path = write_telemetry(tmp_path / "glitch.parquet", chans)
    params = AnalysisParams.preset("default").replace(window=100, min_reference=50,
                                                      welch_nperseg=256)
    with pytest.raises(DataError, match="too large to score in float64") as info:
        analyse_file(path, params)
    assert path in str(info.value) and "sensor_00" in str(info.value)


@pytest.mark.parametrize("preset", ["seed", "default"])
def test_a_huge_glitch_on_a_vibration_channel_is_an_event_not_a_crash(tmp_path, preset):
    """Its fourth power overflows float64 (the bearing indicators); its square does not."""
    chans = fleet_channels(5000)
    chans["sensor_00"][2500] = 1e100
    path = write_telemetry(tmp_path / "glitch.parquet", chans)
    doc = analyse_file(path, AnalysisParams.preset(preset).replace(window=100, min_reference=50, welch_nperseg=256))
    at = doc["window"]["start_ns"] + 2500 * 1_000_000
    assert any(e["start_ns"] <= at <= e["end_ns"] for e in doc["events"] if e["channel"] == "sensor_00")
    assert doc["sensor_stats"]["sensor_00"]["max"] == 1e100
    json.dumps(doc, allow_nan=False)


def test_a_huge_constant_level_gets_a_report(tmp_path):
    """The report's vibration RMS of a level whose square overflows float64 (was an
    OverflowError from Python's float power)."""
    chans = fleet_channels(8192)
    chans["sensor_00"][:] = 2.0**600  # exactly summed, so its statistics are finite
    path = write_telemetry(tmp_path / "level.parquet", chans)
    doc = analyse_file(path, PARAMS)
    assert doc["sensor_stats"]["sensor_00"]["std"] == 0.0
    assert doc["report"]["equipment_health"] == "critical"
    json.dumps(doc, allow_nan=False)


@pytest.mark.parametrize("preset", ["seed", "default"])
def test_nan_samples_are_left_out_not_propagated(tmp_path, preset):
    chans = fleet_channels(5000)
    chans["sensor_09"][100:300] = np.nan
    chans["sensor_00"][[700, 3100]] = np.nan
    path = write_telemetry(tmp_path / "nan.parquet", chans)
    doc = analyse_file(path, AnalysisParams.preset(preset).replace(window=100, min_reference=50, welch_nperseg=256))
    st = doc["sensor_stats"]["sensor_09"]
    assert st["missing"] == 200 and st["count"] == 4800
    assert np.isfinite([st["mean"], st["std"], st["min"], st["max"]]).all()
    assert doc["spectral"]["sensor_00"]["skipped_segments"] > 0
    assert doc["spectral"]["sensor_00"]["dominant_hz"] is not None
    json.dumps(doc, allow_nan=False)
    assert any("missing" in f for f in doc["report"]["key_findings"])


def test_slice_with_every_bad_file_still_completes_the_good_ones(tmp_path, good):
    files = [good]
    for kind in BAD_KINDS:
        files.append(make_bad(kind, tmp_path, good)[0])
    good2 = shutil.copy(good, tmp_path / "good2.parquet")
    files.append(str(good2))
    manifest = manifest_mod.from_uris(str(tmp_path), files)
    manifest_path = tmp_path / "manifest.json"
    manifest_mod.save(manifest, str(manifest_path))
    results = tmp_path / "out"
    params_path = tmp_path / "params.json"
    PARAMS.save(str(params_path))
    proc = subprocess.run(
        [sys.executable, "-m", "telemetry_lab", "slice", "--manifest", str(manifest_path),
         "--results", str(results), "--run-id", "r1", "--params", str(params_path)],
        capture_output=True, text=True, timeout=120)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert sum(l.startswith("OK ") for l in lines) == 2
    assert sum(l.startswith("FAIL ") for l in lines) == len(BAD_KINDS)
    for kind in BAD_KINDS:
        record = json.loads((results / "results" / "r1" / "errors" / f"{kind}.json").read_text())
        assert record["file"].endswith(f"{kind}.parquet") and record["message"]
        assert not (results / "results" / "r1" / f"{kind}.json").exists()
    assert (results / "results" / "latest" / "good2.json").exists()
    leftovers = [p for p in results.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


def test_manifest_that_is_not_json(tmp_path):
    path = tmp_path / "m.json"
    path.write_text("files: [a, b]")
    with pytest.raises(ManifestError, match="not valid JSON") as info:
        manifest_mod.load(str(path))
    assert str(path) in str(info.value)


@pytest.mark.parametrize("doc,fragment", [
    ({"version": 2, "files": [], "total_files": 0}, "version 2"),
    ({"version": 1, "files": "x", "total_files": 0}, "'files' must be a list"),
    ({"version": 1, "files": [{"key": "a"}], "total_files": 1}, "files[0]"),
    ({"version": 1, "files": [{"bucket": "", "key": "a"}], "total_files": 3}, "total_files is 3"),
    ({"version": 1, "prefix": "", "bucket": "", "files": [{"bucket": "", "key": "x/a.parquet"},
                                             {"bucket": "", "key": "y/a.parquet"}],
      "total_files": 2}, "share result names"),
])
def test_malformed_manifest(tmp_path, doc, fragment):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ManifestError) as info:
        manifest_mod.load(str(path))
    assert fragment in str(info.value)


def test_cli_reports_missing_manifest_and_bad_params_with_exit_codes(tmp_path, good):
    run = lambda *a: subprocess.run([sys.executable, "-m", "telemetry_lab", *a],
                                    capture_output=True, text=True, timeout=60)
    p = run("slice", "--manifest", str(tmp_path / "none.json"), "--results", str(tmp_path / "o"))
    assert p.returncode == 4 and "none.json" in p.stderr and "Traceback" not in p.stderr
    bad = tmp_path / "params.json"
    bad.write_text('{"z_threshold": -2}')
    manifest_mod.save(manifest_mod.from_uris(str(tmp_path), [good]), str(tmp_path / "m.json"))
    p = run("slice", "--manifest", str(tmp_path / "m.json"), "--results", str(tmp_path / "o"),
            "--params", str(bad))
    assert p.returncode == 5 and "z_threshold=-2" in p.stderr and str(bad) in p.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("statistics", [True, False])
@pytest.mark.parametrize("preset", ["default", "seed"])
def test_infinite_samples_are_missing_not_blinding(tmp_path, preset, statistics):
    """Row groups whose footer statistics show finite bounds are not scanned for
    infinities; the others (an infinity in them, or no statistics) are."""
    chans = fleet_channels(20_000)
    chans["sensor_05"][100] = np.inf
    chans["sensor_05"][15_000:15_003] += 60 * 0.3
    chans["sensor_09"][7_000] = -np.inf
    path = write_telemetry(tmp_path / "inf.parquet", chans, write_statistics=statistics)
    stats = pq.ParquetFile(path).metadata.row_group(1).column(12).statistics
    assert (stats is not None and stats.has_min_max) is statistics
    doc = analyse_file(path, AnalysisParams.preset(preset))
    json.dumps(doc, allow_nan=False)
    for channel in ("sensor_05", "sensor_09"):
        stats = doc["sensor_stats"][channel]
        assert stats["missing"] == 1 and stats["count"] == 19_999
        assert np.isfinite([stats["min"], stats["max"], stats["mean"], stats["std"]]).all()
    # Sample 100 lies in the first of the three 8192-sample Welch segments only.
    assert doc["spectral"]["sensor_05"]["skipped_segments"] == 1
    assert doc["spectral"]["sensor_05"]["dominant_hz"] is not None
    assert any(e["channel"] == "sensor_05" for e in doc["events"])


@pytest.mark.parametrize("layout_json,fragment", [
    ('{"channels": [{"name": "sensor_00", "role": "vibration"}], "sample_rate_hz": "abc"}',
     "'sample_rate_hz' must be a number"),
    ('{"channels": [{"name": "sensor_00", "role": "vibration"}], "machine": "abc"}',
     "'machine' must be an object"),
    ('{"channels": [{"name": "sensor_00", "role": "vibration", "group": ["a"]}]}',
     "'group' must be a string"),
    ('{"channels": [{"name": "sensor_00", "role": "vibration"}], "timestamp_column": null}',
     "'timestamp_column' must be a column name"),
    ('{"channels": [{"name": "sensor_00", "role": "vibration"}], "sample_rate_hz": 1e999}',
     "must be positive"),
])
def test_malformed_layout_metadata_is_a_layout_error(tmp_path, layout_json, fragment):
    from telemetry_lab.layout import LAYOUT_METADATA_KEY

    table = pq.read_table(write_telemetry(tmp_path / "g.parquet", fleet_channels(3000)))
    path = tmp_path / "meta.parquet"
    pq.write_table(table.replace_schema_metadata({LAYOUT_METADATA_KEY: layout_json.encode()}), path)
    with pytest.raises(DataError, match=fragment) as info:
        analyse_file(str(path), PARAMS)
    assert str(path) in str(info.value)


def test_fifo_is_refused_not_waited_on(tmp_path):
    import os

    fifo = tmp_path / "pipe.parquet"
    os.mkfifo(fifo)
    with pytest.raises(StorageError, match="not a regular file"):
        analyse_file(str(fifo), PARAMS)


@pytest.mark.parametrize("key,fragment", [("/tmp/a\0b.parquet", "NUL"), ("/d/.parquet", "must not be empty")])
def test_manifest_rejects_unusable_names(tmp_path, key, fragment):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"version": 1, "bucket": "", "prefix": "/d",
                                "files": [{"bucket": "", "key": key}], "total_files": 1}))
    with pytest.raises(ManifestError, match=fragment):
        manifest_mod.load(str(path))


@pytest.mark.parametrize("args,fragment", [
    (["--workers", "-3"], "--workers=-3"),
    (["--seed", "-1"], "--seed=-1"),
    (["--anomaly-rate", "5"], "--anomaly-rate=5.0"),
    (["--rows", "1"], "--rows=1"),
])
def test_generate_rejects_bad_arguments_with_a_clear_error(tmp_path, args, fragment):
    # argparse keeps the last of a repeated option, so the bad value overrides the good one
    argv = ["generate", "--sites", "2", "--rows", "20000", "--out", str(tmp_path / "g"), "--quiet",
            *args]
    p = subprocess.run([sys.executable, "-m", "telemetry_lab", *argv], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 5 and fragment in p.stderr and "Traceback" not in p.stderr


def test_errors_name_the_row_even_when_small_row_groups_are_read_together(tmp_path):
    chans = fleet_channels(40_000)
    good = write_telemetry(tmp_path / "g.parquet", chans, row_group_rows=4096)
    table = pq.read_table(good)
    ts = table["timestamp_ns"].to_pylist()
    ts[9000] = None
    nulls = tmp_path / "null_ts.parquet"
    pq.write_table(table.set_column(0, "timestamp_ns", pa.array(ts, pa.int64())), nulls,
                   row_group_size=4096)
    with pytest.raises(DataError, match="missing value at row 9000"):
        analyse_file(str(nulls), PARAMS)
    corrupt = corrupt_page(good, tmp_path / "corrupt.parquet", 3, "sensor_11")
    with pytest.raises(DataError, match=r"corrupt data near row 12288 ") as info:
        analyse_file(corrupt, PARAMS)
    assert corrupt in str(info.value)


def test_a_file_deleted_after_it_was_opened_is_still_read_whole(tmp_path):
    import os

    from telemetry_lab.io import TelemetryFile

    path = write_telemetry(tmp_path / "g.parquet", fleet_channels(20_000))
    with TelemetryFile(path) as tf:
        os.unlink(path)
        rows = sum(len(c) for c in tf.iter_chunks(["sensor_00", "sensor_23"]))
    assert rows == 20_000


@pytest.mark.parametrize("flags,row,value", [
    (pa.int64(), 7000, -1),
    (pa.uint64(), 12_345, 1 << 40),
])
def test_flags_outside_a_32_bit_bitfield_are_an_error_not_dropped_bits(tmp_path, flags, row,
                                                                        value):
    table = pq.read_table(write_telemetry(tmp_path / "g.parquet", fleet_channels(20_000)))
    values = np.zeros(20_000, dtype=flags.to_pandas_dtype())
    values[row] = value
    path = tmp_path / "flags.parquet"
    pq.write_table(table.set_column(table.schema.get_field_index("status_flags"), "status_flags",
                                    pa.array(values, flags)), path)
    for threads in (1, 2):
        with pytest.raises(DataError, match=f"holds {value} at row {row}, not a 32-bit") as info:
            analyse(str(path), PARAMS, threads=threads)
        assert str(path) in str(info.value)


def test_signed_32_bit_flags_are_read_as_their_bits(tmp_path):
    table = pq.read_table(write_telemetry(tmp_path / "g.parquet", fleet_channels(20_000)))
    values = np.zeros(20_000, dtype=np.int32)
    values[100:110] = np.int32(-2**31)   # bit 31 only
    values[200] = -1                     # all 32 bits
    path = tmp_path / "flags.parquet"
    pq.write_table(table.set_column(table.schema.get_field_index("status_flags"), "status_flags",
                                    pa.array(values)), path)
    faults = analyse_file(str(path), PARAMS)["faults"]
    by_bit = {v["bit"]: v["samples"] for v in faults.values()}
    assert by_bit[31] == 11 and by_bit[0] == 1 and max(by_bit) == 31


def test_infinities_that_footer_statistics_deny_are_a_clear_error(tmp_path):
    """Row groups whose statistics give finite bounds are not scanned for infinities; a
    writer whose statistics lie gets the file refused, with the reason."""
    import struct

    chans = fleet_channels(10_000)
    chans["sensor_12"][100] = 5.0  # a value found nowhere else, patched below to +inf
    chans["sensor_12"][200] = 1e3
    path = write_telemetry(tmp_path / "lie.parquet", chans, compression="none",
                           use_dictionary=False)
    data = bytearray(open(path, "rb").read())
    at = bytes(data).find(struct.pack("<d", 5.0))
    assert at > 0 and bytes(data).count(struct.pack("<d", 5.0)) == 1
    data[at:at + 8] = struct.pack("<d", np.inf)
    open(path, "wb").write(bytes(data))
    stats = pq.ParquetFile(path).metadata.row_group(0).column(15).statistics
    assert stats.max == 1e3  # the footer still says finite
    with pytest.raises(DataError, match="infinite values in a row group whose footer") as info:
        analyse_file(path, AnalysisParams.preset("seed"))
    assert path in str(info.value) and "sensor_12" in str(info.value)


def with_ms_timestamps(tmp_path, values, *, mask=None, layout=None) -> str:
    """A good file whose timestamp column is replaced by ``values`` as timestamp[ms]."""
    table = pq.read_table(write_telemetry(tmp_path / "g.parquet", fleet_channels(len(values)),
                                          layout=layout))
    path = tmp_path / "ms.parquet"
    pq.write_table(table.set_column(0, "timestamp_ns",
                                    pa.array(values, pa.timestamp("ms"), mask=mask)), path,
                   row_group_size=4096)
    return str(path)


def ms_beyond_2262_from_row_7000() -> np.ndarray:
    ms = np.arange(20_000, dtype=np.int64) + 1_700_000_000_000
    ms[7_000:] += 10**13  # the year 2340
    return ms


@pytest.mark.parametrize("rate_in_layout", [False, True])
def test_millisecond_timestamps_beyond_2262_are_a_clear_error(tmp_path, rate_in_layout):
    """Read as nanoseconds they would overflow int64; the error names the row."""
    from telemetry_lab.layout import default_layout

    layout = default_layout().with_sample_rate(1000.0) if rate_in_layout else None
    path = with_ms_timestamps(tmp_path, ms_beyond_2262_from_row_7000(), layout=layout)
    for threads in (1, 2):
        with pytest.raises(DataError, match="holds 11700000007000 ms at row 7000, beyond the "
                                            "years 1677-2262") as info:
            analyse(path, PARAMS, threads=threads)
        assert path in str(info.value)


@pytest.mark.parametrize("earlier,expected", [
    ("null", "missing value at row 5000"),
    ("repeat", "not strictly increasing at row 5000"),
])
def test_the_first_bad_timestamp_is_named_though_the_sample_rate_is_inferred(
        tmp_path, earlier, expected):
    """Without a sample rate in the layout the first 100,001 timestamps are read first, to
    infer it: a later out-of-range value must not be reported before an earlier fault."""
    values = ms_beyond_2262_from_row_7000()
    mask = np.zeros(len(values), dtype=bool)
    if earlier == "null":
        mask[5_000] = True
    else:
        values[5_000] = values[4_999]
    path = with_ms_timestamps(tmp_path, values, mask=mask)
    for threads in (1, 2):
        with pytest.raises(DataError, match=expected):
            analyse(path, PARAMS, threads=threads)
