"""The fast-BLAS loader and `tinygpt env`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tinygpt_mlx.cpu.blas import blas_description, ensure_fast_blas

LINUX = sys.platform.startswith("linux")


def run_python(code: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.skipif(not LINUX, reason="the BLAS loader only acts on Linux")
def test_fast_blas_loaded_in_this_process():
    assert ensure_fast_blas() == "loaded", "install OpenBLAS (scripts/install_blas.sh)"
    assert "OpenBLAS" in blas_description()


@pytest.mark.skipif(not LINUX, reason="the BLAS loader only acts on Linux")
def test_env_reports_fast_gemm():
    out = subprocess.run([sys.executable, "-m", "tinygpt_mlx.cli.__main__", "env", "--json", "--no-hub"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["blas"].startswith("OpenBLAS")
    assert record["backend"] == "cpu"
    assert record["cpu_kernels"].startswith("ready ("), record["cpu_kernels"]  # `env` builds them if needed
    for key in ("python", "mlx", "mlx_lm", "numpy", "device", "gemm_fp32_gflops"):
        assert key in record
    # The reference BLAS manages ~5 GFLOP/s here; OpenBLAS ~180. 50 separates them even on a busy machine.
    assert record["gemm_fp32_gflops"] > 50


@pytest.mark.skipif(not LINUX, reason="the BLAS loader only acts on Linux")
def test_missing_blas_warns_once_with_the_fix():
    code = (
        "import warnings, tinygpt_mlx.cpu.blas as b\n"
        "b._CANDIDATES = (); b._state.update(status='not-loaded')\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    print(b.ensure_fast_blas()); b.ensure_fast_blas()\n"
        "print(len(w)); print(w[0].message)\n"
    )
    out = run_python(code, {"TINYGPT_BLAS": "/nonexistent/libopenblas.so"})
    lines = out.stdout.splitlines()
    assert lines[0] == "missing" and lines[1] == "1"
    assert "libopenblas0-pthread" in lines[2] and "TINYGPT_BLAS" in lines[2]


def test_blas_too_late_when_mlx_imported_first():
    out = run_python("import mlx.core, tinygpt_mlx.cpu.blas as b; print(b.ensure_fast_blas())")
    assert out.stdout.strip() in ("too-late", "native")
