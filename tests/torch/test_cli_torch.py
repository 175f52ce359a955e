"""`tinygpt train --backend torch` end to end, resumed by the MLX backend; torch stays optional."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tinygpt_mlx.config import dump_config
from tinygpt_mlx.train import checkpoint as ck
from tinygpt_mlx.train.metrics import read_metrics

REPO = Path(__file__).resolve().parents[2]
# Without torch: `import torch` raises ImportError, exactly as when the extra is not installed.
NO_TORCH = "import sys; sys.modules['torch'] = None; "


def tinygpt(*args: str, prelude: str = "") -> subprocess.CompletedProcess:
    code = f"{prelude}import sys; from tinygpt_mlx.cli import main; sys.argv = ['tinygpt', *{list(args)!r}]; main()"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # a shared 2-core CI box: one torch thread is far faster
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=env)


@pytest.fixture
def config_file(tmp_path: Path, make_config) -> Path:
    cfg = make_config(tmp_path, schedule={"max_steps": 6}, eval={"eval_every": 3, "sample_n": 1},
                      checkpoint={"save_every": 3})
    path = tmp_path / "tiny.yaml"
    dump_config(cfg, path)
    return path


def test_torch_run_continued_by_mlx(config_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    run = tmp_path / "run"
    done = tinygpt("train", "--config", str(config_file), "--backend", "torch", "--max-steps", "3")
    assert done.returncode == 0, done.stderr
    assert "with torch on cpu" in done.stdout and "step 3/3 | loss" in done.stdout
    assert "sample @ step 3: 'Once upon a time" in done.stdout
    assert yaml.safe_load((run / "run_config.yaml").read_text())["runtime"]["backend"] == "torch"
    env = json.loads((run / "env.json").read_text())
    assert env["train_backend"] == "torch" and env["torch_device"] == "cpu"
    if sys.platform.startswith("linux"):
        # One process: torch trains beside the OpenBLAS that MLX uses (no restart without it).
        assert env["blas"].startswith("OpenBLAS")

    more = tinygpt("train", "--config", str(config_file), "--resume", "auto", "--backend", "mlx")
    assert more.returncode == 0, more.stderr
    assert "resuming from" in more.stdout and "step 6/6 | loss" in more.stdout
    if sys.platform.startswith("linux"):
        assert json.loads((run / "env.json").read_text())["blas"].startswith("OpenBLAS")
    train = read_metrics(run / "metrics.jsonl", "train")
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert abs(train[3]["loss"] - train[2]["loss"]) < 0.1  # the MLX step 4 continues torch's step 3
    assert [ck.step_of(p) for p in ck.list_checkpoints(run)] == [3, 6]
    assert ck.load_checkpoint(run).optimizer_state["states.0.step"].item() == 6


def test_backend_torch_without_torch_is_one_line(config_file: Path) -> None:
    done = tinygpt("train", "--config", str(config_file), "--backend", "torch", prelude=NO_TORCH)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "--backend torch needs PyTorch" in done.stderr and "pip install -e '.[torch]'" in done.stderr


def test_mlx_path_never_imports_torch(config_file: Path) -> None:
    """The default backend trains with torch unimportable, and importing the package loads no torch."""
    done = tinygpt("train", "--config", str(config_file), "--max-steps", "1", prelude=NO_TORCH)
    assert done.returncode == 0, done.stderr
    probe = subprocess.run([sys.executable, "-c", (
        "import sys, tinygpt_mlx, tinygpt_mlx.torch, tinygpt_mlx.train.trainer; "
        "from tinygpt_mlx.cli import _register; _register(); print('torch' in sys.modules)")],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert probe.stdout.strip() == "False", probe.stderr
