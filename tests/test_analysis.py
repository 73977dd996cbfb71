import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from telemetry_lab import AnalysisParams, Channel, Layout, analyse_file
from telemetry_lab.analysis import RESULT_KEYS, analyse
from telemetry_lab.detect import flagged_runs
from telemetry_lab.layout import default_layout

from conftest import corrupt_page, fleet_channels, write_telemetry


def reference_events(x, ts, window, threshold):
    k = np.ones(window) / window
    mean = np.convolve(x, k, mode="same")
    var = np.convolve((x - mean) ** 2, k, mode="same")
    z = np.abs(x - mean) / np.sqrt(np.maximum(var, 1e-9))
    starts, stops = flagged_runs(z > threshold)
    return [(int(ts[s]), int(ts[e - 1])) for s, e in zip(starts, stops)]


def test_document_shape_and_json_ready(small_fleet):
    uri = str(small_fleet["dir"] / "site-0001.parquet")
    doc = analyse_file(uri, AnalysisParams.preset("seed"), run_id="r1")
    assert tuple(doc) == RESULT_KEYS
    assert doc["site_id"] == "site-0001" and doc["source"] == uri and doc["run_id"] == "r1"
    assert doc["rows"] == 20_000 and doc["sample_rate_hz"] == 1000.0
    assert doc["window"]["end_ns"] - doc["window"]["start_ns"] == 19_999 * 1_000_000
    assert set(doc["sensor_stats"]) == {f"sensor_{i:02d}" for i in range(24)}
    assert set(doc["spectral"]) == {f"sensor_{i:02d}" for i in range(9)}
    assert doc["faults"]["bearing_overtemp"]["samples"] > 0
    assert doc["report"]["equipment_health"] == "critical"
    assert doc["report"]["generated_by"]["backend"] == "rules"
    json.dumps(doc, allow_nan=False)


def test_seed_events_equal_direct_convolve_on_a_file(tmp_path):
    rng = np.random.default_rng(5)
    n = 30_000
    chans = fleet_channels(n, seed=5)
    for name in ("sensor_00", "sensor_12"):
        pos = rng.integers(0, n, 15)
        chans[name][pos] += rng.uniform(3, 6, 15)
    path = write_telemetry(tmp_path / "f.parquet", chans)
    doc = analyse_file(path, AnalysisParams.preset("seed").replace(chunk_rows=4096))
    ts = 1_700_000_000_000_000_000 + np.arange(n, dtype=np.int64) * 1_000_000
    for name, x in chans.items():
        ours = [(e["start_ns"], e["end_ns"]) for e in doc["events"] if e["channel"] == name]
        assert ours == reference_events(x, ts, 1000, 4.0), name


def test_glitches_and_large_levels_give_the_same_events_whatever_the_chunking(tmp_path):
    """A huge glitch or a large constant level must not leave running sums skewed, which
    would make the events depend on where frames start (chunk_rows)."""
    n = 60_000
    chans = fleet_channels(n, seed=8)
    chans["sensor_20"][[20_000, 45_000]] += 5
    chans["sensor_20"][10_000] = 1e15
    chans["sensor_21"] += 1e9
    chans["sensor_21"][40_000] += 5
    path = write_telemetry(tmp_path / "f.parquet", chans)
    ts = 1_700_000_000_000_000_000 + np.arange(n, dtype=np.int64) * 1_000_000
    seed = AnalysisParams.preset("seed")
    docs = [analyse_file(path, seed.replace(chunk_rows=rows)) for rows in (4096, 20_000, 131_072)]
    for name in ("sensor_20", "sensor_21"):
        with np.errstate(all="ignore"):
            expected = reference_events(chans[name], ts, 1000, 4.0)
        for doc in docs:
            ours = [(e["start_ns"], e["end_ns"]) for e in doc["events"] if e["channel"] == name]
            assert ours == expected, name


@pytest.mark.parametrize("preset", ["seed", "default"])
@pytest.mark.parametrize("n", [10_007, 33_333])
def test_chunked_equals_whole_file_with_events_at_borders_and_ends(tmp_path, n, preset):
    window = 500
    chunk = 2048
    rng = np.random.default_rng(n)
    chans = fleet_channels(n, seed=n)
    # A zero-mean channel: under the seed method's zero padding an offset channel can
    # never be flagged at the file's ends.
    x = chans["sensor_00"]
    # events straddling every chunk border, and at both ends of the file
    for border in range(chunk, n, chunk):
        x[border - 3:border + 4] += 8
    x[:3] += 8
    x[-3:] += 8
    chans["sensor_10"][rng.integers(0, n, 40)] = np.nan
    path = write_telemetry(tmp_path / "f.parquet", chans, row_group_rows=1000)
    base = AnalysisParams.preset(preset).replace(window=window)
    small = analyse(path, base.replace(chunk_rows=chunk))
    whole = analyse(path, base.replace(chunk_rows=max(2 * window, n + 1)))
    a, b = small.document, whole.document
    # Equal but for the last digit of z: running sums start at other places.
    strip = lambda evs: [{k: v for k, v in e.items() if k != "peak_z"} for e in evs]
    assert strip(a["events"]) == strip(b["events"])
    assert [e["peak_z"] for e in a["events"]] == pytest.approx([e["peak_z"] for e in b["events"]], rel=1e-9, abs=2e-6)
    t0 = a["window"]["start_ns"]
    crossing = [e for e in a["events"] if e["channel"] == "sensor_00"
                and any(e["start_ns"] <= t0 + (b - 3) * 1_000_000 and e["end_ns"] >= t0 + (b + 3) * 1_000_000
                        for b in range(chunk, n, chunk))]
    assert len(crossing) == len(range(chunk, n, chunk))
    assert any(e["channel"] == "sensor_00" and e["end_ns"] == a["window"]["end_ns"] for e in a["events"])
    if preset == "seed":  # the robust detector scores no sample before it has a reference
        assert any(e["channel"] == "sensor_00" and e["start_ns"] == t0 for e in a["events"])
    for name in a["sensor_stats"]:
        for key in ("count", "missing", "min", "max"):
            assert a["sensor_stats"][name][key] == b["sensor_stats"][name][key]
        for key in ("mean", "std"):
            assert a["sensor_stats"][name][key] == pytest.approx(b["sensor_stats"][name][key], rel=1e-12)
    for name in a["spectral"]:
        assert a["spectral"][name]["dominant_hz"] == b["spectral"][name]["dominant_hz"]
        assert a["spectral"][name]["total_power"] == pytest.approx(b["spectral"][name]["total_power"], rel=1e-12)
    np.testing.assert_allclose(small.psd["sensor_00"][1], whole.psd["sensor_00"][1], rtol=1e-12)
    assert a["faults"] == b["faults"]


def test_sample_rate_from_timestamps_without_layout_metadata(tmp_path):
    path = write_telemetry(tmp_path / "f.parquet", fleet_channels(5000), fs=250.0)
    doc = analyse_file(path, AnalysisParams().replace(window=100, min_reference=50, welch_nperseg=256))
    assert doc["sample_rate_hz"] == pytest.approx(250.0)


def test_file_with_its_own_layout_three_vibration_channels_at_12khz(tmp_path):
    fs = 12_000.0
    n = 24_000
    t = np.arange(n) / fs
    rng = np.random.default_rng(0)
    chans = {name: np.sin(2 * np.pi * f * t) + rng.normal(0, 0.1, n)
             for name, f in (("DE", 162.0), ("FE", 107.0), ("BA", 30.0))}
    layout = Layout(channels=tuple(Channel(n_, "vibration", "g") for n_ in chans),
                    sample_rate_hz=fs, flags_column=None, region_column=None)
    path = write_telemetry(tmp_path / "rig.parquet", chans, fs=fs, layout=layout)
    doc = analyse_file(path, AnalysisParams().replace(welch_nperseg=4096))
    assert doc["sample_rate_hz"] == fs
    assert doc["region"] is None and doc["faults"] == {}
    assert {k: round(v["dominant_hz"]) for k, v in doc["spectral"].items()} == pytest.approx(
        {"DE": 162, "FE": 107, "BA": 30}, abs=3)


def test_file_with_128_channels_at_10khz(tmp_path):
    n = 4000
    rng = np.random.default_rng(1)
    chans = {f"ch{i:03d}": rng.normal(size=n) for i in range(128)}
    layout = Layout(channels=tuple(Channel(k, "vibration" if i < 8 else "strain", "u")
                                   for i, k in enumerate(chans)), sample_rate_hz=10_000.0)
    path = write_telemetry(tmp_path / "wide.parquet", chans, fs=10_000.0, layout=layout)
    doc = analyse_file(path, AnalysisParams().replace(window=200, welch_nperseg=1024))
    assert len(doc["sensor_stats"]) == 128 and len(doc["spectral"]) == 8
    assert doc["sample_rate_hz"] == 10_000.0


def test_channel_selection(small_fleet):
    uri = str(small_fleet["dir"] / "site-0000.parquet")
    doc = analyse_file(uri, AnalysisParams().replace(channels=("sensor_00", "sensor_09")))
    assert set(doc["sensor_stats"]) == {"sensor_00", "sensor_09"}
    assert set(doc["spectral"]) == {"sensor_00"}


def test_default_layout_roles():
    lay = default_layout()
    assert [c.role for c in lay.channels[:9]] == ["vibration"] * 9
    assert lay.channel("sensor_12").unit == "bar"
    assert lay.fault_bits[0] == "bearing_overtemp"


def test_tiny_row_groups_give_the_same_document_as_large_ones(tmp_path):
    """Row groups of one row (read together) and a sample rate inferred from the
    timestamps across row groups, not from the first one alone."""
    chans = fleet_channels(3000, seed=4)
    chans["sensor_10"][1500:1510] += 5
    tiny = write_telemetry(tmp_path / "tiny.parquet", chans, row_group_rows=1)
    large = write_telemetry(tmp_path / "large.parquet", chans, row_group_rows=4096)
    params = AnalysisParams.preset("seed").replace(window=200, welch_nperseg=256)
    a, b = analyse_file(tiny, params), analyse_file(large, params)
    assert a["sample_rate_hz"] == b["sample_rate_hz"] == 1000.0
    assert a["events"] == b["events"] and len(a["events"]) > 0
    for name, st in a["sensor_stats"].items():
        numbers = ("count", "missing", "min", "max", "mean", "std")
        assert [st[k] for k in numbers] == pytest.approx([b["sensor_stats"][name][k] for k in numbers],
                                                         rel=1e-12)


@pytest.mark.parametrize("dup_row,bad_group,expected", [
    (5, 0, "corrupt data near row 0"),            # both in the first row group: read first
    (70_000, 4, "corrupt data near row 65536"),   # the read error is at the lower row
    (20_000, 3, "not strictly increasing at row 20000"),  # the timestamp error is
    # The primary lane reads row groups 0-3 as one chunk and finds the timestamp error in
    # it; the other lanes must still get the rows before it, and meet their read error.
    (40_000, 1, "corrupt data near row 16384"),
])
def test_two_faults_give_the_error_one_thread_meets_first_whatever_the_lanes(
        tmp_path, dup_row, bad_group, expected):
    from telemetry_lab.errors import DataError

    chans = fleet_channels(100_000)
    good = write_telemetry(tmp_path / "good.parquet", chans, row_group_rows=16_384)
    table = pq.read_table(good)
    ts = table["timestamp_ns"].to_numpy().copy()
    ts[dup_row] = ts[dup_row - 1]
    dup = tmp_path / "dup.parquet"
    pq.write_table(table.set_column(0, "timestamp_ns", pa.array(ts)), dup, row_group_size=16_384)
    # sensor_23 is read by the second lane when there are two.
    path = corrupt_page(dup, tmp_path / "both.parquet", bad_group, "sensor_23")
    for threads in (1, 2, 3):
        for _ in range(3):
            with pytest.raises(DataError, match=expected) as info:
                analyse(path, AnalysisParams.preset("seed"), threads=threads)
            assert path in str(info.value)


@pytest.mark.parametrize("bad_row,bad_group,expected", [
    (40_000, 1, "corrupt data near row 16384"),   # the read error is in an earlier group
    (10_000, 1, "at row 10000"),                  # the bad value comes first
    (16_384, 1, "corrupt data near row 16384"),   # same row: undecodable data ranks first
])
@pytest.mark.parametrize("fault", ["null timestamp", "64-bit flag"])
def test_a_bad_value_and_a_read_error_give_the_error_one_thread_meets_first(
        tmp_path, fault, bad_row, bad_group, expected):
    """Values the file must not hold are found by the primary lane, in chunks of several
    row groups; the error must not depend on that, nor on the number of lanes."""
    from telemetry_lab.errors import DataError

    good = write_telemetry(tmp_path / "good.parquet", fleet_channels(100_000), row_group_rows=16_384)
    table = pq.read_table(good)
    if fault == "null timestamp":
        ts = pa.array(table["timestamp_ns"].to_numpy(), mask=np.arange(len(table)) == bad_row)
        table = table.set_column(0, "timestamp_ns", ts)
    else:
        flags = np.zeros(len(table), np.int64)
        flags[bad_row] = 1 << 40
        table = table.set_column(table.schema.get_field_index("status_flags"), "status_flags",
                                 pa.array(flags))
    bad = tmp_path / "bad.parquet"
    pq.write_table(table, bad, row_group_size=16_384)
    path = corrupt_page(bad, tmp_path / "both.parquet", bad_group, "sensor_23")
    messages = set()
    for threads in (1, 2, 3, 5):
        with pytest.raises(DataError, match=expected) as info:
            analyse(path, AnalysisParams.preset("seed"), threads=threads)
        messages.add(str(info.value))
    assert len(messages) == 1 and path in messages.pop()


def test_every_number_of_lanes_gives_the_same_document_and_plots(tmp_path):
    """Row groups of uneven sizes: small ones read together, one read whole, one too long
    for that (read in batches); the lanes share the primary lane's timestamps."""
    chans = fleet_channels(340_123, seed=9)
    for row in (999, 65_535, 71_000, 339_990):  # events at chunk borders and the file's end
        for x in chans.values():
            x[row - 20:row + 20] += 9
    table = pq.read_table(write_telemetry(tmp_path / "even.parquet", chans))
    path = tmp_path / "uneven.parquet"
    with pq.ParquetWriter(path, table.schema) as writer:
        start = 0
        for rows in (1000, 7, 993, 69_000, 269_123):
            writer.write_table(table.slice(start, rows), row_group_size=rows)
            start += rows
    assert pq.ParquetFile(path).metadata.num_row_groups == 5
    params = AnalysisParams.preset("seed").replace(window=500, welch_nperseg=2048)
    runs = [analyse(str(path), params, threads=threads, trace_buckets=300)
            for threads in (1, 2, 3, 5)]
    docs = [{k: v for k, v in r.document.items() if k != "timings"} for r in runs]
    assert len(docs[0]["events"]) >= 4 * 24
    for run, doc in zip(runs[1:], docs[1:]):
        assert json.dumps(doc) == json.dumps(docs[0])
        for name, trace in run.traces.items():
            assert trace.__dict__ == runs[0].traces[name].__dict__


def test_shared_timestamps_reach_lanes_read_in_other_chunks():
    import threading

    from telemetry_lab.analysis import _SharedTimestamps

    ts = np.arange(50_000, dtype=np.int64) * 7

    def cuts(n, seed):  # chunks of 1 to 2,999 rows, other ones for each lane
        sizes = np.random.default_rng(seed).integers(1, 3000, 200)
        edges = np.unique(np.r_[0, np.cumsum(sizes)[np.cumsum(sizes) < n], n])
        return list(zip(edges[:-1], edges[1:]))

    board = _SharedTimestamps([1, 2, 3], ahead=2)
    got = {1: [], 2: [], 3: []}

    def reader(lane):
        for lo, hi in cuts(len(ts), lane):
            if lane == 3 and lo > 10_000:
                board.leave(3)  # a lane that failed: the others go on
                return
            got[lane].append(board.take(lane, int(lo), int(hi - lo)))
        board.leave(lane)

    threads = [threading.Thread(target=reader, args=(lane,)) for lane in got]
    for t in threads:
        t.start()
    held = []  # rows the board holds after each put
    for lo, hi in cuts(len(ts), 0):
        board.put(int(lo), ts[lo:hi])
        held.append(sum(len(c) for c in list(board._chunks.values())))
    board.close()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()
    assert np.array_equal(np.concatenate(got[1]), ts)
    assert np.array_equal(np.concatenate(got[2]), ts)
    assert np.array_equal(np.concatenate(got[3]), ts[:len(np.concatenate(got[3]))])
    assert not board._chunks  # all taken: nothing held
    # Bounded memory: chunks taken by every lane are forgotten (at most `ahead` chunks of
    # up to 3,000 rows, plus what the lane furthest behind asked for, up to 3,000).
    assert max(held) <= (2 + 1) * 3000 + 3000 < len(ts)


def test_shared_timestamps_end_where_the_primary_lane_stopped():
    from telemetry_lab.analysis import _SharedTimestamps

    board = _SharedTimestamps([1])
    board.put(0, np.arange(100))
    board.close()  # e.g. the next chunk's timestamps were not increasing
    assert np.array_equal(board.take(1, 0, 60), np.arange(60))
    assert board.take(1, 60, 60) is None  # past the rows that passed the checks


def test_ctrl_c_stops_every_lane_at_its_next_chunk(tmp_path):
    import os
    import signal

    path = write_telemetry(tmp_path / "long.parquet", fleet_channels(655_360),
                           row_group_rows=65_536)
    polls = []

    def should_stop():
        if not polls:
            os.kill(os.getpid(), signal.SIGINT)
        polls.append(1)
        return False

    with pytest.raises(KeyboardInterrupt):
        analyse(path, AnalysisParams.preset("seed"), threads=2, should_stop=should_stop)
    # Ten row groups per lane, 20 polls for the whole file; stopped at once, a lane
    # polls once or twice more.
    assert len(polls) <= 6
