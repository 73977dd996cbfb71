import copy

import pytest

from telemetry_lab import AnalysisParams, analyse_file
from telemetry_lab.errors import ReportError
from telemetry_lab.report import make_report, register_backend, validate_report


@pytest.fixture(scope="module")
def docs(small_fleet):
    p = AnalysisParams()
    return {i: analyse_file(str(small_fleet["dir"] / f"site-{i:04d}.parquet"), p) for i in (0, 1)}


def test_clean_site_is_healthy_and_overheating_site_is_critical(docs):
    clean, hot = docs[0]["report"], docs[1]["report"]
    assert clean["equipment_health"] == "healthy" and clean["thermal_risk"] == "low"
    assert hot["equipment_health"] == "critical" and hot["thermal_risk"] == "critical"
    assert any("sensor_09" in f for f in hot["key_findings"])
    assert any("bearing_overtemp" in f for f in hot["key_findings"])
    assert "site-0001" in hot["recommended_actions"][0]


def test_reports_are_deterministic(docs, small_fleet):
    again = analyse_file(str(small_fleet["dir"] / "site-0001.parquet"), AnalysisParams())
    assert again["report"] == docs[1]["report"]


def test_low_oil_pressure_raises_lubrication_risk(docs):
    doc = copy.deepcopy(docs[0])
    doc["sensor_stats"]["sensor_13"]["min"] = 0.8
    doc["faults"]["low_oil_pressure"]["samples"] = 1200
    report = make_report(doc)
    assert report["lubrication_risk"] == "critical" and report["equipment_health"] == "critical"


def test_schema_rejects_a_malformed_report(docs):
    good = {k: v for k, v in docs[0]["report"].items() if k != "generated_by"}
    validate_report(good)
    with pytest.raises(ReportError, match="equipment_health.*'fine'"):
        validate_report({**good, "equipment_health": "fine"})
    with pytest.raises(ReportError, match="required"):
        validate_report({k: v for k, v in good.items() if k != "confidence"})


def test_backend_output_is_validated_before_it_is_attached(docs):
    register_backend("broken-for-test", lambda: (lambda doc: {"equipment_health": "meh"}))
    with pytest.raises(ReportError, match="schema"):
        make_report(docs[0], backend="broken-for-test")
    with pytest.raises(ReportError, match="unknown report backend"):
        make_report(docs[0], backend="nope")
