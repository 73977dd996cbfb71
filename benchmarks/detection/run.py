"""Score analysis presets on the detection benchmark set.

Generates the set (make_set.py) if it is missing or was made with other settings, runs
the local array job (``jobs.run_local``, the same path as ``telemetry-lab run``) once per
preset or params file under a fresh run id, scores it with ``telemetry_lab.evaluate``,
prints the table and writes ``<set>/scores-<label>.json``. Results of earlier runs are
never reused, so a changed detector is always measured.

    python benchmarks/detection/run.py                       # seed and default, full set
    python benchmarks/detection/run.py --preset default --params my.json
    python benchmarks/detection/run.py --small               # smoke run, 4 short files
    python benchmarks/detection/run.py --markdown            # also README tables
    python benchmarks/detection/run.py --part bearing        # only the 12 kHz bearing part

The set has two parts, each analysed and scored as a run of its own (``--part``, default
both): the event part (``<set>``, scores ``<set>/scores-<label>.json``) and the bearing
part (``<set>/bearing``, scores ``<set>/bearing/scores-<label>.json``), so that the
event part's numbers do not change with the bearing sites. The event part (30 files x
500,000 rows) took 256 s to generate and 121 s to analyse with the seed preset on 2
cores shared with other jobs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import make_set
from telemetry_lab import jobs, storage
from telemetry_lab.evaluate import (CLEAN_ROWS_UNIT, DEFAULT_TOLERANCE_S, amplitude_floor,
                                    evaluate_run, format_table, write_json)
from telemetry_lab.generate import BEARING_DEFECTS, BEARING_KINDS
from telemetry_lab.params import AnalysisParams


def _fmt(v, spec=".3f") -> str:
    return "–" if v is None else format(v, spec)


def format_markdown(table: dict, label: str) -> str:
    """README tables: for event kinds a one-line summary and recall per kind and
    amplitude; for bearing defects (:func:`format_bearing_markdown`) recall per amplitude
    and the verdicts per injected defect."""
    event_kinds = {k: r for k, r in table["kinds"].items() if k not in BEARING_KINDS}
    parts = [format_event_markdown(table, event_kinds, label)] if event_kinds else []
    parts += [format_bearing_markdown(table["kinds"][k], label) for k in BEARING_KINDS
              if k in table["kinds"]]
    return "\n\n".join(parts)


def format_bearing_markdown(r: dict, label: str) -> str:
    """The bearing-defect row: summary, recall per amplitude, confusion of truth and verdict."""
    lines = [
        f"**{label}, bearing defects**: recall {_fmt(r['recall'])} ({r['detected']}/{r['truths']}; "
        f"{r['wrong_defect']} wrong defect, {r['missed']} none, {r['not_assessed']} not assessed), "
        f"precision {_fmt(r['precision'])}, {r['false_calls']} false calls on "
        f"{r['clean_channels']} assessed clean channels, {r['site_false_calls']} site-level "
        f"false calls on {r['clean_sites']} files without a defect",
    ]
    if r["truths"]:
        lines += ["", "| amplitude σ | truths | recall | recall ≥ amplitude | wrong defect |",
                  "|---:|---:|---:|---:|---:|"]
    for b in r.get("amplitudes", [r] if r["truths"] else []):
        lines.append(f"| {_fmt(b.get('amplitude_sigma'), 'g')} | {b['truths']} | "
                     f"{_fmt(b['recall'], '.2f')} | {_fmt(b.get('recall_at_or_above'), '.2f')} | "
                     f"{b['wrong_defect']} |")
    order = BEARING_DEFECTS + ("cage", "none", "not_assessed")
    present = {v for row in r["confusion"].values() for v in row}
    called = [v for v in order if v in present] + sorted(present - set(order))
    lines += ["", "| injected (rows) / verdict (columns) | "
              + " | ".join(v.replace("_", " ") for v in called) + " | recall |",
              "|---|" + "---:|" * (len(called) + 1)]
    for truth, row in r["confusion"].items():
        recall = r["defects"].get(truth, {}).get("recall") if truth != "none" else None
        lines.append(f"| {truth.replace('_', ' ')} | "
                     + " | ".join(str(row.get(v, 0)) for v in called)
                     + f" | {_fmt(recall, '.2f')} |")
    return "\n".join(lines)


def format_event_markdown(table: dict, kinds: dict, label: str) -> str:
    """Event kinds: a one-line summary and recall per kind and amplitude."""
    o, c = table["overall"], table["clean"]
    lines = [
        f"**{label}**: recall {_fmt(o['recall'])}, precision {_fmt(o['precision'])}, "
        f"F1 {_fmt(o['f1'])}, {_fmt(c['false_events_per_clean_500k_rows'], '.1f')} false "
        f"events per clean {CLEAN_ROWS_UNIT:,}-row file ({c['false_events']} on {c['files']} "
        f"files), median delay {_fmt(o['delay_median_s'], '.2f')} s",
        "",
        "| kind | amplitude σ | truths | recall | recall ≥ amplitude | chance recall | "
        "median delay s | p90 delay s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, r in kinds.items():
        for b in r.get("amplitudes", [r]):
            lines.append(
                f"| {kind} | {_fmt(b.get('amplitude_sigma'), 'g')} | {b['truths']} | "
                f"{_fmt(b['recall'], '.2f')} | {_fmt(b.get('recall_at_or_above'), '.2f')} | "
                f"{_fmt(b.get('chance_recall'), '.2f')} | "
                f"{_fmt(b['delay_median_s'], '.2f')} | {_fmt(b['delay_p90_s'], '.2f')} |")
    lines += ["", "| kind | events | true | false | precision | F1 | amplitude floor "
              "(recall ≥ 0.95 at and above) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for kind, r in kinds.items():
        floor = amplitude_floor(table, kind)
        lines.append(f"| {kind} | {r['events']} | {r['true_events']} | {r['false_events']} | "
                     f"{_fmt(r['precision'], '.3f')} | {_fmt(r['f1'], '.3f')} | "
                     f"{'none' if floor is None else format(floor, 'g') + ' σ'} |")
    lines.append(f"| overall | {o['events']} | {o['true_events']} | {o['false_events']} | "
                 f"{_fmt(o['precision'], '.3f')} | {_fmt(o['f1'], '.3f')} | |")
    return "\n".join(lines)


def run_preset(set_dir: str, label: str, params: AnalysisParams, *, workers: int,
               tolerance_s: float) -> dict:
    """Analyse the whole set with ``params`` under a fresh run id and score it."""
    manifest = storage.join(set_dir, "manifest.json")
    params_uri = storage.join(set_dir, f"params-{label}.json")
    params.save(params_uri)
    run_id = f"{label}-{jobs.new_run_id()}"
    results = storage.join(set_dir, "runs")
    t0 = time.perf_counter()

    def log(line: str) -> None:
        if not line.startswith("OK "):
            print(line, flush=True)

    code = jobs.run_local(jobs.LocalRun(manifest=manifest, results=results, run_id=run_id,
                                        files_per_job=4, workers=workers, params_uri=params_uri),
                          progress=False, log=log)
    wall = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"analysis run {run_id} failed with exit code {code}; see "
                         f"{jobs.Paths(results, run_id).run_summary}")
    table = evaluate_run(manifest, results, run_id, tolerance_s=tolerance_s)
    per_file = [d["seconds"] for d in json.loads(storage.read_bytes(
        jobs.Paths(results, run_id).run_summary))["files"]]
    table["label"] = label
    table["analysis"] = {"wall_s": round(wall, 1), "median_file_s": round(statistics.median(per_file), 3),
                         "workers": workers}
    write_json(table, storage.join(set_dir, f"scores-{label}.json"))
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", dest="set_dir", help="benchmark set folder (default "
                   "build/detection-set, build/detection-set-small with --small)")
    p.add_argument("--preset", action="append", help="preset name (repeatable; default: "
                   "seed and default)")
    p.add_argument("--params", action="append", default=[],
                   help="params JSON file (repeatable), labelled by its file name")
    p.add_argument("--small", action="store_true", help="the small set, for a smoke run")
    p.add_argument("--part", choices=("events", "bearing", "both"), default="both",
                   help="which part of the set to analyse and score (default both)")
    p.add_argument("--regenerate", action="store_true", help="rebuild the set even if present")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--tolerance-s", type=float, default=DEFAULT_TOLERANCE_S)
    p.add_argument("--markdown", action="store_true", help="also print the README tables")
    a = p.parse_args(argv)
    set_dir = a.set_dir or ("build/detection-set-small" if a.small else "build/detection-set")
    runs = [(name, AnalysisParams.preset(name)) for name in (a.preset or ([] if a.params else
                                                                          ["seed", "default"]))]
    runs += [(Path(f).stem, AnalysisParams.load(f)) for f in a.params]
    # (name, folder, config, its specs, generator) per part
    parts = []
    if a.part in ("events", "both"):
        cfg = make_set.SetConfig.small() if a.small else make_set.SetConfig()
        parts.append(("events", set_dir, cfg, make_set.build_specs, make_set.make_set))
    if a.part in ("bearing", "both"):
        cfg = make_set.BearingSetConfig.small() if a.small else make_set.BearingSetConfig()
        parts.append(("bearing", make_set.bearing_dir(set_dir), cfg, make_set.build_bearing_specs,
                      make_set.make_bearing_set))

    markdown = []
    for part, folder, cfg, build, make in parts:
        if a.regenerate or make_set.existing_config(folder, type(cfg)) != cfg:
            print(make_set.describe(build(cfg)), flush=True)
            t0 = time.perf_counter()
            make(folder, cfg, workers=a.workers)
            print(f"generated {folder} in {time.perf_counter() - t0:.0f} s", flush=True)
        for label, params in runs:
            table = run_preset(folder, label, params, workers=a.workers, tolerance_s=a.tolerance_s)
            print(f"\n== {label}, {part} part: {table['files']} files, analysis "
                  f"{table['analysis']['wall_s']} s wall, {table['analysis']['median_file_s']} s "
                  f"median per file ==")
            print(format_table(table))
            print(f"written to {storage.join(folder, f'scores-{label}.json')}", flush=True)
            markdown.append(format_markdown(table, label))
    if a.markdown:
        print("\n" + "\n\n".join(markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
