"""Shared fixtures: small generated sites and a writer for hand-made telemetry files."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

if os.environ.get("TELEMETRY_LAB_KERNELS"):
    # A build of the compiled kernels other than the installed one (test_kernels_portable
    # runs the kernel tests against the build without SIMD loops), loaded before any
    # module of the package imports its own.
    _spec = importlib.util.spec_from_file_location("telemetry_lab._kernels",
                                                   os.environ["TELEMETRY_LAB_KERNELS"])
    sys.modules["telemetry_lab._kernels"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["telemetry_lab._kernels"])

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from telemetry_lab.generate import Anomaly, SiteSpec, fleet_specs, generate
from telemetry_lab.layout import LAYOUT_METADATA_KEY, Layout

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def write_telemetry(path, channels: dict[str, np.ndarray], *, fs: float = 1000.0,
                    start_ns: int = 1_700_000_000_000_000_000, flags=None,
                    layout: Layout | None = None, site_id="site-x", region="test",
                    row_group_rows: int = 4096, **write_options) -> str:
    """Write a telemetry parquet file from arrays; embeds ``layout`` when given;
    ``write_options`` go to ``pyarrow.parquet.write_table``."""
    n = len(next(iter(channels.values())))
    ts = start_ns + np.arange(n, dtype=np.int64) * int(round(1e9 / fs))
    idx = pa.array(np.zeros(n, dtype=np.int32))
    cols = {
        "timestamp_ns": pa.array(ts),
        "site_id": pa.DictionaryArray.from_arrays(idx, pa.array([site_id])),
        "region": pa.DictionaryArray.from_arrays(idx, pa.array([region])),
    }
    cols.update({k: pa.array(np.asarray(v, dtype=np.float64)) for k, v in channels.items()})
    cols["status_flags"] = pa.array(np.zeros(n, np.uint32) if flags is None else flags.astype(np.uint32))
    table = pa.table(cols)
    if layout is not None:
        table = table.replace_schema_metadata({LAYOUT_METADATA_KEY: layout.to_json().encode()})
    pq.write_table(table, str(path), row_group_size=row_group_rows, **write_options)
    return str(path)


def fleet_channels(n: int, *, seed: int = 0) -> dict[str, np.ndarray]:
    """24 channels named like the fleet layout: noise around plausible baselines."""
    rng = np.random.default_rng(seed)
    base = [0.0] * 9 + [60.0] * 3 + [4.0] * 3 + [12.0] * 3 + [30.0] * 3 + [22.0, 45.0, 72.0]
    return {f"sensor_{i:02d}": b + rng.normal(0, 0.3, n) for i, b in enumerate(base)}


@pytest.fixture(scope="session")
def small_fleet(tmp_path_factory) -> dict:
    """Four generated sites of 20,000 rows; site-0001 has anomalies (overheat included)."""
    out = tmp_path_factory.mktemp("fleet")
    specs = fleet_specs(4, 20_000, seed=3, anomaly_rate=0.0)
    specs[1] = SiteSpec(**{**specs[1].__dict__, "anomalies": (
        Anomaly("overheat_ramp", "sensor_09", 5.0, 6.0, 400.0),
        Anomaly("spike", "sensor_13", 12.0, 0.002, 30.0),
    )})
    manifest = generate(specs, str(out), workers=2)
    return {"dir": out, "manifest": str(out / "manifest.json"), "specs": specs, "doc": manifest}


def read_json(path) -> dict:
    return json.loads(Path(path).read_text())


def corrupt_page(src, dst, row_group, column):
    """Copy of ``src`` with the first data page header of one column chunk overwritten."""
    md = pq.ParquetFile(src).metadata
    names = [md.schema.column(i).name for i in range(md.num_columns)]
    chunk = md.row_group(row_group).column(names.index(column))
    data = bytearray(open(src, "rb").read())
    data[chunk.data_page_offset:chunk.data_page_offset + 12] = b"\xff" * 12
    open(dst, "wb").write(data)
    return str(dst)
