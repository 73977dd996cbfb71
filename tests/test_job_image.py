"""The job image: its Dockerfile, and its entry point run the way the container runs it.

No Docker engine runs here, so the entry point runs as a plain process in a sandbox that
reproduces the job definition: a private mount namespace in which every filesystem is
read-only except a scratch folder (standing in for the /tmp tmpfs) and the results folder,
no Linux capabilities, the package imported from a read-only copy, and a working folder
nothing may be written to. An audit hook in the child records every file the Python code
opens for writing, so a write that fails quietly still shows up.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from telemetry_lab import container
from telemetry_lab.cli import main as cli_main
from telemetry_lab.errors import EXIT_INTERRUPTED, StorageError

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "job_image" / "Dockerfile"
DOCKERIGNORE = REPO / "job_image" / "Dockerfile.dockerignore"
HADOLINT = REPO / ".venv-checkov" / "bin" / "hadolint"
RUN_ID = "ro-test"
IMAGE_UID = 10001


# -- the Dockerfile --------------------------------------------------------------------

def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of each logical line, continuations joined."""
    out, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        pending += " " + line[:-1] if line.endswith("\\") else " " + line
        if not line.endswith("\\"):
            keyword, _, args = pending.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
            pending = ""
    return out


def final_stage(instrs):
    start = max(i for i, (k, _) in enumerate(instrs) if k == "FROM")
    return instrs[start:]


def env_of(instrs) -> dict[str, str]:
    env = {}
    for key, args in instrs:
        if key == "ENV":
            env.update(dict(re.findall(r'(\w+)=("[^"]*"|\S+)', args)))
    return env


def test_hadolint_reports_nothing():
    if not HADOLINT.exists():
        pytest.skip(f"{HADOLINT} missing: `make .venv-checkov/.installed` installs it")
    proc = subprocess.run([str(HADOLINT), "--no-color", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_base_images_are_pinned_and_nothing_is_added():
    instrs = instructions()
    stages = {args.split()[-1] for key, args in instrs if key == "FROM" and " AS " in args.upper()}
    for key, args in instrs:
        if key == "FROM":
            image = args.split()[0]
            if image in stages:
                continue
            name, _, tag = image.partition("@")[0].partition(":")
            assert tag and tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag), image
        assert key != "ADD", "use COPY: ADD fetches URLs and unpacks archives implicitly"


def test_final_stage_runs_as_the_non_root_user_with_an_exec_form_entrypoint():
    stage = final_stage(instructions())
    users = [args for key, args in stage if key == "USER"]
    assert users, "the final stage must set USER"
    uid, _, gid = users[-1].partition(":")
    assert uid == str(IMAGE_UID) and gid == str(IMAGE_UID)
    entry = [args for key, args in stage if key == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["telemetry-lab-container"]


def test_final_stage_points_every_writer_at_tmp_as_the_entrypoint_does():
    env = env_of(final_stage(instructions()))
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env[container.ENGINE_ENV] == container.DEFAULT_ENGINE
    for name, sub in container.SCRATCH_DIRS.items():
        assert env[name] == f"/tmp/{sub}", name


def test_image_points_the_engines_at_the_folders_it_copies():
    from telemetry_lab import notebook, render

    stage = final_stage(instructions())
    env = env_of(stage)
    copied = {args.split()[-1]: args.split()[-2] for key, args in stage
              if key == "COPY" and not args.startswith("--")}
    assert copied[env[notebook.NOTEBOOKS_DIR_ENV]] == "notebooks"
    assert (REPO / "notebooks" / notebook.SITE_ANALYSIS).is_file()
    assert copied[env[render.REPORTS_DIR_ENV]] == "reports"
    assert (REPO / "reports" / render.SITE_TEMPLATE / "conf.json").is_file()
    assert (REPO / "reports" / render.INDEX_TEMPLATE).is_file()
    assert any(key == "WORKDIR" and args == "/opt/telemetry-lab" for key, args in stage)


def test_build_context_allows_every_copied_source():
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    assert "*" in lines, "the ignore file is an allow-list: exclude everything first"
    allowed = [line[1:].rstrip("/") for line in lines if line.startswith("!")]
    for key, args in instructions():
        if key != "COPY" or args.startswith("--from"):
            continue
        sources = [a for a in args.split()[:-1] if not a.startswith("--")]
        for src in sources:
            top = src.rstrip("/").split("/")[0]
            assert top in allowed, f"COPY {src}: not in the allow-list of {DOCKERIGNORE.name}"
            # git keeps no empty folder, so a clone has the source only if it holds a file.
            path = REPO / top
            assert path.is_file() or any(f.is_file() for f in path.rglob("*")), \
                f"COPY {src}: no file there, so `docker build` fails on a fresh clone"


def test_console_script_is_declared():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts.get("telemetry-lab-container") == "telemetry_lab.container:main"


# -- the entry point's pieces, in process ---------------------------------------------------

def test_unset_scratch_variables_go_below_the_temporary_directory(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    env = {"HOME": str(tmp_path / "given-home")}
    chosen = container.prepare_environment(env)
    assert chosen["HOME"] == str(tmp_path / "given-home")
    for name, sub in container.SCRATCH_DIRS.items():
        if name != "HOME":
            assert env[name] == chosen[name] == str(tmp_path / sub)
        assert Path(env[name]).is_dir()


def test_an_unwritable_scratch_variable_is_an_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with pytest.raises(StorageError, match="MPLCONFIGDIR") as info:
        container.prepare_environment({"MPLCONFIGDIR": "/proc/telemetry-lab-mpl"})
    assert info.value.file == "/proc/telemetry-lab-mpl"


@pytest.mark.parametrize("argv, env, expected", [
    (["slice", "--manifest", "m"], {}, ["slice", "--manifest", "m", "--engine", "papermill"]),
    (["slice", "--manifest", "m"], {"TELEMETRY_LAB_ENGINE": "python"},
     ["slice", "--manifest", "m", "--engine", "python"]),
    (["slice", "--engine=python"], {"TELEMETRY_LAB_ENGINE": "papermill"},
     ["slice", "--engine=python"]),
    (["analyse", "f.parquet"], {"TELEMETRY_LAB_ENGINE": "python"}, ["analyse", "f.parquet"]),
])
def test_engine_comes_from_the_environment_unless_given(argv, env, expected):
    assert container.with_engine(argv, env) == expected


# -- the entry point in a read-only sandbox ---------------------------------------------

#: Runs inside a new mount namespace: bind the writable folders onto themselves, remount
#: every other mount read-only (keeping its nosuid/nodev/... flags, which a user namespace
#: must), prove the filesystem refuses a write, then drop every capability and exec.
SANDBOX = r'''
import errno, os, re, subprocess, sys
sep = sys.argv.index("--")
writable, command = sys.argv[1:sep], sys.argv[sep + 1:]
for path in writable:
    subprocess.run(["mount", "--bind", path, path], check=True)
with open("/proc/self/mountinfo") as f:
    mounts = [line.split() for line in f]
for fields in mounts:
    point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
    if point in writable or point.split("/")[1] in ("proc", "sys", "dev"):
        continue
    flags = [o for o in fields[5].split(",") if o not in ("rw", "ro")]
    subprocess.run(["mount", "-o", ",".join(["remount", "bind", "ro", *flags]), point],
                   check=True)
probe = os.path.join(os.path.dirname(writable[0]), ".sandbox-probe")
try:
    open(probe, "w").close()
except OSError as exc:
    if exc.errno != errno.EROFS:
        raise
else:
    os.unlink(probe)
    sys.exit("sandbox: the filesystem is still writable")
os.execvp("setpriv", ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--", *command])
'''

#: The child: the console script's body plus an audit hook listing Python-level writes
#: outside the writable folders, printed to stderr at exit.
CHILD = r'''
import atexit, json, os, sys
roots = tuple(os.path.realpath(p) + os.sep for p in json.loads(os.environ.pop("TL_TEST_WRITABLE")))
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
# event: (index of a path it changes, index of the dir_fd that path is relative to)
EVENTS = {"os.mkdir": [(0, 2)], "os.remove": [(0, 1)], "os.rmdir": [(0, 1)],
          "os.rename": [(0, 2), (1, 3)], "os.link": [(1, 3)], "os.symlink": [(1, 2)],
          "os.truncate": [(0, None)], "os.chmod": [(0, 2)], "os.chown": [(0, 3)],
          "os.utime": [(0, 3)], "shutil.rmtree": [(0, 1)]}
outside = set()
def check(path, dir_fd=None):
    if isinstance(path, (str, bytes, os.PathLike)):
        path = os.fsdecode(path)
        if isinstance(dir_fd, int) and not os.path.isabs(path):
            path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
        real = os.path.realpath(path) + os.sep
        if not real.startswith(roots) and real != "/dev/null/":
            outside.add(real.rstrip(os.sep))
def hook(event, args):
    if event == "open" and args[2] & WRITE:
        check(args[0])
    for path_at, fd_at in EVENTS.get(event, ()):
        check(args[path_at], args[fd_at] if fd_at is not None and fd_at < len(args) else None)
sys.addaudithook(hook)
atexit.register(lambda: print("AUDIT " + json.dumps(sorted(outside)), file=sys.stderr, flush=True))
import telemetry_lab.container as c
print("LOADED " + c.__file__, file=sys.stderr, flush=True)
sys.exit(c.main(sys.argv[1:]))
'''


def _set_read_only(root: Path, read_only: bool) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        if read_only:
            path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        else:
            path.chmod(mode | stat.S_IWUSR)


def _unshare_prefix() -> list[str]:
    base = ["unshare", "--mount", "--propagation", "private"]
    return base if os.geteuid() == 0 else [*base[:1], "--user", "--map-root-user", *base[1:]]


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory):
    """A read-only copy of the package, two generated sites and an empty working folder."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the sandbox needs Linux mount namespaces")
    for tool in ("unshare", "setpriv", "mount"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} (util-linux) is not installed")
    probe = subprocess.run([*_unshare_prefix(), "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        if os.geteuid() == 0:
            pytest.fail(f"unshare failed as root: {probe.stderr}")
        pytest.skip(f"this user cannot create a mount namespace: {probe.stderr.strip()}")

    base = tmp_path_factory.mktemp("job-image")
    site = base / "site"
    shutil.copytree(REPO / "telemetry_lab", site / "telemetry_lab",
                    ignore=shutil.ignore_patterns("__pycache__"))
    data = base / "data"
    assert cli_main(["generate", "--sites", "2", "--rows", "5000", "--seed", "5",
                     "--out", str(data), "--workers", "1", "--quiet"]) == 0
    workdir = base / "workdir"
    workdir.mkdir()
    tree = {"site": site, "data": data, "workdir": workdir}
    for path in tree.values():
        _set_read_only(path, True)
    yield tree
    for path in tree.values():
        _set_read_only(path, False)


def start_entrypoint(tree, scratch: Path, results: Path, extra_env=(), **popen
                     ) -> subprocess.Popen:
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "PYTHONPATH": str(tree["site"]),
        "TMPDIR": str(scratch),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "TELEMETRY_LAB_ENGINE": "python",
        "AWS_BATCH_JOB_ARRAY_INDEX": "0",
        "TELEMETRY_LAB_ARRAY_SIZE": "1",
        "TELEMETRY_LAB_RUN_ID": RUN_ID,
        "TL_TEST_WRITABLE": json.dumps([str(scratch), str(results)]),
        **dict(extra_env),
    }
    command = [sys.executable, "-c", CHILD, "slice", "--manifest",
               str(tree["data"] / "manifest.json"), "--results", str(results)]
    return subprocess.Popen(
        [*_unshare_prefix(), sys.executable, "-c", SANDBOX, str(scratch), str(results), "--",
         *command], env=env, cwd=tree["workdir"], **popen)


def audit(stderr: str) -> list[str]:
    lines = [line for line in stderr.splitlines() if line.startswith("AUDIT ")]
    assert len(lines) == 1, stderr
    return json.loads(lines[0][len("AUDIT "):])


def test_entrypoint_runs_a_slice_with_only_scratch_and_results_writable(image_tree, tmp_path):
    scratch, results = tmp_path / "scratch", tmp_path / "results"
    scratch.mkdir()
    results.mkdir()
    proc = start_entrypoint(image_tree, scratch, results, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err

    assert f"LOADED {image_tree['site'] / 'telemetry_lab' / 'container.py'}" in err
    assert audit(err) == [], "Python code wrote outside scratch and results"
    assert "Read-only file system" not in err
    for name, sub in container.SCRATCH_DIRS.items():
        assert f"{name}={scratch / sub}" in err
        assert (scratch / sub).is_dir()

    run = results / "results" / RUN_ID
    summary = json.loads((run / "_slices" / "00000.json").read_text())
    assert summary["counts"] == {"OK": 2, "FAIL": 0, "SKIP": 0}
    for stem in ("site-0000", "site-0001"):
        doc = json.loads((run / f"{stem}.json").read_text())
        assert doc["rows"] == 5000 and doc["run_id"] == RUN_ID
        assert (results / "results" / "latest" / f"{stem}.json").exists()
        assert f"OK   {stem} rows=5000" in out


def test_sigterm_mid_run_skips_the_rest_and_exits_143(image_tree, tmp_path):
    """SIGTERM after the first file: it is kept, the second is skipped, exit code 143.

    To stop between the two files without a race, the child's stdout is a one-page pipe
    filled almost to the brim: writing the first file's OK line blocks it until the test
    has sent SIGTERM and starts reading.
    """
    scratch, results = tmp_path / "scratch", tmp_path / "results"
    scratch.mkdir()
    results.mkdir()
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    capacity = fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ)
    os.write(write_end, b"#" * (capacity - 9) + b"\n")  # 8 bytes left: less than a line
    stderr_path = tmp_path / "stderr.txt"
    with open(stderr_path, "w") as stderr:
        proc = start_entrypoint(image_tree, scratch, results, stdout=write_end, stderr=stderr)
    os.close(write_end)
    try:
        first = results / "results" / RUN_ID / "site-0000.json"
        deadline = time.monotonic() + 60
        while not first.exists():
            assert proc.poll() is None, stderr_path.read_text()
            assert time.monotonic() < deadline, "the first result never appeared"
            time.sleep(0.02)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert re.search(r"^NoNewPrivs:\s+1$", status, re.M), status
        proc.send_signal(signal.SIGTERM)
        with os.fdopen(read_end, "r") as pipe:
            out = pipe.read()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = stderr_path.read_text()
    assert proc.returncode == EXIT_INTERRUPTED, out + err
    assert "SKIP site-0001 not started: run stopped by signal" in out
    assert "OK   site-0000" in out
    assert audit(err) == []
    run = results / "results" / RUN_ID
    summary = json.loads((run / "_slices" / "00000.json").read_text())
    assert summary["interrupted"] is True
    assert summary["counts"] == {"OK": 1, "FAIL": 0, "SKIP": 1}
    assert not (run / "site-0001.json").exists()
