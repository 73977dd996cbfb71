import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from telemetry_lab.io import TelemetryFile

from conftest import fleet_channels, write_telemetry


@pytest.mark.parametrize("statistics", [True, False])
def test_site_and_region_are_the_first_row_group_labels(tmp_path, statistics):
    path = write_telemetry(tmp_path / "a.parquet", fleet_channels(5000), site_id="site-0042",
                           region="eu-north", write_statistics=statistics)
    with TelemetryFile(path) as tf:
        assert (tf.site_id, tf.region) == ("site-0042", "eu-north")


def test_labels_that_change_within_the_first_row_group_give_its_first_value(tmp_path):
    path = write_telemetry(tmp_path / "a.parquet", fleet_channels(5000))
    table = pq.read_table(path)
    sites = pa.array(["site-b"] * 10 + ["site-a"] * (len(table) - 10))
    regions = pa.array([None] * 3 + ["eu"] * (len(table) - 3))
    table = table.set_column(table.schema.get_field_index("site_id"), "site_id", sites)
    table = table.set_column(table.schema.get_field_index("region"), "region", regions)
    pq.write_table(table, path, row_group_size=4096)
    with TelemetryFile(path) as tf:
        assert tf.site_id == "site-b"  # not the statistics' minimum, "site-a"
        assert tf.region is None  # a null first value, whatever follows
