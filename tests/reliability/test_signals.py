"""SIGINT / SIGTERM sent to a real `tinygpt train` process: finish the step, checkpoint, exit 130 / 143."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tinygpt_mlx.train import checkpoint as ck
from tinygpt_mlx.train.metrics import read_metrics

REPO = Path(__file__).resolve().parents[2]


def tinygpt(*args: str) -> list[str]:
    return [sys.executable, "-m", "tinygpt_mlx", *args]


def wait_for_steps(proc: subprocess.Popen, metrics: Path, n: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while len(read_metrics(metrics, "train")) < n:
        if proc.poll() is not None:
            pytest.fail(f"training exited early with {proc.returncode}: {proc.stderr.read()}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail("training did not reach the wanted step in time")
        time.sleep(0.05)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_checkpoints_and_resumes(config_file: Path, tmp_path: Path, sig: int, code: int) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen(
        tinygpt("train", "--config", str(config_file), "-o", "schedule.max_steps=100000",
                "-o", "checkpoint.save_every=100000"),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_steps(proc, run / "metrics.jsonl", 3)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err

    # Exactly one checkpoint: the one the signal asked for, at the last step that ran.
    (folder,) = ck.list_checkpoints(run)
    stopped = ck.step_of(folder)
    assert stopped >= 3 and (run / "last").resolve() == folder
    assert read_metrics(run / "metrics.jsonl", "train")[-1]["step"] == stopped
    assert f"stopped by signal {int(sig)} at step {stopped}" in out
    assert json.loads((folder / "state.json").read_text())["step"] == stopped

    done = subprocess.run(tinygpt("train", "--config", str(config_file), "--resume", "auto",
                                  "--max-steps", str(stopped + 2)),
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"resuming from {folder} at step {stopped}" in done.stdout
    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl", "train")]
    assert steps == list(range(1, stopped + 3))
