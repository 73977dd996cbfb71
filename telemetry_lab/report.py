"""Incident reports: a schema, pluggable backends, and the rule-based default.

A backend turns a result document (statistics, events, spectra, faults) into the report
described by ``schemas/report.schema.json``. Every report is validated against that schema
before it is attached; the attached report also records who made it under
``generated_by``.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from importlib import resources
from typing import Callable

import jsonschema

from .errors import ReportError

RISKS = ("low", "moderate", "high", "critical")
HEALTH_FOR_RISK = {"low": "healthy", "moderate": "degraded", "high": "at_risk", "critical": "critical"}

Backend = Callable[[dict], dict]
_BACKENDS: dict[str, Callable[[], Backend]] = {}


def register_backend(name: str, factory: Callable[[], Backend]) -> None:
    """Make a report backend available by name; ``factory()`` is called on first use."""
    _BACKENDS[name] = factory


@lru_cache(maxsize=None)
def report_schema() -> dict:
    return json.loads(resources.files(__package__).joinpath("schemas/report.schema.json").read_text())


def validate_report(report: dict) -> None:
    """Raise :class:`ReportError` unless ``report`` satisfies the report schema."""
    validator = jsonschema.Draft202012Validator(report_schema())
    errors = sorted(validator.iter_errors(report), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.path) or "(top level)"
        raise ReportError(f"report fails its schema at {where}: {e.message}")


def make_report(doc: dict, *, backend: str = "rules") -> dict:
    """The validated report for a result document, with ``generated_by`` recorded."""
    if backend == "bedrock" and backend not in _BACKENDS:
        from . import bedrock  # noqa: F401  (registers itself; boto3 loads on first call)
    try:
        factory = _BACKENDS[backend]
    except KeyError:
        raise ReportError(f"unknown report backend {backend!r}; known: {sorted(_BACKENDS)}") from None
    produced = factory()(doc)
    meta = produced.pop("generated_by", None) or {"backend": backend}
    validate_report(produced)
    return {**produced, "generated_by": meta}


# -- the rule-based reporter -----------------------------------------------------------

#: Limits by role, applied only when the channel's unit matches. Vibration follows the
#: ISO 10816-3 velocity zones (RMS, mm/s) for medium machines on rigid foundations.
LIMITS = {
    "vibration": {"unit": "mm/s", "stat": "rms", "high_is_bad": True,
                  "moderate": 2.8, "high": 4.5, "critical": 7.1},
    "bearing_temperature": {"unit": "degC", "stat": "max", "high_is_bad": True,
                            "moderate": 75.0, "high": 85.0, "critical": 95.0},
    "oil_pressure": {"unit": "bar", "stat": "min", "high_is_bad": False,
                     "moderate": 2.5, "high": 2.0, "critical": 1.0},
}

#: Which risk a fault bit raises, and how far.
FAULT_RISKS = {
    "bearing_overtemp": ("thermal_risk", "high"),
    "low_oil_pressure": ("lubrication_risk", "high"),
    "coolant_flow_low": ("thermal_risk", "moderate"),
    "motor_overcurrent": ("thermal_risk", "moderate"),
    "vibration_high": ("bearing_wear_risk", "high"),
}

RISK_FOR_ROLE = {
    "vibration": "bearing_wear_risk",
    "bearing_temperature": "thermal_risk",
    "oil_pressure": "lubrication_risk",
    "coolant_flow": "thermal_risk",
    "motor_current": "thermal_risk",
}


def _worse(a: str, b: str) -> str:
    return a if RISKS.index(a) >= RISKS.index(b) else b


def _level(value: float, lim: dict) -> str:
    level = "low"
    for name in ("moderate", "high", "critical"):
        hit = value >= lim[name] if lim["high_is_bad"] else value <= lim[name]
        if hit:
            level = name
    return level


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def _duration(samples: int, fs: float | None) -> str:
    if not fs:
        return f"{samples} samples"
    s = samples / fs
    if s >= 2 * 86400:
        return f"{s / 86400:.1f} days"
    if s >= 2 * 3600:
        return f"{s / 3600:.1f} h"
    return f"{s:.1f} s" if s >= 1 else f"{s * 1000:.0f} ms"


def rules_report(doc: dict) -> dict:
    """Deterministic report from the numbers alone; no network, same input same output."""
    risks = {"bearing_wear_risk": "low", "lubrication_risk": "low", "thermal_risk": "low"}
    findings: list[tuple[int, str]] = []  # (severity rank, text)
    actions: list[tuple[int, str]] = []
    stats = doc["sensor_stats"]
    fs = doc.get("sample_rate_hz")
    threshold = doc["params"]["z_threshold"]

    def raise_risk(risk: str, level: str):
        risks[risk] = _worse(risks[risk], level)

    for name, st in stats.items():
        lim = LIMITS.get(st["role"])
        if not lim or st.get("unit") != lim["unit"] or st["count"] == 0:
            continue
        # hypot: the squares of a level near 1e200 overflow a Python float (OverflowError).
        value = math.hypot(st["std"], st["mean"]) if lim["stat"] == "rms" else st[lim["stat"]]
        level = _level(value, lim)
        if level != "low":
            risk = RISK_FOR_ROLE[st["role"]]
            raise_risk(risk, level)
            label = st.get("label") or name
            findings.append((RISKS.index(level),
                             f"{label} ({name}) {lim['stat']} {_fmt(value)} {st['unit']}: {level}"))

    # Events: a few marginal one-sample excursions are noise; sustained or strong ones count.
    by_channel: dict[str, list[dict]] = {}
    for ev in doc["events"]:
        by_channel.setdefault(ev["channel"], []).append(ev)
    min_sustained = max(1, int(0.05 * fs)) if fs else 50
    for name, evs in by_channel.items():
        st = stats.get(name, {})
        strong = [e for e in evs if e["peak_z"] >= 2 * threshold or e["samples"] >= min_sustained]
        if not strong:
            continue
        worst = max(strong, key=lambda e: e["peak_z"])
        risk = RISK_FOR_ROLE.get(st.get("role"))
        level = "high" if worst["peak_z"] >= 4 * threshold or worst["samples"] >= 10 * min_sustained else "moderate"
        if risk:
            raise_risk(risk, level)
        label = st.get("label") or name
        total = st.get("event_count", len(evs))
        findings.append((RISKS.index(level),
                         f"{label} ({name}): {len(strong)} significant of {total} events, "
                         f"strongest z {worst['peak_z']:.1f} lasting {_duration(worst['samples'], fs)}"))

    for fault, info in doc.get("faults", {}).items():
        if not info["samples"]:
            continue
        risk, level = FAULT_RISKS.get(fault, (None, "moderate"))
        if risk:
            raise_risk(risk, level)
        findings.append((RISKS.index(level) if risk else 1,
                         f"fault flag {fault} set for {_duration(info['samples'], fs)}"))

    bearing_doc = doc.get("bearing")
    bearing_level = "low"
    if bearing_doc and bearing_doc.get("channels"):
        from .bearing import report_rule

        bearing_level, b_findings, b_actions = report_rule(bearing_doc["channels"])
        raise_risk("bearing_wear_risk", bearing_level)
        findings += [(RISKS.index(bearing_level), f) for f in b_findings]
        actions += [(RISKS.index(bearing_level), a) for a in b_actions]

    vibration_events = [e for e in doc["events"]
                        if stats.get(e["channel"], {}).get("role") == "vibration"
                        and (e["peak_z"] >= 2 * threshold or e["samples"] >= min_sustained)]
    vibration_anomaly = (bool(vibration_events) or bearing_level != "low"
                         or doc.get("faults", {}).get("vibration_high", {}).get("samples", 0) > 0)

    site = doc.get("site_id") or "the site"
    advice = {
        "bearing_wear_risk": "inspect the bearings and their mounting (vibration analysis, looseness, imbalance)",
        "lubrication_risk": "check oil pressure, oil level and the lubrication pump",
        "thermal_risk": "check bearing cooling, coolant flow and motor load",
    }
    urgency = {"moderate": "at the next scheduled visit", "high": "within 24 hours",
               "critical": "now; consider stopping the machine"}
    for risk, level in risks.items():
        if level != "low":
            actions.append((RISKS.index(level), f"{advice[risk].capitalize()} at {site} {urgency[level]}"))

    worst_risk = max(risks.values(), key=RISKS.index)
    health = HEALTH_FOR_RISK[worst_risk]
    if health == "healthy" and vibration_anomaly:
        health = "degraded"
    if not actions:
        actions.append((0, "No action needed; keep routine monitoring"))
    if not findings:
        findings.append((0, "All channels within limits; no significant anomaly events"))

    total = sum(st["count"] + st["missing"] for st in stats.values())
    missing = sum(st["missing"] for st in stats.values())
    missing_share = missing / total if total else 1.0
    duration_s = doc["rows"] / fs if fs else 0
    if missing_share > 0.05 or duration_s < 10:
        confidence = "low"
    elif missing_share > 0 or duration_s < 60:
        confidence = "medium"
    else:
        confidence = "high"
    if missing:
        findings.append((1, f"{missing_share:.2%} of samples missing (NaN); left out of the analysis"))

    rank = lambda items: [text for _, text in sorted(items, key=lambda p: -p[0])]
    return {
        "equipment_health": health,
        **risks,
        "vibration_anomaly": vibration_anomaly,
        "key_findings": [t[:240] for t in rank(findings)[:12]],
        "recommended_actions": [t[:240] for t in rank(actions)[:8]],
        "confidence": confidence,
        "generated_by": {"backend": "rules", "fallback": False},
    }


register_backend("rules", lambda: rules_report)
