"""The ``telemetry-lab`` command line; exit codes are defined in :mod:`telemetry_lab.errors`."""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import __version__
from .errors import EXIT_USAGE, TelemetryLabError


def _params(uri: str | None, preset: str | None = None):
    """The params a command runs with, and the file they came from: the params file, else
    the named preset, else the file in $TELEMETRY_LAB_PARAMS, else the default preset."""
    from .errors import ParamsError
    from .params import AnalysisParams

    if uri is not None and not uri.strip():
        # An empty flag is a mistake (an unset shell variable), not "use the environment's".
        raise ParamsError("--params names no file (an empty string); leave the flag out "
                          "to use $TELEMETRY_LAB_PARAMS or the default preset")
    if not uri and preset:
        return AnalysisParams.preset(preset), None
    uri = uri or os.environ.get("TELEMETRY_LAB_PARAMS") or None
    if uri:
        return AnalysisParams.load(uri), uri
    return AnalysisParams.preset("default"), None


def cmd_generate(a) -> int:
    from .generate import fleet_specs, generate

    from .errors import ParamsError

    checks = [(a.sites >= 1, f"--sites={a.sites} must be at least 1"),
              (a.rows >= 2, f"--rows={a.rows} must be at least 2"),
              (a.seed >= 0, f"--seed={a.seed} must not be negative"),
              (a.workers is None or a.workers >= 1, f"--workers={a.workers} must be at least 1"),
              (0.0 <= a.anomaly_rate <= 1.0, f"--anomaly-rate={a.anomaly_rate} must be in [0, 1]"),
              (0.0 < a.fs <= 1e6, f"--fs={a.fs} must be in (0, 1e6] Hz"),
              (a.anomaly_rate == 0 or a.rows / a.fs >= 1,
               f"--rows={a.rows} at --fs={a.fs:g} is {a.rows / a.fs:g} s: anomalies need files "
               "of at least 1 s (or --anomaly-rate 0)")]
    for ok, message in checks:
        if not ok:
            raise ParamsError(message)
    specs = fleet_specs(a.sites, a.rows, seed=a.seed, anomaly_rate=a.anomaly_rate, fs=a.fs)
    manifest = generate(specs, a.out, workers=a.workers, progress=not a.quiet)
    anomalous = sum(1 for s in specs if s.anomalies)
    from . import storage

    print(f"wrote {manifest['total_files']} sites x {a.rows} rows ({anomalous} with injected "
          f"anomalies) to {a.out}; manifest {storage.join(a.out, 'manifest.json')}")
    return 0


def cmd_manifest(a) -> int:
    from . import manifest

    m = manifest.build(a.prefix)
    manifest.save(m, a.out)
    print(f"manifest of {m['total_files']} files written to {a.out}")
    return 0


def cmd_analyse(a) -> int:
    from .analysis import analyse_file

    params, _ = _params(a.params, a.preset)
    doc = analyse_file(a.file, params)
    text = json.dumps(doc, indent=1)
    if a.out:
        from . import storage

        storage.write_bytes(a.out, text.encode())
    else:
        print(text)
    return 0


def cmd_slice(a) -> int:
    from . import jobs

    index, size = jobs.array_position(a.array_index, a.array_size)
    run_id = jobs.check_run_id(a.run_id or os.environ.get(jobs.RUN_ID_ENV)
                               or _batch_parent_id() or jobs.new_run_id())
    params, params_uri = _params(a.params)
    stop = jobs.StopFlag()
    stop.install()
    entries = jobs.slice_entries(a.manifest, index, size)
    paths = jobs.Paths(a.results, run_id)
    jobs.check_writable(paths, index)
    if a.engine == "papermill":
        from .notebook import run_slice_papermill

        summary = run_slice_papermill(a.manifest, paths, params_uri, index=index, size=size,
                                      should_stop=stop)
    else:
        from .render import site_report_hook

        summary = jobs.run_slice(entries, paths, params, index=index, size=size, should_stop=stop,
                                 log=lambda line: print(line, flush=True),
                                 on_result=site_report_hook(paths))
    return summary.exit_code


def _batch_parent_id() -> str | None:
    job_id = os.environ.get("AWS_BATCH_JOB_ID")
    return job_id.split(":")[0] if job_id else None


def cmd_run(a) -> int:
    from . import jobs

    if a.params:
        _params(a.params)  # fail before starting any child
    run_id = jobs.check_run_id(a.run_id or jobs.new_run_id())
    cfg = jobs.LocalRun(manifest=a.manifest, results=a.results, run_id=run_id,
                        files_per_job=a.files_per_job, workers=a.workers, params_uri=a.params,
                        engine=a.engine)
    code = jobs.run_local(cfg, progress=not a.quiet)
    paths = jobs.Paths(a.results, run_id)
    print(f"results: {jobs.storage.join(a.results, 'results', 'latest')}  "
          f"run summary: {paths.run_summary}")
    from .render import write_index

    try:
        print(f"index: {write_index(a.results)}")
    except TelemetryLabError as exc:
        print(f"no index written: {exc}", file=sys.stderr)
    return code


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="telemetry-lab", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Analyse telemetry parquet files: statistics, anomaly events, spectra, "
                    "fault flags and incident reports.",
        epilog="exit codes: 0 OK; 1 unexpected error; 2 command-line usage; 3 bad input data; "
               "4 bad manifest;\n5 bad params (a value out of range, in a flag or a params "
               "file); 6 storage; 7 report backend;\n143 / 130 stopped by SIGTERM / SIGINT")
    p.add_argument("--version", action="version", version=f"telemetry-lab {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write synthetic sites, their ground truth and a manifest")
    g.add_argument("--sites", type=int, required=True)
    g.add_argument("--rows", type=int, required=True)
    g.add_argument("--out", required=True, help="folder or s3:// prefix")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    g.add_argument("--anomaly-rate", type=float, default=0.1,
                   help="share of sites with injected anomalies (default 0.1)")
    g.add_argument("--fs", type=float, default=1000.0,
                   help="sample rate, Hz (default 1000; from 10000 the fleet may also get "
                        "bearing defects)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=cmd_generate)

    m = sub.add_parser("manifest", help="build a manifest from the .parquet files under a prefix")
    m.add_argument("prefix")
    m.add_argument("--out", required=True)
    m.set_defaults(func=cmd_manifest)

    an = sub.add_parser("analyse", help="analyse one file and print its result document")
    an.add_argument("file")
    from .params import PRESETS

    which = an.add_mutually_exclusive_group()
    which.add_argument("--params", help="params file (JSON)")
    which.add_argument("--preset", choices=sorted(PRESETS),
                       help="named preset (default: $TELEMETRY_LAB_PARAMS, else 'default')")
    an.add_argument("--out", help="write the document here instead of stdout")
    an.set_defaults(func=cmd_analyse)

    s = sub.add_parser("slice", help="process one slice of a manifest (one array child)")
    s.add_argument("--manifest", required=True)
    s.add_argument("--results", required=True, help="results root (folder or s3:// prefix)")
    s.add_argument("--run-id", help="default: $TELEMETRY_LAB_RUN_ID, else the Batch parent job id")
    s.add_argument("--params", help="params file; default $TELEMETRY_LAB_PARAMS")
    s.add_argument("--array-index", type=int,
                   help="default: $AWS_BATCH_JOB_ARRAY_INDEX, else 0")
    s.add_argument("--array-size", type=int, help="default: $TELEMETRY_LAB_ARRAY_SIZE, else 1")
    s.add_argument("--engine", choices=("python", "papermill"), default="python")
    s.set_defaults(func=cmd_slice)

    r = sub.add_parser("run", help="run the whole array job on this machine")
    r.add_argument("--manifest", required=True)
    r.add_argument("--results", default="output", help="results root (default ./output)")
    r.add_argument("--files-per-job", type=int, required=True)
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--run-id")
    r.add_argument("--params")
    r.add_argument("--engine", choices=("python", "papermill"), default="python")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_run)

    from .evaluate import add_evaluate_parser
    from .importers import add_import_parser
    from .render import add_report_parser

    from .aws import add_aws_parsers

    add_report_parser(sub)
    add_import_parser(sub)
    add_evaluate_parser(sub)
    add_aws_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except TelemetryLabError as exc:
        print(f"telemetry-lab {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
