"""The compiled kernels' portable loops (what machines without AVX2, arm64 among them, run)
pass the same checks as the loops this machine runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO

KERNEL_TESTS = ["tests/test_detect.py", "tests/test_detect_robust.py", "tests/test_stats.py",
                "tests/test_spectral.py"]


@pytest.fixture(scope="module")
def portable_kernels(tmp_path_factory):
    out = tmp_path_factory.mktemp("portable")
    env = {**os.environ, "CFLAGS": "-DTELEMETRY_LAB_PORTABLE"}
    built = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(out / "lib"),
                            "--build-temp", str(out / "tmp")], cwd=REPO, env=env,
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    (path,) = (out / "lib" / "telemetry_lab").glob("_kernels*")
    return path


def test_portable_build_has_no_simd_loops(portable_kernels):
    probe = subprocess.run(
        [sys.executable, "-c", "import conftest; from telemetry_lab import _kernels; print(_kernels.simd)"],
        cwd=REPO / "tests", env={**os.environ, "TELEMETRY_LAB_KERNELS": str(portable_kernels)},
        capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "none"


def test_kernel_tests_pass_on_the_portable_build(portable_kernels):
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *KERNEL_TESTS],
                         cwd=REPO, env={**os.environ, "TELEMETRY_LAB_KERNELS": str(portable_kernels)},
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout
