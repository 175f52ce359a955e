"""What this process runs on: device, BLAS, a GEMM figure, library versions, hub reachability."""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from tinygpt_mlx.cpu.blas import blas_description
from tinygpt_mlx.device import device_description


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def measure_gemm_gflops(n: int = 1024, repeats: int = 5) -> float:
    """fp32 n x n matmul throughput on MLX's default device, median of repeats, warm-up excluded."""
    import mlx.core as mx

    a = mx.random.normal((n, n), key=mx.random.key(0))
    b = mx.random.normal((n, n), key=mx.random.key(1))
    mx.eval(a, b)
    for _ in range(2):
        mx.eval(a @ b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        mx.eval(a @ b)
        times.append(time.perf_counter() - start)
    times.sort()
    return 2 * n**3 / times[len(times) // 2] / 1e9


def hub_reachable(timeout: float = 2.0) -> bool:
    """True when a TCP connection to huggingface.co:443 opens within the timeout."""
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def git_sha(path: str | Path = ".") -> str:
    """Commit of the working tree the run starts from, with `-dirty` when it has changes."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def environment_record(gemm: bool = False, hub: bool = False, load_kernels: bool = False) -> dict:
    """A JSON-able record of the environment (for `tinygpt env` and each run's env.json)."""
    from tinygpt_mlx import kernels

    device, backend = device_description()
    if load_kernels and backend == "cpu":
        kernels.load()
    record = {
        "device": device,
        "backend": backend,
        "blas": blas_description() if backend == "cpu" else "n/a (accelerator)",
        "cpu_kernels": kernels.status() if backend == "cpu" else "n/a (accelerator)",
        "platform": f"{platform.system()} {platform.machine()}",
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "mlx": _version("mlx"),
        "mlx_lm": _version("mlx-lm"),
        "numpy": _version("numpy"),
        "git_sha": git_sha(Path(__file__).resolve().parent),
    }
    if gemm:
        record["gemm_fp32_gflops"] = round(measure_gemm_gflops(), 1)
    if hub:
        record["hub_reachable"] = hub_reachable()
    return record
