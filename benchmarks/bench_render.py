"""Cost of the rendered site reports, amortised over one slice of files.

Runs the same slice twice in this process through :func:`telemetry_lab.jobs.run_slice`:
once without reports (results only) and once with the report hook
(:func:`telemetry_lab.render.site_report_hook`), each into a fresh results root. The
difference divided by the file count is the report cost per file, amortised: it includes the
one-off nbconvert import and template compilation, trace collection during the analysis,
rendering, and writing both copies of each page. Target: at most 1 s per file on the 2-core
machine (a papermill execution costs about 4 s per file). Prints figures; asserts nothing.

Wall time is what a slice waits; on a machine shared with other work it is noisy, so the
process CPU time (all threads of this process) is printed beside it. Under heavy load even
that difference drowns in noise, so the cost is also built from parts measured directly:
the time inside the report hook, plus the extra analysis time of collecting the plot traces
(each file analysed with and without traces, alternately; the median difference).

Usage::

    python benchmarks/bench_render.py                 # 8 files x 500,000 rows in a temp dir
    python benchmarks/bench_render.py --data DIR      # reuse (or create) files in DIR
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from telemetry_lab import jobs, manifest as manifest_mod, render
from telemetry_lab.analysis import analyse
from telemetry_lab.generate import fleet_specs, generate
from telemetry_lab.params import AnalysisParams


def ensure_data(folder: str, files: int, rows: int) -> list[tuple[str, str]]:
    """Entries ``(stem, uri)`` of ``files`` generated sites in ``folder`` (made if missing)."""
    manifest_uri = os.path.join(folder, "manifest.json")
    if os.path.exists(manifest_uri):
        entries = manifest_mod.entries(manifest_mod.load(manifest_uri))
        if len(entries) >= files:
            return entries[:files]
    t = time.perf_counter()
    generate(fleet_specs(files, rows, seed=7, anomaly_rate=0.25), folder, workers=2)
    print(f"generated {files} files x {rows} rows in {time.perf_counter() - t:.1f} s")
    return manifest_mod.entries(manifest_mod.load(manifest_uri))[:files]


def timed_slice(entries, root: str, *, with_reports: bool) -> tuple[float, float, list[float]]:
    """Wall and CPU time of one slice, and the wall time inside the report hook per file, s."""
    paths = jobs.Paths(root, "bench")
    hook_s: list[float] = []
    on_result = None
    if with_reports:
        write = render.site_report_hook(paths)

        def on_result(stem, analysis):
            t = time.perf_counter()
            write(stem, analysis)
            hook_s.append(time.perf_counter() - t)

    t, c = time.perf_counter(), time.process_time()
    summary = jobs.run_slice(entries, paths, AnalysisParams(), log=lambda line: None,
                             on_result=on_result)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    if summary.count("OK") != len(entries):
        failed = [f.line() for f in summary.files if f.status != "OK"]
        raise SystemExit(f"slice did not finish cleanly: {failed}")
    return wall, cpu, hook_s


def trace_overhead(entries) -> tuple[float, float]:
    """Median extra wall and CPU time per file of ``trace_buckets=2000``, s."""
    walls, cpus = [], []
    for _, uri in entries:
        spent = {}
        for buckets in (0, render.TRACE_BUCKETS):
            t, c = time.perf_counter(), time.process_time()
            analyse(uri, AnalysisParams(), trace_buckets=buckets)
            spent[buckets] = (time.perf_counter() - t, time.process_time() - c)
        walls.append(spent[render.TRACE_BUCKETS][0] - spent[0][0])
        cpus.append(spent[render.TRACE_BUCKETS][1] - spent[0][1])
    return sorted(walls)[len(walls) // 2], sorted(cpus)[len(cpus) // 2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="folder of generated files to reuse or create")
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--rows", type=int, default=500_000)
    a = ap.parse_args(argv)

    work = tempfile.mkdtemp(prefix="bench_render_")
    try:
        entries = ensure_data(a.data or os.path.join(work, "data"), a.files, a.rows)
        n = len(entries)
        # Warm the page cache so that the first pass does not pay for the disk alone.
        for _, uri in entries:
            with open(uri, "rb") as f:
                while f.read(1 << 22):
                    pass
        alone, alone_cpu, _ = timed_slice(entries, os.path.join(work, "alone"), with_reports=False)
        both, both_cpu, hook = timed_slice(entries, os.path.join(work, "reports"), with_reports=True)
        sizes = [os.path.getsize(os.path.join(work, "reports", "reports", "bench", f"{s}.html"))
                 for s, _ in entries]
        print(f"slice of {n} files x {a.rows} rows, one process; per file (wall | CPU)")
        print(f"  analysis only (results)        {alone / n:6.3f} | {alone_cpu / n:6.3f} s")
        print(f"  analysis + site reports        {both / n:6.3f} | {both_cpu / n:6.3f} s")
        print(f"  report cost, amortised         {(both - alone) / n:6.3f} | "
              f"{(both_cpu - alone_cpu) / n:6.3f} s   (target <= 1 s)")
        print(f"    in the report hook           {sum(hook) / n:6.3f} s wall (render + 2 writes; "
              f"first file {hook[0]:.3f} s with the one-off setup, then "
              f"{sorted(hook[1:])[len(hook[1:]) // 2] if n > 1 else hook[0]:.3f} s median)")
        print(f"  ratio with/without reports     {both / alone:6.2f} | {both_cpu / alone_cpu:6.2f}")
        trace_wall, trace_cpu = trace_overhead(entries)
        print(f"  trace collection (median)      {trace_wall:6.3f} | {trace_cpu:6.3f} s")
        print(f"  report cost from parts         {trace_wall + sum(hook) / n:6.3f} s wall "
              f"(trace collection + report hook, amortised; target <= 1 s)")
        print(f"  page size                      {min(sizes) / 1e3:.0f}-{max(sizes) / 1e3:.0f} kB")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
