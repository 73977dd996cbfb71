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


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_narrow_float_columns_are_read_as_float64_with_infinities_missing(tmp_path, dtype):
    """Half floats' footer statistics are raw bytes, not bounds: such columns are scanned."""
    chans = fleet_channels(5000)
    chans["sensor_03"][[10, 4500]] = [np.inf, -np.inf]
    path = write_telemetry(tmp_path / "a.parquet", chans)
    table = pq.read_table(path)
    for name in chans:
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, pa.array(np.asarray(chans[name], dtype=dtype)))
    pq.write_table(table, path, row_group_size=4096)
    with TelemetryFile(path) as tf:
        x = np.concatenate([c.columns["sensor_03"] for c in tf.iter_chunks(["sensor_03"])])
    assert x.dtype == np.float64 and len(x) == 5000
    assert np.isnan(x[[10, 4500]]).all() and np.isfinite(np.delete(x, [10, 4500])).all()


def test_labels_come_from_the_first_row_group_that_has_rows(tmp_path):
    path = write_telemetry(tmp_path / "a.parquet", fleet_channels(5000), site_id="site-7")
    table = pq.read_table(path)
    with pq.ParquetWriter(path, table.schema) as writer:
        writer.write_table(table.slice(0, 0))  # an empty row group first
        writer.write_table(table, row_group_size=4096)
    assert pq.ParquetFile(path).metadata.row_group(0).num_rows == 0
    with TelemetryFile(path) as tf:
        assert tf.site_id == "site-7"
