"""Memory does not grow with the file's length: a full hour (3.6 million rows) analysed in a
subprocess whose address space is capped."""

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from telemetry_lab.generate import fleet_specs, write_site

#: Address-space cap (virtual memory, MiB). The file's 24 float64 channels alone are 691 MB
#: and the interpreter with numpy, scipy and pyarrow maps about 500 MB before reading
#: anything: a whole-file analysis cannot fit.
CAP_MB = 1300

PROBE = """
import json, re, resource, sys
def peak_rss_mb():
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent (pytest) at fork.
    status = open("/proc/self/status").read()
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) / 1024


cap = int(sys.argv[2]) * 2**20
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
from telemetry_lab import AnalysisParams, analyse_file
doc = analyse_file(sys.argv[1], AnalysisParams())
print(json.dumps({"rows": doc["rows"], "events": len(doc["events"]),
                  "peak_rss_mb": peak_rss_mb()}))
"""


@pytest.mark.slow
def test_hour_long_file_is_analysed_under_a_memory_cap(tmp_path):
    spec = fleet_specs(1, 3_600_000, seed=5, anomaly_rate=1.0)[0]
    path = write_site(spec, str(tmp_path))
    assert pq.ParquetFile(path).metadata.num_rows == 3_600_000
    proc = subprocess.run([sys.executable, "-c", PROBE, path, str(CAP_MB)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["rows"] == 3_600_000
    # The bound on resident memory (about 340 MB measured): the channels alone
    # would take 691 MB if the file were held whole.
    print(f"peak RSS {out['peak_rss_mb']:.0f} MB under a {CAP_MB} MB address-space cap")
    assert out["peak_rss_mb"] < 500
