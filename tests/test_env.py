"""`tinygpt env`: what the machine offers MLX, as a table or JSON; and the CPU description figures carry."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tinygpt_mlx.envinfo import cpu_model

LINUX = sys.platform.startswith("linux")


def test_env_json_names_device_blas_and_cpu():
    out = subprocess.run([sys.executable, "-m", "tinygpt_mlx.cli.__main__", "env", "--json", "--no-hub"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    for key in ("python", "mlx", "mlx_lm", "numpy", "device", "backend", "cpu", "gemm_fp32_gflops"):
        assert key in record
    assert record["gemm_fp32_gflops"] > 0
    if LINUX and record["backend"] == "cpu":
        assert record["blas"].startswith(("OpenBLAS", "Intel")), record["blas"]
        assert record["blas_library"] and record["blas_threads"] >= 1
        assert "blas_note" not in record, record["blas_note"]  # no generic kernel, no missing library
        assert record["cpu_kernels"].startswith(("ready (", "off", "unavailable")), record["cpu_kernels"]


@pytest.mark.skipif(not LINUX, reason="reads /proc/cpuinfo")
def test_cpu_model_names_vendor_family_and_simd():
    text = cpu_model()
    assert "cores" in text
    if "GenuineIntel" in text or "AuthenticAMD" in text:
        assert "family" in text and "model" in text
