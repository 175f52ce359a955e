"""Two real ranks on loopback: free ports, and starting ranks by hand or with mlx.launch.

Ranks are started the way `mlx.launch --backend ring` starts them (MLX_RANK plus an MLX_HOSTFILE holding
a JSON list of "ip:port" lists, one per rank), which lets a test see each rank's own exit code (mlx.launch
itself exits 0 whatever its ranks did). Every rank gets one BLAS thread so two ranks share the 2 cores
without fighting, and every wait has a timeout so a test can never hang.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import pytest

from tinygpt_mlx.train import checkpoint as ck
from tinygpt_mlx.train.metrics import METRICS_FILE, read_metrics

HERE = Path(__file__).resolve().parent
WORKER = HERE / "rank_worker.py"
LAUNCH = Path(sys.executable).with_name("mlx.launch")
TIMEOUT_S = 60  # per launch; the runs take a few seconds


def free_ports(n: int) -> int:
    """A base port such that base .. base + n - 1 are free right now (mlx.launch counts up from one)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n > 65535:
            continue
        socks = [socket.socket() for _ in range(n)]
        try:
            for i, sock in enumerate(socks):
                sock.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free consecutive ports")


def rank_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of one rank: one BLAS thread, plain console output."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return {**env, **(extra or {})}


def spawn_ranks(tmp_path: Path, args: list[str], n: int = 2, env: dict[str, str] | None = None,
                fault: str | None = None) -> list[subprocess.Popen]:
    """Start n ranks of `tinygpt ARGS` (through rank_worker.py, which may inject `fault` on rank 1)."""
    base = free_ports(n)
    hostfile = tmp_path / f"hosts-{base}.json"
    hostfile.write_text(json.dumps([[f"127.0.0.1:{base + r}"] for r in range(n)]))
    procs = []
    for rank in range(n):
        extra = {"MLX_RANK": str(rank), "MLX_HOSTFILE": str(hostfile), **(env or {})}
        if fault:
            extra["TINYGPT_TEST_FAULT"] = fault
        procs.append(subprocess.Popen([sys.executable, str(WORKER), *args], env=rank_env(extra),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def finish(procs: list[subprocess.Popen], timeout: float = TIMEOUT_S) -> list[tuple[int, str, str]]:
    """(exit code, stdout, stderr) of each rank; kills every rank that outlives the timeout."""
    out = []
    for proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            stdout, stderr = proc.communicate()
            pytest.fail(f"rank {procs.index(proc)} still running after {timeout} s:\n{stdout}\n{stderr}")
        out.append((proc.returncode, stdout, stderr))
    return out


def mlx_launch(args: list[str], n: int = 2) -> subprocess.CompletedProcess:
    """`mlx.launch --backend ring -n N -- tinygpt ARGS` on loopback, as a user would run it."""
    cmd = [str(LAUNCH), "--backend", "ring", "-n", str(n), "-p", str(free_ports(n)),
           "--env", "OPENBLAS_NUM_THREADS=1", "--", sys.executable, "-m", "tinygpt_mlx", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=rank_env())


def train_losses(run_dir: Path) -> dict[int, float]:
    """step -> logged train loss from a run folder's metrics.jsonl."""
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / METRICS_FILE, "train")}


def max_weight_diff(a: Path, b: Path) -> float:
    """Largest absolute difference between two checkpoints' weights (same names required)."""
    wa, wb = mx.load(str(a / ck.MODEL_FILE)), mx.load(str(b / ck.MODEL_FILE))
    assert sorted(wa) == sorted(wb)
    return max(mx.abs(wa[k] - wb[k]).max().item() for k in wa)
