"""What this process runs on: device, BLAS, a GEMM figure, library versions, hub reachability."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

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


def cpu_model() -> str:
    """The CPU this runs on, as figures should name it: model name, vendor, family/model, widest SIMD."""
    if sys.platform == "darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=5).stdout.strip() or platform.machine()
        except (OSError, subprocess.SubprocessError):
            return platform.machine()
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            name, _, value = line.partition(":")
            fields.setdefault(name.strip(), value.strip())
    except OSError:
        return platform.processor() or platform.machine()
    from tinygpt_mlx.cpu.blas import cpu_simd

    flags = set(fields.get("flags", "").split())
    simd = cpu_simd() or ("asimd" if "asimd" in fields.get("Features", "") else "")
    extras = [name for name in ("avx512_bf16", "amx_tile") if name in flags]
    name = fields.get("model name") or fields.get("CPU part") or platform.machine()
    family = f"family {fields['cpu family']} model {fields['model']}" if "cpu family" in fields else ""
    details = ", ".join(part for part in (fields.get("vendor_id", ""), family, " ".join([simd.upper(), *extras]).strip(),
                                           f"{os.cpu_count()} cores") if part)
    return f"{name} ({details})"


def blas_record() -> dict:
    """The BLAS MLX's CPU matmuls use: one-line summary plus library, kernel, threads and source."""
    if not sys.platform.startswith("linux"):
        return {"blas": "Apple Accelerate" if sys.platform == "darwin" else "bundled"}
    from tinygpt_mlx.cpu.blas import blas_description, blas_info

    info = blas_info()
    record = {"blas": blas_description(), "blas_library": info["library"], "blas_kernel": info["kernel"],
              "blas_threads": info["threads"], "blas_source": info["source"]}
    if info["note"]:
        record["blas_note"] = info["note"]
    return record


def environment_record(gemm: bool = False, hub: bool = False, load_kernels: bool = False) -> dict:
    """A JSON-able record of the environment (for `tinygpt env` and each run's env.json)."""
    device, backend = device_description()
    record = {"device": device, "backend": backend, "cpu": cpu_model()}
    if backend == "cpu":
        from tinygpt_mlx.cpu import kernels

        if load_kernels:
            kernels.load()
        record.update(blas_record())
        record["cpu_kernels"] = kernels.status()
    record.update({
        "platform": f"{platform.system()} {platform.machine()}",
        "python": sys.version.split()[0],
        "mlx": _version("mlx"),
        "mlx_lm": _version("mlx-lm"),
        "numpy": _version("numpy"),
        "git_sha": git_sha(Path(__file__).resolve().parent),
    })
    if gemm:
        record["gemm_fp32_gflops"] = round(measure_gemm_gflops(), 1)
    if hub:
        record["hub_reachable"] = hub_reachable()
    return record
