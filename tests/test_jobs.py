import json
import os
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import given, strategies as st

from telemetry_lab import jobs
from telemetry_lab.generate import fleet_specs, generate

from conftest import read_json


@given(n=st.integers(0, 300), size=st.integers(1, 40))
def test_partition_covers_every_file_once_in_contiguous_balanced_slices(n, size):
    files = list(range(n))
    slices = [jobs.partition(files, i, size) for i in range(size)]
    assert [f for s in slices for f in s] == files
    lengths = [len(s) for s in slices]
    assert max(lengths) - min(lengths) <= 1
    assert lengths == sorted(lengths, reverse=True)  # the remainder goes to the first slices


@pytest.mark.parametrize("index,size", [(0, 0), (3, 3), (-1, 2)])
def test_partition_rejects_bad_positions(index, size):
    with pytest.raises(ValueError):
        jobs.partition([1, 2, 3], index, size)


def cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "telemetry_lab", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_local_array_job_end_to_end(small_fleet, tmp_path):
    results = tmp_path / "results-root"
    p = cli("run", "--manifest", small_fleet["manifest"], "--results", str(results),
            "--files-per-job", "3", "--workers", "2", "--run-id", "e2e", "--quiet")
    assert p.returncode == 0, p.stdout + p.stderr
    latest = sorted(x.name for x in (results / "results" / "latest").iterdir())
    assert latest == [f"site-{i:04d}.json" for i in range(4)]
    run = read_json(results / "results" / "e2e" / "_run.json")
    assert run["array_size"] == 2 and run["counts"] == {"OK": 4, "FAIL": 0, "SKIP": 0, "NOT_RUN": 0}
    assert sorted(f["stem"] for f in run["files"]) == [f"site-{i:04d}" for i in range(4)]
    doc = read_json(results / "results" / "e2e" / "site-0001.json")
    assert doc["run_id"] == "e2e"
    assert doc["report"]["equipment_health"] == "critical"
    assert any(e["channel"] == "sensor_13" and e["peak_z"] > 10 for e in doc["events"])
    assert sum(l.startswith("OK ") for l in p.stdout.splitlines()) == 4


def test_slice_index_and_size_come_from_the_batch_environment(small_fleet, tmp_path):
    env = dict(os.environ, AWS_BATCH_JOB_ARRAY_INDEX="1", TELEMETRY_LAB_ARRAY_SIZE="2",
               TELEMETRY_LAB_RUN_ID="envrun")
    p = cli("slice", "--manifest", small_fleet["manifest"], "--results", str(tmp_path), env=env)
    assert p.returncode == 0, p.stderr
    done = sorted(x.name for x in (tmp_path / "results" / "envrun").glob("site-*.json"))
    assert done == ["site-0002.json", "site-0003.json"]
    summary = read_json(tmp_path / "results" / "envrun" / "_slices" / "00001.json")
    assert summary["index"] == 1 and summary["size"] == 2


@pytest.fixture(scope="module")
def slow_fleet(tmp_path_factory):
    """Six sites big enough (150,000 rows) that a SIGTERM lands mid-slice."""
    out = tmp_path_factory.mktemp("slowfleet")
    generate(fleet_specs(6, 150_000, seed=11, anomaly_rate=0.0), str(out), workers=2)
    return out


def slice_stopped_after_one_file(slow_fleet, tmp_path, signum):
    """Start a slice, send ``signum`` once its first file is done; (args, proc, first line)."""
    args = [sys.executable, "-m", "telemetry_lab", "slice", "--manifest",
            str(slow_fleet / "manifest.json"), "--results", str(tmp_path), "--run-id", "r1"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    first = proc.stdout.readline()
    assert first.startswith("OK "), first + proc.stderr.read()
    proc.send_signal(signum)
    return args, proc, first


def test_sigterm_mid_slice_then_retry_completes_without_redoing(slow_fleet, tmp_path):
    args, proc, first = slice_stopped_after_one_file(slow_fleet, tmp_path, signal.SIGTERM)
    rest, err = proc.communicate(timeout=120)
    lines = [first.strip()] + rest.splitlines()
    assert proc.returncode == 143, err
    ok = [l.split()[1] for l in lines if l.startswith("OK ")]
    skipped = [l.split()[1] for l in lines if l.startswith("SKIP ")]
    assert 1 <= len(ok) < 6 and len(ok) + len(skipped) == 6
    summary = read_json(tmp_path / "results" / "r1" / "_slices" / "00000.json")
    assert summary["interrupted"] and summary["counts"]["SKIP"] == len(skipped)
    for stem in skipped:
        assert not (tmp_path / "results" / "r1" / f"{stem}.json").exists()
    mtimes = {s: (tmp_path / "results" / "r1" / f"{s}.json").stat().st_mtime_ns for s in ok}

    time.sleep(0.01)
    retry = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert retry.returncode == 0, retry.stdout + retry.stderr
    reused = [l.split()[1] for l in retry.stdout.splitlines() if "reused" in l]
    assert sorted(reused) == sorted(ok)
    for s in ok:
        assert (tmp_path / "results" / "r1" / f"{s}.json").stat().st_mtime_ns == mtimes[s]
    assert len(list((tmp_path / "results" / "r1").glob("site-*.json"))) == 6


def test_sigint_mid_slice_exits_130(slow_fleet, tmp_path):
    """An interrupt (Ctrl-C) stops the slice like SIGTERM, and says so in its exit code."""
    _, proc, _ = slice_stopped_after_one_file(slow_fleet, tmp_path, signal.SIGINT)
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert any(line.startswith("SKIP ") for line in rest.splitlines())
    summary = read_json(tmp_path / "results" / "r1" / "_slices" / "00000.json")
    assert summary["stop_signal"] == signal.SIGINT and summary["exit_code"] == 130


def test_unwritable_results_root_fails_the_slice_before_any_analysis(small_fleet, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # below a regular file nothing can be created, even by root
    proc = cli("slice", "--manifest", small_fleet["manifest"], "--results", str(blocker / "out"))
    assert proc.returncode == 6, proc.stdout + proc.stderr
    assert str(blocker / "out") in proc.stderr and "\n" not in proc.stderr.strip()
    assert not any(line.startswith(("OK ", "FAIL ")) for line in proc.stdout.splitlines())


def test_retry_with_other_params_redoes_the_work(small_fleet, tmp_path):
    args = ["slice", "--manifest", small_fleet["manifest"], "--results", str(tmp_path), "--run-id", "r2"]
    assert cli(*args).returncode == 0
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"z_threshold": 7.5}))
    again = cli(*args, "--params", str(params))
    assert again.returncode == 0
    assert "reused" not in again.stdout
    assert read_json(tmp_path / "results" / "r2" / "site-0000.json")["params"]["z_threshold"] == 7.5


def test_manifest_naming_missing_files_fails_those_and_completes_the_rest(small_fleet, tmp_path):
    m = json.loads(open(small_fleet["manifest"]).read())
    m["files"].insert(1, {"bucket": "", "key": str(small_fleet["dir"] / "gone.parquet")})
    m["total_files"] += 1
    path = tmp_path / "m.json"
    path.write_text(json.dumps(m))
    p = cli("slice", "--manifest", str(path), "--results", str(tmp_path), "--run-id", "r3")
    assert p.returncode == 6, p.stdout
    assert "FAIL gone" in p.stdout and "no such file" in p.stdout
    assert len(list((tmp_path / "results" / "r3").glob("site-*.json"))) == 4
    assert read_json(tmp_path / "results" / "r3" / "errors" / "gone.json")["kind"] == "storage"
