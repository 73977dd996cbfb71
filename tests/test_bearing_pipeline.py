"""Bearing diagnostics through the whole pipeline: import, analyse_file, incident report."""

import pytest

from telemetry_lab import AnalysisParams, analyse_file
from telemetry_lab.bearing import lookup_bearing
from telemetry_lab.importers import import_mat

from conftest import SHARED_DATA

CWRU = SHARED_DATA / "cwru"
pytestmark = pytest.mark.skipif(not CWRU.exists(), reason="../shared/data/cwru is not present")


@pytest.mark.parametrize("record,fs,defect,words", [
    ("105", 12000, "inner_race", "inner race"),
    ("130", 12000, "outer_race", "outer race"),
    ("97", 48000, "none", None),
])
def test_imported_cwru_record_gets_its_verdict_in_the_report(tmp_path, record, fs, defect, words):
    out = tmp_path / f"cwru-{record}.parquet"
    import_mat(str(CWRU / f"{record}.mat"), str(out), site_id=f"cwru-{record}", fs=fs,
               bearing=lookup_bearing("SKF 6205-2RS JEM"))
    doc = analyse_file(str(out), AnalysisParams())
    assert doc["bearing"]["verdict"]["defect"] == defect
    report = doc["report"]
    if words:
        assert report["bearing_wear_risk"] in ("high", "critical")
        assert any(words in f for f in report["key_findings"])
        assert any(words in a for a in report["recommended_actions"])
    else:
        assert report["bearing_wear_risk"] == "low"
        assert any("no bearing defect signature" in f for f in report["key_findings"])
