"""The papermill engine of ``telemetry-lab slice`` (telemetry_lab.notebook) and the
committed notebooks. The analyst notebooks themselves are executed by nbval
(``pytest --nbval-lax`` over notebooks/)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile

import nbformat
import pytest

from conftest import REPO, read_json
from telemetry_lab import jobs, notebook, storage
from telemetry_lab.errors import EXIT_INTERRUPTED, EXIT_PARAMS, ParamsError, StorageError
from telemetry_lab.generate import fleet_specs, generate
from telemetry_lab.params import AnalysisParams

NOTEBOOKS = REPO / "notebooks"
SITE_ANALYSIS = NOTEBOOKS / notebook.SITE_ANALYSIS
ANALYST_NOTEBOOKS = ("01_explore.ipynb", "02_tune_detection.ipynb", "03_submit.ipynb")
VOLATILE_KEYS = ("timings",)


def cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "telemetry_lab", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def file_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("OK ", "FAIL ", "SKIP "))]


def comparable(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in VOLATILE_KEYS}


# -- the committed notebooks --------------------------------------------------------------

@pytest.mark.parametrize("name", [notebook.SITE_ANALYSIS, *ANALYST_NOTEBOOKS])
def test_committed_notebook_is_valid_has_a_parameters_cell_and_carries_no_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    with_outputs = [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None]
    assert with_outputs == [], f"{name}: clear the outputs of code cells {with_outputs}"
    assert "widgets" not in nb.metadata and "papermill" not in nb.metadata, name
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name}: needs exactly one cell tagged 'parameters'"


def test_site_analysis_declares_what_the_slice_runner_passes():
    declared = notebook.notebook_parameters(SITE_ANALYSIS)
    assert set(declared) == {"manifest", "results", "run_id", "params", "array_index",
                             "array_size", "render_reports", "pid_file"}
    assert {n for n, p in declared.items() if p["required"]} == {"manifest", "results", "run_id"}


def test_notebooks_are_found_from_the_environment_or_the_error_says_where_it_looked(
        tmp_path, monkeypatch):
    monkeypatch.setenv(notebook.NOTEBOOKS_DIR_ENV, str(tmp_path))
    with pytest.raises(StorageError, match=str(tmp_path)):
        notebook.notebooks_dir()
    (tmp_path / notebook.SITE_ANALYSIS).write_bytes(SITE_ANALYSIS.read_bytes())
    assert notebook.notebooks_dir() == tmp_path
    monkeypatch.delenv(notebook.NOTEBOOKS_DIR_ENV)
    assert notebook.notebooks_dir() == NOTEBOOKS


# -- parameters: rejected before any kernel starts ----------------------------------------

def test_unknown_or_missing_parameters_are_rejected_before_a_kernel_starts(tmp_path):
    good = {"manifest": "m.json", "results": str(tmp_path), "run_id": "r"}
    with pytest.raises(ParamsError, match=r"unknown notebook parameter\(s\) \['treshold'\]"):
        notebook.execute(SITE_ANALYSIS, {**good, "treshold": 3.0}, workdir=str(tmp_path))
    with pytest.raises(ParamsError, match=r"\['manifest', 'run_id'\] not given"):
        notebook.execute(SITE_ANALYSIS, {"results": str(tmp_path), "run_id": ""},
                         workdir=str(tmp_path))
    # No connection file, no executed notebook: no kernel was started.
    assert list(tmp_path.iterdir()) == []


def test_a_notebook_that_lost_a_parameter_the_runner_passes_fails_before_a_kernel(
        small_fleet, tmp_path):
    nb = nbformat.read(SITE_ANALYSIS, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = "\n".join(l for l in cell.source.splitlines() if not l.startswith("pid_file"))
    stale = tmp_path / "stale.ipynb"
    nbformat.write(nb, stale)
    with pytest.raises(ParamsError, match=r"\['pid_file'\]"):
        notebook.run_slice_papermill(small_fleet["manifest"], jobs.Paths(str(tmp_path), "r"),
                                     None, notebook=stale)
    assert not (tmp_path / "results").exists()


def test_the_notebook_checks_its_required_parameters_itself():
    # What the cell after `parameters` runs, so a hand-run papermill fails loudly too.
    with pytest.raises(ParamsError, match=r"\['manifest', 'run_id'\]"):
        notebook.SliceJob(manifest="", results="out", run_id="")


# -- scratch environment ------------------------------------------------------------------

def test_scratch_environment_keeps_writable_folders_and_replaces_unusable_ones(
        tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {"HOME": str(tmp_path / "home"), "IPYTHONDIR": str(blocker / "ipython")}
    got = notebook.scratch_environment(env)
    base = tmp_path / "tmp" / f"telemetry-lab-{os.getuid()}"
    assert got == {"HOME": str(tmp_path / "home"),
                   "JUPYTER_RUNTIME_DIR": str(base / "jupyter-runtime"),
                   "IPYTHONDIR": str(base / "ipython"),
                   "MPLCONFIGDIR": str(base / "matplotlib")}
    assert all(os.path.isdir(v) for v in got.values())


# -- running slices through the notebook --------------------------------------------------

def test_papermill_slice_matches_the_plain_runner_on_a_read_only_home(small_fleet, tmp_path):
    root = tmp_path / "root"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    # HOME below a regular file cannot be created, not even by root: as unwritable as a
    # read-only root filesystem. The other variables are unset, as on a bare image.
    env = {k: v for k, v in os.environ.items() if k not in notebook.SCRATCH_VARS}
    env.update(HOME=str(blocker / "home"), TMPDIR=str(scratch), PYTHONUNBUFFERED="1")
    p = cli("slice", "--engine", "papermill", "--manifest", small_fleet["manifest"],
            "--results", str(root), "--run-id", "pm1", "--array-index", "0", "--array-size", "2",
            env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Traceback" not in p.stderr, p.stderr

    entries = jobs.slice_entries(small_fleet["manifest"], 0, 2)
    stems = [stem for stem, _ in entries]
    assert [line.split()[1] for line in file_lines(p.stdout)] == stems
    assert all(line.startswith("OK ") for line in file_lines(p.stdout))
    summary = read_json(root / "results" / "pm1" / "_slices" / "00000.json")
    assert summary["exit_code"] == 0 and [f["stem"] for f in summary["files"]] == stems

    plain = jobs.run_slice(entries, jobs.Paths(str(tmp_path / "plain"), "pm1"),
                           AnalysisParams.preset("default"), log=lambda line: None)
    assert plain.exit_code == 0
    for stem in stems:
        doc = read_json(root / "results" / "pm1" / f"{stem}.json")
        assert comparable(doc) == comparable(read_json(tmp_path / "plain" / "results" / "pm1"
                                                       / f"{stem}.json"))
        assert read_json(root / "results" / "latest" / f"{stem}.json") == doc
        report = (root / "reports" / "pm1" / f"{stem}.html").read_text()
        assert doc["site_id"] in report

    executed = nbformat.read(root / "results" / "pm1" / "_notebooks" / "slice-00000.ipynb",
                             as_version=4)
    assert executed.metadata.papermill.parameters["run_id"] == "pm1"
    assert not executed.metadata.papermill.exception
    assert notebook.summary_from_notebook(executed).to_dict()["files"] == summary["files"]
    # The kernel ran on the scratch folders; the private working folder is gone.
    base = scratch / f"telemetry-lab-{os.getuid()}"
    assert (base / "ipython" / "profile_default").is_dir()
    assert [x.name for x in base.iterdir() if x.name.startswith("tl-")] == []


def test_a_failure_inside_the_notebook_fails_the_slice_with_the_recorded_exception(
        small_fleet, tmp_path):
    bad = tmp_path / "bad-params.json"
    bad.write_text(json.dumps({"z_threshold": -1}))
    paths = jobs.Paths(str(tmp_path / "root"), "bad")
    lines: list[str] = []
    with pytest.raises(ParamsError) as err:
        notebook.run_slice_papermill(small_fleet["manifest"], paths, str(bad), log=lines.append)
    record = notebook.notebook_uri(paths, 0)
    message = str(err.value)
    assert "site_analysis.ipynb failed in cell" in message and "z_threshold=-1" in message
    assert record in message and str(bad) in message
    assert err.value.exit_code == EXIT_PARAMS
    executed = nbformat.read(record, as_version=4)
    assert executed.metadata.papermill.exception is True
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert [e.ename for e in errors] == ["ParamsError"]
    assert file_lines("\n".join(lines)) == []
    assert not storage.exists(paths.slice_summary(0))


def test_a_stop_before_the_kernel_starts_skips_every_file_without_one(small_fleet, tmp_path):
    paths = jobs.Paths(str(tmp_path), "early")
    lines: list[str] = []
    summary = notebook.run_slice_papermill(small_fleet["manifest"], paths, None, index=1, size=2,
                                           should_stop=lambda: True, log=lines.append)
    stems = [stem for stem, _ in jobs.slice_entries(small_fleet["manifest"], 1, 2)]
    skipped = [line.split()[:2] for line in file_lines("\n".join(lines))]
    assert skipped == [["SKIP", stem] for stem in stems]
    assert summary.exit_code == EXIT_INTERRUPTED
    assert read_json(paths.slice_summary(1))["interrupted"] is True
    assert not (tmp_path / "results" / "early" / "_notebooks").exists()


@pytest.fixture(scope="module")
def slow_fleet(tmp_path_factory):
    """Five sites big enough (60,000 rows) that a SIGTERM lands mid-slice."""
    out = tmp_path_factory.mktemp("pm-slow")
    generate(fleet_specs(5, 60_000, seed=12, anomaly_rate=0.0), str(out), workers=2)
    return out


def test_sigterm_through_the_papermill_engine_skips_the_rest_and_exits_143(slow_fleet, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "telemetry_lab", "slice", "--engine", "papermill", "--manifest",
         str(slow_fleet / "manifest.json"), "--results", str(tmp_path), "--run-id", "t1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        first = proc.stdout.readline()
        assert first.startswith("OK "), first + proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED, first + rest + err
    lines = file_lines(first + rest)
    statuses = [line.split()[0] for line in lines]
    assert len(lines) == 5 and "SKIP" in statuses, lines
    # Files finish or are skipped in order: once one is skipped, so are the rest.
    assert statuses == sorted(statuses, key=lambda s: s == "SKIP"), statuses
    summary = read_json(tmp_path / "results" / "t1" / "_slices" / "00000.json")
    assert summary["interrupted"] and summary["exit_code"] == EXIT_INTERRUPTED
    assert summary["counts"]["SKIP"] == statuses.count("SKIP")
    done = sorted(x.stem for x in (tmp_path / "results" / "t1").glob("site-*.json"))
    assert done == sorted(line.split()[1] for line in lines if line.startswith("OK "))
