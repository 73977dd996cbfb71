"""Scoring detected events against the generator's ground truth.

The generator writes, beside every ``<stem>.parquet``, a sidecar ``<stem>.truth.json``
listing the injected anomalies (channel, kind, ``start_ns``/``end_ns`` inclusive,
amplitude in noise standard deviations). This module matches a result document's events
to those anomalies and turns many (result, truth) pairs into a score table.

Matching rules (per file, per channel; see :data:`MATCHING_RULES`):

* An event and a truth *overlap* when they are on the same channel and their closed
  intervals ``[start_ns, end_ns]`` intersect once the truth is widened by ``tolerance_s``
  on each side. Touching boundaries count (an event ending exactly at a truth's start
  overlaps it).
* A truth is *detected* when at least one event overlaps it. Several events on one truth
  count one detection, and none of them is a false event.
* An event that overlaps at least one truth is a *true event*; an event spanning two
  truths is one true event that detects both.
* An event that overlaps no truth is a *false event*.
* Detection delay of a detected truth: start of the earliest overlapping event minus the
  truth's start, clipped at 0, in seconds.

Bearing defects (kinds in :data:`~telemetry_lab.generate.BEARING_KINDS`) last the whole
file and are judged by the bearing diagnosis, not by events (see :data:`BEARING_RULES`):
they are left out of event matching, and a truth is *detected* when the envelope verdict
of its channel (``result["bearing"]["channels"][channel]["verdict"]``) names its defect.
A verdict of ``none`` is a miss, another defect a *wrong defect*, no verdict (the channel
was not assessed) a miss too. Every assessed channel without a bearing truth whose verdict
names a defect is a *false call*; a file without bearing truths whose bearing verdict
names a defect is a *site-level false call*.

Result documents keep only the ``max_events_per_channel`` strongest events of a channel
while ``sensor_stats[channel]["event_count"]`` counts them all. Where a channel was
truncated, the events that were dropped cannot be matched; they are counted as false
events (they are the weakest, so this is what they almost always are) and the table says
how many channels this applied to. Recall is computed from the kept events only.

Everything here is a pure function of its inputs except :func:`evaluate_run` and
:func:`write_json`, which read and write storage.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from .errors import EXIT_DATA, EXIT_OK, DataError
from .generate import BEARING_KINDS

#: The matching rules, as recorded in every score table.
MATCHING_RULES = (
    "per channel; event and truth overlap when their closed [start_ns, end_ns] intervals "
    "intersect after widening the truth by tolerance_s on each side (touching counts); a "
    "truth is detected when any event overlaps it; several events on one truth are one "
    "detection and not false events; an event spanning several truths is one true event; "
    "an event overlapping no truth is a false event; delay = earliest overlapping event "
    "start - truth start, clipped at 0 s; unmatched events are attributed to a kind when "
    "every truth on their channel in that file is of that kind"
)

#: How bearing-defect truths are scored, as recorded in every score table.
BEARING_RULES = (
    "bearing defects are not matched to events; a truth is detected when the envelope verdict "
    "of its channel names its defect, missed when the verdict is none, a wrong defect when it "
    "names another, not assessed (a miss) when the channel has no verdict; every assessed "
    "channel without a bearing truth whose verdict names a defect is a false call; precision "
    "= detected / (detected + false calls + wrong defects); a file without bearing truths "
    "whose bearing verdict names a defect is a site-level false call"
)

#: Default widening of each truth interval, seconds. Rolling-window detectors react to the
#: return to normal at the end of a shift, burst or ramp (the change back is itself a
#: step), and centred windows flag a little before a step; one second covers a 2000-sample
#: window at 1 kHz, far shorter than the 20 s or more between benchmark anomalies.
DEFAULT_TOLERANCE_S = 1.0

#: Rows a "clean file" is normalised to in ``false_events_per_clean_500k_rows``.
CLEAN_ROWS_UNIT = 500_000

#: A kind whose truths have at most this many distinct amplitudes gets one bucket per
#: amplitude; beyond it (e.g. random fleets) amplitudes are binned by powers of two.
MAX_EXACT_AMPLITUDES = 8

#: The one bearing kind; false calls on clean channels could not be charged to one of
#: several, so a second kind needs a new rule (this unpacking then fails on import).
(_BEARING_KIND,) = BEARING_KINDS

_EVENT_KEYS = ("channel", "start_ns", "end_ns")
_TRUTH_KEYS = ("channel", "kind", "start_ns", "end_ns")


@dataclass(frozen=True)
class Match:
    """How the events of one file matched its truths.

    Attributes
    ----------
    truth_events : list of list of int
        For each truth (input order), the indices of the events overlapping it.
    event_truths : list of list of int
        For each event (input order), the indices of the truths it overlaps.
    delays_s : list of float or None
        For each truth, the detection delay in seconds, ``None`` if undetected.
    """

    truth_events: list[list[int]]
    event_truths: list[list[int]]
    delays_s: list[float | None]

    @property
    def detected(self) -> list[bool]:
        return [bool(ev) for ev in self.truth_events]

    @property
    def false_events(self) -> list[int]:
        """Indices of the events that overlap no truth."""
        return [i for i, t in enumerate(self.event_truths) if not t]


def _check_items(items, keys, what: str, source: str | None) -> None:
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or any(k not in item for k in keys):
            raise DataError(f"{what}[{i}] must have keys {list(keys)}, got {item!r:.120}",
                            file=source)
        if int(item["end_ns"]) < int(item["start_ns"]):
            raise DataError(f"{what}[{i}] ends before it starts: {item!r:.120}", file=source,
                            channel=item["channel"])


def match_events(events: Sequence[Mapping], truth_anomalies: Sequence[Mapping], *,
                 tolerance_s: float = DEFAULT_TOLERANCE_S, source: str | None = None) -> Match:
    """Match the events of one file to its injected anomalies (rules in the module doc).

    Parameters
    ----------
    events : sequence of dict
        Result-document events: ``channel``, ``start_ns``, ``end_ns`` (inclusive, ns).
    truth_anomalies : sequence of dict
        Truth-sidecar anomalies: ``channel``, ``kind``, ``start_ns``, ``end_ns`` (inclusive, ns).
    tolerance_s : float
        Each truth interval is widened by this on both sides before matching, seconds.
    source : str, optional
        File named in errors.

    Returns
    -------
    Match
    """
    if not (tolerance_s >= 0 and math.isfinite(tolerance_s)):
        raise DataError(f"tolerance_s={tolerance_s!r} must be a finite number >= 0", file=source)
    _check_items(events, _EVENT_KEYS, "events", source)
    _check_items(truth_anomalies, _TRUTH_KEYS, "anomalies", source)
    tol = int(round(tolerance_s * 1e9))
    truth_events: list[list[int]] = [[] for _ in truth_anomalies]
    event_truths: list[list[int]] = [[] for _ in events]
    by_channel: dict[str, tuple[list[int], list[int]]] = {}
    for i, e in enumerate(events):
        by_channel.setdefault(e["channel"], ([], []))[0].append(i)
    for j, t in enumerate(truth_anomalies):
        by_channel.setdefault(t["channel"], ([], []))[1].append(j)
    for ev_idx, tr_idx in by_channel.values():
        if not ev_idx or not tr_idx:
            continue
        es = np.array([int(events[i]["start_ns"]) for i in ev_idx], dtype=np.int64)
        ee = np.array([int(events[i]["end_ns"]) for i in ev_idx], dtype=np.int64)
        ts = np.array([int(truth_anomalies[j]["start_ns"]) for j in tr_idx], dtype=np.int64) - tol
        te = np.array([int(truth_anomalies[j]["end_ns"]) for j in tr_idx], dtype=np.int64) + tol
        # (truths x events) is small: a channel holds at most a few hundred truths and the
        # result keeps at most max_events_per_channel events.
        overlap = (es[None, :] <= te[:, None]) & (ee[None, :] >= ts[:, None])
        for a, b in zip(*np.nonzero(overlap)):
            truth_events[tr_idx[a]].append(ev_idx[b])
            event_truths[ev_idx[b]].append(tr_idx[a])
    delays: list[float | None] = []
    for j, hits in enumerate(truth_events):
        if hits:
            first = min(int(events[i]["start_ns"]) for i in hits)
            delays.append(max(0, first - int(truth_anomalies[j]["start_ns"])) / 1e9)
        else:
            delays.append(None)
    return Match(truth_events, event_truths, delays)


# -- aggregation -----------------------------------------------------------------------------

def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None:
        return None
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _delay_stats(delays: list[float]) -> dict:
    if not delays:
        return {"delay_median_s": None, "delay_p90_s": None}
    d = np.asarray(delays, dtype=float)
    return {"delay_median_s": float(np.median(d)), "delay_p90_s": float(np.percentile(d, 90))}


def _buckets(amplitudes: list[float]) -> list[tuple[float, float | None]]:
    """``(low, high)`` amplitude buckets; ``high`` is None for an exact-value bucket."""
    distinct = sorted(set(amplitudes))
    if len(distinct) <= MAX_EXACT_AMPLITUDES:
        return [(a, None) for a in distinct]
    lows = sorted({2.0 ** math.floor(math.log2(a)) for a in distinct})
    return [(lo, 2 * lo) for lo in lows]


def _in_bucket(a: float, bucket: tuple[float, float | None]) -> bool:
    lo, hi = bucket
    return a == lo if hi is None else lo <= a < hi


@dataclass
class _Tally:
    truths: int = 0
    detected: int = 0
    true_events: int = 0
    false_events: int = 0
    delays: list[float] = field(default_factory=list)
    chance: list[float | None] = field(default_factory=list)

    def row(self, *, with_precision: bool = True) -> dict:
        recall = _ratio(self.detected, self.truths)
        out = {"truths": self.truths, "detected": self.detected, "recall": recall}
        if with_precision:
            events = self.true_events + self.false_events
            precision = _ratio(self.true_events, events)
            out.update({"events": events, "true_events": self.true_events,
                        "false_events": self.false_events, "precision": precision,
                        "f1": _f1(precision, recall)})
        out["chance_recall"] = (sum(self.chance) / len(self.chance)
                                if self.chance and None not in self.chance else None)
        out.update(_delay_stats(self.delays))
        return out


def _chance(false_events: int, file_s: float | None, truth: Mapping, tol_s: float) -> float | None:
    """Probability that ``false_events`` placed at random over ``file_s`` seconds hit the
    (widened) truth: ``1 - exp(-rate * width)``."""
    if not file_s:
        return None
    width = (int(truth["end_ns"]) - int(truth["start_ns"])) / 1e9 + 2 * tol_s
    return 1.0 - math.exp(-false_events / file_s * width)


def _false_events_by_channel(events, m: Match, stats: Mapping) -> tuple[dict, dict]:
    """False events per channel (unmatched kept events plus the events that truncation
    dropped), and the number dropped per truncated channel."""
    false: dict[str, int] = {}
    for i in m.false_events:
        false[events[i]["channel"]] = false.get(events[i]["channel"], 0) + 1
    kept: dict[str, int] = {}
    for e in events:
        kept[e["channel"]] = kept.get(e["channel"], 0) + 1
    dropped: dict[str, int] = {}
    for ch, st in stats.items():
        total = st.get("event_count") if isinstance(st, Mapping) else None
        if total is not None and int(total) > kept.get(ch, 0):
            dropped[ch] = int(total) - kept.get(ch, 0)
            false[ch] = false.get(ch, 0) + dropped[ch]
    return false, dropped


@dataclass
class _BearingTally:
    # per truth: defect, amplitude, outcome (detected | missed | wrong_defect | not_assessed)
    truths: list[tuple[str, float, str]] = field(default_factory=list)
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    clean_channels: int = 0
    false_calls: int = 0
    clean_sites: int = 0
    site_false_calls: int = 0

    def add_file(self, result: Mapping, truths: Sequence[Mapping], source: str | None) -> None:
        """Score one file's bearing truths against its result's bearing verdicts."""
        bearing = result.get("bearing") or {}
        channels = bearing.get("channels") or {}
        for i, t in enumerate(truths):
            if "defect" not in t:
                raise DataError(f"anomalies: {t['kind']} on {t['channel']} names no defect: "
                                f"{t!r:.120}", file=source, channel=t["channel"])
            v = self._verdict(channels, t["channel"], source)
            if v is None:
                outcome, called = "not_assessed", "not_assessed"
            else:
                called = v["defect"]
                outcome = ("detected" if called == t["defect"] else
                           "missed" if called == "none" else "wrong_defect")
            self.truths.append((t["defect"], float(t.get("amplitude_sigma") or 0.0), outcome))
            self._count(t["defect"], called)
        with_truth = {t["channel"] for t in truths}
        assessed = False
        for ch in channels:
            v = self._verdict(channels, ch, source)
            if v is None:
                continue
            assessed = True
            if ch in with_truth:
                continue
            self.clean_channels += 1
            self.false_calls += v["defect"] != "none"
            self._count("none", v["defect"])
        if not truths and assessed:
            self.clean_sites += 1
            self.site_false_calls += (bearing.get("verdict") or {}).get("defect", "none") != "none"

    @staticmethod
    def _verdict(channels: Mapping, channel: str, source: str | None) -> Mapping | None:
        v = (channels.get(channel) or {}).get("verdict")
        if v is not None and not (isinstance(v, Mapping) and "defect" in v):
            raise DataError(f"bearing verdict of {channel} has no defect: {v!r:.120}",
                            file=source, channel=channel)
        return v

    def _count(self, truth: str, called: str) -> None:
        row = self.confusion.setdefault(truth, {})
        row[called] = row.get(called, 0) + 1

    def row(self) -> dict:
        outcomes = [o for _, _, o in self.truths]
        detected, wrong = outcomes.count("detected"), outcomes.count("wrong_defect")
        recall = _ratio(detected, len(outcomes))
        precision = _ratio(detected, detected + self.false_calls + wrong)
        out = {"truths": len(outcomes), "detected": detected, "recall": recall,
               "missed": outcomes.count("missed"), "wrong_defect": wrong,
               "not_assessed": outcomes.count("not_assessed"),
               "clean_channels": self.clean_channels, "false_calls": self.false_calls,
               "false_call_rate": _ratio(self.false_calls, self.clean_channels),
               "precision": precision, "f1": _f1(precision, recall),
               "clean_sites": self.clean_sites, "site_false_calls": self.site_false_calls,
               "site_false_call_rate": _ratio(self.site_false_calls, self.clean_sites),
               # injected defects first, the clean channels' row ("none") last
               "confusion": {t: dict(sorted(self.confusion[t].items())) for t in
                             sorted(self.confusion, key=lambda t: (t == "none", t))},
               "defects": {}}
        for defect in sorted({d for d, _, _ in self.truths}):
            hits = [o == "detected" for d, _, o in self.truths if d == defect]
            out["defects"][defect] = {"truths": len(hits), "detected": sum(hits),
                                      "recall": _ratio(sum(hits), len(hits))}
        buckets = _buckets([a for _, a, _ in self.truths])
        if len(buckets) > 1:
            out["amplitudes"] = []
            for b in buckets:
                mine = [o for _, a, o in self.truths if _in_bucket(a, b)]
                above = [o for _, a, o in self.truths if a >= b[0]]
                brow = {"amplitude_sigma": b[0]}
                if b[1] is not None:
                    brow["amplitude_below"] = b[1]
                brow.update({"truths": len(mine), "detected": mine.count("detected"),
                             "recall": _ratio(mine.count("detected"), len(mine)),
                             "wrong_defect": mine.count("wrong_defect"),
                             "recall_at_or_above": _ratio(above.count("detected"), len(above))})
                out["amplitudes"].append(brow)
        return out


def score(pairs: Iterable[tuple[Mapping, Mapping]], *,
          tolerance_s: float = DEFAULT_TOLERANCE_S) -> dict:
    """Score many files: event-level recall, precision, F1, false events and delay.

    Parameters
    ----------
    pairs : iterable of (dict, dict)
        ``(result_document, truth_document)`` per file. Result documents need ``events``
        and, to account for truncated events, ``sensor_stats[ch]["event_count"]``; truth
        documents need ``anomalies`` and ``rows``.
    tolerance_s : float
        Widening of each truth interval on both sides, seconds (see :func:`match_events`).

    Returns
    -------
    dict
        ``overall`` and ``kinds[kind]`` rows with ``truths, detected, recall, events,
        true_events, false_events, precision, f1, chance_recall, delay_median_s,
        delay_p90_s``. ``chance_recall`` is the recall that the same false events would
        reach by landing inside a truth by accident, were they spread at random over their
        channel and file (mean over truths of ``1 - exp(-rate * widened truth length)``);
        recall near it means the detections are mostly luck. ``None`` when the sample
        rate is unknown. Each kind whose amplitudes vary has ``amplitudes``, one row per
        bucket with ``truths, detected, recall, recall_at_or_above, chance_recall`` and
        delays (false events have no amplitude, so buckets have no precision); each kind
        on channels of several roles (from ``sensor_stats[ch]["role"]``) has
        ``roles[role]`` with ``truths, detected, recall``. ``clean`` counts the files
        whose truth lists no anomaly and their false events, per file and per 500,000 rows.
        ``truncated`` says on how many channels dropped events were counted as false.
        ``overall.false_events`` includes every false event: those of clean files, those
        attributed to a kind, and those on channels of anomaly files whose truths are
        absent or of several kinds (``overall.false_events_without_truth``).
        Bearing-defect truths (:data:`~telemetry_lab.generate.BEARING_KINDS`) are scored
        by the bearing verdicts (result ``bearing.channels[ch].verdict``), not by events
        (:data:`BEARING_RULES`), and stay out of ``overall``; their events on the defect's
        channel are false events without a truth. ``kinds["bearing_defect"]`` (present
        when there is a bearing truth or an assessed channel) has ``truths, detected,
        recall, missed, wrong_defect, not_assessed``; ``clean_channels`` (assessed
        channels without a bearing truth), ``false_calls`` on them and
        ``false_call_rate``; ``precision`` = detected / (detected + false calls + wrong
        defects) and ``f1``; ``clean_sites`` (files without bearing truths with an
        assessed channel), ``site_false_calls`` and ``site_false_call_rate`` (the file's
        bearing verdict names a defect); ``confusion[truth defect][verdict]`` counts,
        with truth ``none`` for the clean channels and verdict ``not_assessed`` for
        channels without a verdict; ``defects[defect]`` with ``truths, detected,
        recall``; and, when amplitudes vary, ``amplitudes`` buckets with ``truths,
        detected, recall, wrong_defect, recall_at_or_above``. A clean file has no truth
        of any kind.
        Ratios with a zero denominator are ``None``.
    """
    overall = _Tally()
    kinds: dict[str, _Tally] = {}
    bearing = _BearingTally()
    # kind, amplitude, detected, delay, role, chance of a random hit
    per_truth: list[tuple[str, float, bool, float | None, str | None, float | None]] = []
    unattributed = 0
    clean = {"files": 0, "rows": 0, "false_events": 0}
    truncated_channels = truncated_files = dropped_total = files = 0
    for result, truth in pairs:
        source = result.get("source") if isinstance(result, Mapping) else None
        try:
            events = result["events"]
            every_truth = truth["anomalies"]
            rows = int(truth["rows"])
        except (KeyError, TypeError) as exc:
            raise DataError(f"result or truth document lacks {exc}", file=source) from None
        _check_items(every_truth, _TRUTH_KEYS, "anomalies", source)
        # Bearing defects span the whole file and are judged by the bearing verdict: matched
        # against events they would make every event on their channel a true one.
        anomalies = [t for t in every_truth if t["kind"] not in BEARING_KINDS]
        bearing.add_file(result, [t for t in every_truth if t["kind"] in BEARING_KINDS], source)
        if result.get("rows") is not None and int(result["rows"]) != rows:
            raise DataError(f"result has {result['rows']} rows but its truth sidecar "
                            f"{truth.get('site_id')!r} describes {rows}: results and data "
                            f"are from different generations", file=source)
        files += 1
        m = match_events(events, anomalies, tolerance_s=tolerance_s, source=source)
        stats = result.get("sensor_stats") or {}
        channel_kinds: dict[str, set] = {}
        for t in anomalies:
            channel_kinds.setdefault(t["channel"], set()).add(t["kind"])
            kinds.setdefault(t["kind"], _Tally())
        false_by_channel, dropped = _false_events_by_channel(events, m, stats)
        truncated_channels += len(dropped)
        truncated_files += bool(dropped)
        dropped_total += sum(dropped.values())
        fs = truth.get("sample_rate_hz") or result.get("sample_rate_hz")
        file_s = rows / float(fs) if fs else None
        for j, t in enumerate(anomalies):
            k = kinds[t["kind"]]
            det = bool(m.truth_events[j])
            k.truths += 1
            overall.truths += 1
            if det:
                k.detected += 1
                overall.detected += 1
                k.delays.append(m.delays_s[j])
                overall.delays.append(m.delays_s[j])
            p = _chance(false_by_channel.get(t["channel"], 0), file_s, t, tolerance_s)
            k.chance.append(p)
            overall.chance.append(p)
            role = (stats.get(t["channel"]) or {}).get("role")
            per_truth.append((t["kind"], float(t.get("amplitude_sigma") or 0.0), det,
                              m.delays_s[j], role, p))
        for hit in m.event_truths:
            if not hit:
                continue
            overall.true_events += 1
            for kind in {anomalies[j]["kind"] for j in hit}:
                kinds[kind].true_events += 1
        for ch, n in false_by_channel.items():
            overall.false_events += n
            ks = channel_kinds.get(ch, set())
            if len(ks) == 1:
                kinds[next(iter(ks))].false_events += n
            elif every_truth:
                unattributed += n
        if not every_truth:
            clean["files"] += 1
            clean["rows"] += rows
            clean["false_events"] += sum(false_by_channel.values())

    kind_rows = {}
    for kind in sorted(kinds):
        row = kinds[kind].row()
        mine = [p for p in per_truth if p[0] == kind]
        buckets = _buckets([p[1] for p in mine])
        if len(buckets) > 1:
            row["amplitudes"] = []
            for b in buckets:
                tally = _Tally()
                above = _Tally()
                for _, amp, det, delay, _, chance in mine:
                    if amp >= b[0]:
                        above.truths += 1
                        above.detected += det
                    if _in_bucket(amp, b):
                        tally.truths += 1
                        tally.detected += det
                        tally.chance.append(chance)
                        if det:
                            tally.delays.append(delay)
                brow = {"amplitude_sigma": b[0]}
                if b[1] is not None:
                    brow["amplitude_below"] = b[1]
                brow.update(tally.row(with_precision=False))
                brow["recall_at_or_above"] = _ratio(above.detected, above.truths)
                row["amplitudes"].append(brow)
        roles = sorted({p[4] for p in mine if p[4] is not None})
        if len(roles) > 1:
            row["roles"] = {}
            for role in roles:
                hits = [p[2] for p in mine if p[4] == role]
                row["roles"][role] = {"truths": len(hits), "detected": sum(hits),
                                      "recall": _ratio(sum(hits), len(hits))}
        kind_rows[kind] = row
    if bearing.truths or bearing.clean_channels:
        kind_rows[_BEARING_KIND] = bearing.row()
    overall_row = overall.row()
    overall_row["false_events_without_truth"] = unattributed
    return {
        "files": files,
        "tolerance_s": tolerance_s,
        "rules": MATCHING_RULES,
        "bearing_rules": BEARING_RULES,
        "overall": overall_row,
        "kinds": kind_rows,
        "clean": {**clean,
                  "false_events_per_clean_file": _ratio(clean["false_events"], clean["files"]),
                  "false_events_per_clean_500k_rows": _ratio(clean["false_events"] * CLEAN_ROWS_UNIT,
                                                             clean["rows"])},
        "truncated": {
            "channels": truncated_channels,
            "files": truncated_files,
            "dropped_events": dropped_total,
            "note": ("events beyond max_events_per_channel are not in the result documents; "
                     "sensor_stats event_count was used and the dropped events were counted "
                     "as false events") if truncated_channels else None,
        },
    }


def amplitude_floor(table: Mapping, kind: str, *, target: float = 0.95) -> float | None:
    """Smallest amplitude of ``kind`` from which on the recall over all truths at or
    above it (``recall_at_or_above``) reaches ``target``, at that amplitude and at every
    larger one.

    Returns None when even the largest bucket misses (or the kind has one amplitude).
    """
    floor = None
    for b in reversed(table["kinds"].get(kind, {}).get("amplitudes", [])):
        if b["recall_at_or_above"] is None or b["recall_at_or_above"] < target:
            break
        floor = b["amplitude_sigma"]
    return floor


# -- reading a run --------------------------------------------------------------------------

def truth_uri(parquet_uri: str) -> str:
    """The ground-truth sidecar of a generated file: ``<stem>.truth.json`` beside it."""
    base = parquet_uri[: -len(".parquet")] if parquet_uri.endswith(".parquet") else parquet_uri
    return base + ".truth.json"


def _read_json(uri: str) -> dict:
    from . import storage

    try:
        return json.loads(storage.read_bytes(uri))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"not valid JSON ({exc})", file=uri) from None


def evaluate_run(manifest_uri: str, results_root: str, run_id: str = "latest", *,
                 tolerance_s: float = DEFAULT_TOLERANCE_S) -> dict:
    """Score the results of one run against the truth sidecars of its manifest's files.

    Parameters
    ----------
    manifest_uri : str
        Manifest of the generated files (path or ``s3://``).
    results_root : str
        Results root of the run (``<root>/results/<run_id>/<stem>.json``).
    run_id : str
        Run whose results to score; ``"latest"`` takes the newest result of each file.
    tolerance_s : float
        See :func:`match_events`, seconds.

    Returns
    -------
    dict
        :func:`score`'s table plus ``run`` (what was scored) and ``skipped``: stems of files
        without a truth sidecar (``no_truth``) and of files with a sidecar but no result
        (``no_result``), neither of which is scored.
    """
    from . import manifest as manifest_mod
    from . import storage
    from .jobs import Paths

    manifest = manifest_mod.load(manifest_uri)
    paths = Paths(results_root, run_id)
    pairs, no_truth, no_result = [], [], []
    for stem, uri in manifest_mod.entries(manifest):
        t_uri = truth_uri(uri)
        if not storage.exists(t_uri):
            no_truth.append(stem)
            continue
        r_uri = paths.result(stem)
        if not storage.exists(r_uri):
            no_result.append(stem)
            continue
        result, truth = _read_json(r_uri), _read_json(t_uri)
        if result.get("site_id") != truth.get("site_id"):
            raise DataError(f"result is for site {result.get('site_id')!r} but the truth "
                            f"sidecar {t_uri} is for {truth.get('site_id')!r}", file=r_uri)
        result.setdefault("source", r_uri)
        pairs.append((result, truth))
    if not pairs:
        raise DataError(f"nothing to score: {_files(len(no_truth))} without a truth sidecar, "
                        f"{len(no_result)} without a result under run {run_id!r} of "
                        f"{results_root}", file=manifest_uri)
    table = score(pairs, tolerance_s=tolerance_s)
    params = {json.dumps(r.get("params"), sort_keys=True) for r, _ in pairs}
    table["run"] = {"manifest": manifest_uri, "results": results_root, "run_id": run_id,
                    "params": json.loads(next(iter(params))) if len(params) == 1 else None}
    table["skipped"] = {"no_truth": no_truth, "no_result": no_result}
    return table


# -- output ---------------------------------------------------------------------------------

def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def _fmt(v, spec: str = ".3f") -> str:
    if v is None:
        return "-"
    return format(v, spec) if isinstance(v, float) else str(v)


def format_table(table: Mapping) -> str:
    """The score table as fixed-width text: one row per event kind, amplitude bucket and
    overall, then the bearing-defect row (:func:`format_bearing`) if the table has one."""
    head = (f"{'kind':<17}{'amp':>7}{'truths':>8}{'det':>6}{'recall':>8}{'>=amp':>7}"
            f"{'chance':>7}{'events':>8}{'true':>7}{'false':>7}{'prec':>7}{'F1':>7}"
            f"{'delay s':>9}{'p90 s':>8}")
    lines = [head, "-" * len(head)]

    def line(name, amp, r, above=None):
        lines.append(
            f"{name:<17}{amp:>7}{r['truths']:>8}{r['detected']:>6}{_fmt(r['recall']):>8}"
            f"{_fmt(above):>7}{_fmt(r.get('chance_recall')):>7}"
            f"{_fmt(r.get('events')):>8}{_fmt(r.get('true_events')):>7}"
            f"{_fmt(r.get('false_events')):>7}{_fmt(r.get('precision')):>7}{_fmt(r.get('f1')):>7}"
            f"{_fmt(r['delay_median_s'], '.3f'):>9}{_fmt(r['delay_p90_s'], '.3f'):>8}")

    for kind, r in table["kinds"].items():
        if kind in BEARING_KINDS:
            continue
        line(kind, "all", r)
        for b in r.get("amplitudes", []):
            amp = _fmt(b["amplitude_sigma"], "g") + ("+" if "amplitude_below" in b else "")
            line("", amp, b, b["recall_at_or_above"])
        if r.get("roles"):
            lines.append("  recall by role: " + ", ".join(
                f"{role} {_fmt(x['recall'], '.2f')} ({x['detected']}/{x['truths']})"
                for role, x in r["roles"].items()))
    lines.append("-" * len(head))
    line("overall", "", table["overall"])
    c = table["clean"]
    lines.append(f"false events in anomaly files not attributable to one kind (channel "
                 f"without a truth, or with several kinds): "
                 f"{table['overall']['false_events_without_truth']}")
    lines.append(f"clean files: {c['files']} ({c['rows']:,} rows), false events {c['false_events']}, "
                 f"per clean file {_fmt(c['false_events_per_clean_file'], '.2f')}, "
                 f"per {CLEAN_ROWS_UNIT:,} clean rows "
                 f"{_fmt(c['false_events_per_clean_500k_rows'], '.2f')}")
    if _BEARING_KIND in table["kinds"]:
        lines += ["", *format_bearing(table["kinds"][_BEARING_KIND])]
    tr = table["truncated"]
    if tr["channels"]:
        lines.append(f"note: {tr['channels']} channels in {tr['files']} files were truncated to "
                     f"max_events_per_channel; {tr['dropped_events']} dropped events were "
                     f"counted as false events (from sensor_stats event_count)")
    skipped = table.get("skipped") or {}
    if skipped.get("no_truth"):
        lines.append(f"skipped {_files(len(skipped['no_truth']))} without a truth sidecar")
    if skipped.get("no_result"):
        lines.append(f"skipped {_files(len(skipped['no_result']))} without a result: "
                     f"{', '.join(skipped['no_result'][:5])}"
                     f"{' ...' if len(skipped['no_result']) > 5 else ''}")
    lines.append(f"{_files(table['files'])} scored; truth widened by {table['tolerance_s']:g} s "
                 f"each side; amp = amplitude in noise sigmas; >=amp = recall over truths at or "
                 f"above it; chance = recall the false events would reach at random")
    return "\n".join(lines)


def format_bearing(r: Mapping) -> list[str]:
    """Text lines of the ``bearing_defect`` row: per amplitude and defect, the confusion
    of truth defect and verdict, and the false calls."""
    head = (f"{'bearing_defect':<17}{'amp':>7}{'truths':>8}{'det':>6}{'recall':>8}{'>=amp':>7}"
            f"{'wrong':>7}")
    lines = [head, "-" * len(head)]

    def line(name, amp, b, above=None):
        lines.append(f"{name:<17}{amp:>7}{b['truths']:>8}{b['detected']:>6}"
                     f"{_fmt(b['recall']):>8}{_fmt(above):>7}{b['wrong_defect']:>7}")

    line("", "all", r)
    for b in r.get("amplitudes", []):
        amp = _fmt(b["amplitude_sigma"], "g") + ("+" if "amplitude_below" in b else "")
        line("", amp, b, b["recall_at_or_above"])
    if r["defects"]:
        lines.append("  recall by defect: " + ", ".join(
            f"{d} {_fmt(x['recall'], '.2f')} ({x['detected']}/{x['truths']})"
            for d, x in r["defects"].items()))
    for truth_defect, calls in r["confusion"].items():
        lines.append(f"  truth {truth_defect:<11} -> " + ", ".join(
            f"{called} {n}" for called, n in calls.items()))
    lines.append(f"  missed {r['missed']}, wrong defect {r['wrong_defect']}, not assessed "
                 f"{r['not_assessed']}; false calls {r['false_calls']} on {r['clean_channels']} "
                 f"assessed clean channels (rate {_fmt(r['false_call_rate'])}); precision "
                 f"{_fmt(r['precision'])}, F1 {_fmt(r['f1'])}; site-level false calls "
                 f"{r['site_false_calls']} on {r['clean_sites']} files without a bearing truth")
    return lines


def write_json(table: Mapping, uri: str) -> None:
    """Write the score table as JSON to a path or ``s3://`` URI."""
    from . import storage

    storage.write_bytes(uri, (json.dumps(table, indent=1, allow_nan=False) + "\n").encode())


# -- command line ---------------------------------------------------------------------------

def cmd_evaluate(a) -> int:
    """``telemetry-lab evaluate``: print the table, optionally write JSON. Exit 3 (data)
    when some files with a truth sidecar have no result, so a partial run is not mistaken
    for a complete score."""
    table = evaluate_run(a.manifest, a.results, a.run_id, tolerance_s=a.tolerance_s)
    print(format_table(table))
    if a.json:
        write_json(table, a.json)
        print(f"score table written to {a.json}")
    if table["skipped"]["no_result"]:
        print(f"telemetry-lab evaluate: {len(table['skipped']['no_result'])} files have ground "
              f"truth but no result in run {a.run_id!r}; the score covers the others only",
              file=sys.stderr)
        return EXIT_DATA
    return EXIT_OK


def add_evaluate_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``evaluate`` on a ``argparse`` subparsers object; returns the subparser."""
    e = subparsers.add_parser(
        "evaluate", help="score a run's events against the generator's ground truth",
        description="Match each file's events to its <stem>.truth.json sidecar per channel by "
                    "overlap in time and print event-level precision, recall, F1, false "
                    "events per clean file and detection delay, per anomaly kind and "
                    "amplitude and overall; and bearing defects by the channels' bearing "
                    "verdicts: recall, wrong defects and false calls on clean channels.")
    e.add_argument("--manifest", required=True, help="manifest of the generated files")
    e.add_argument("--results", required=True, help="results root (folder or s3:// prefix)")
    e.add_argument("--run-id", default="latest", help="run to score (default: latest)")
    e.add_argument("--json", metavar="OUT", help="also write the table as JSON here")
    e.add_argument("--tolerance-s", type=float, default=DEFAULT_TOLERANCE_S,
                   help=f"widen each truth by this many seconds each side "
                        f"(default {DEFAULT_TOLERANCE_S:g})")
    e.set_defaults(func=cmd_evaluate)
    return e
