"""The default detector on a real, slow run-to-failure series (IMS bearing test 2)."""

from datetime import datetime, timezone

import pyarrow.parquet as pq
import pytest

from telemetry_lab import AnalysisParams, analyse_file
from telemetry_lab.importers import import_csv

from conftest import SHARED_DATA

IMS = SHARED_DATA / "ims" / "merged_dataset_BearingTest_2.csv"
pytestmark = pytest.mark.skipif(not IMS.exists(), reason="../shared/data/ims is not present")
PEAK_NS = int(datetime(2004, 2, 19, 5, 42, 39, tzinfo=timezone.utc).timestamp() * 1e9)


@pytest.fixture(scope="module")
def ims_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("ims") / "ims.parquet"
    import_csv(str(IMS), str(out), site_id="ims-test-2", timestamp_format="%Y.%m.%d.%H.%M.%S",
               names=["bearing_1", "bearing_2", "bearing_3", "bearing_4"], roles=["vibration"], units=["g"])
    return out


def first_flag_ns(doc, channel):
    starts = [e["start_ns"] for e in doc["events"] if e["channel"] == channel]
    return min(starts) if starts else None


def test_bearing_1_is_flagged_well_before_its_peak(ims_file):
    doc = analyse_file(str(ims_file), AnalysisParams())
    flagged = first_flag_ns(doc, "bearing_1")
    assert flagged is not None and flagged < PEAK_NS
    assert (PEAK_NS - flagged) / 3.6e12 > 24  # more than a day of warning
    # ... and bearing 1 is flagged before every other bearing.
    others = [first_flag_ns(doc, f"bearing_{i}") for i in (2, 3, 4)]
    assert all(o is None or flagged < o for o in others)


def test_the_dead_sensor_rows_at_the_end_do_not_cause_the_warning(ims_file, tmp_path):
    # The last two snapshots read ~0 g on every channel: the end of the test, not health.
    table = pq.read_table(ims_file)
    trimmed = tmp_path / "trimmed.parquet"
    pq.write_table(table.slice(0, table.num_rows - 2), trimmed)
    full = analyse_file(str(ims_file), AnalysisParams())
    cut = analyse_file(str(trimmed), AnalysisParams())
    assert first_flag_ns(cut, "bearing_1") == first_flag_ns(full, "bearing_1")
