"""`tinygpt train` end to end in a subprocess: a tiny run exits 0; user errors exit 2 with one message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tinygpt_mlx.config import dump_config
from tinygpt_mlx.train.metrics import read_metrics

REPO = Path(__file__).resolve().parents[1]


def tinygpt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinygpt_mlx", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def config_file(tmp_path: Path, make_config) -> Path:
    cfg = make_config(tmp_path, schedule={"max_steps": 50, "warmup_steps": 2}, runtime={"log_interval": 2},
                      eval={"eval_every": 3, "sample_n": 1, "sample_max_new_tokens": 12},
                      checkpoint={"save_every": 3})
    path = tmp_path / "tiny.yaml"
    dump_config(cfg, path)
    return path


def test_train_end_to_end(config_file: Path, tmp_path: Path, tiny_corpus: Path) -> None:
    run = tmp_path / "run"
    done = tinygpt("train", "--config", str(config_file), "--save_dir", str(run), "--seed", "7",
                   "--data-dir", str(tiny_corpus), "--max-steps", "4", "-o", "optim.lr=2e-3")
    assert done.returncode == 0, done.stderr
    assert "step 4/4 | loss" in done.stdout and "eval step 4 | val_loss" in done.stdout
    assert "sample @ step 3: 'Once upon a time" in done.stdout
    cfg = yaml.safe_load((run / "run_config.yaml").read_text())
    assert cfg["runtime"]["seed"] == 7 and cfg["schedule"]["max_steps"] == 4 and cfg["optim"]["lr"] == 2e-3
    assert sorted(p.name for p in run.iterdir()) == [
        "best", "env.json", "last", "metrics.jsonl", "run_config.yaml", "step-0000003", "step-0000004"]
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl", "train")] == [2, 4]

    # --save-dir spelling, --resume auto on a finished run: nothing left to do, exit 0.
    again = tinygpt("train", "--config", str(config_file), "--save-dir", str(run), "--resume", "auto",
                    "--data_dir", str(tiny_corpus), "--max-steps", "4", "--seed", "7")
    assert again.returncode == 0, again.stderr
    assert "resuming from" in again.stdout
    # The seed fixes the batch order, so a resume under another seed is refused.
    other = tinygpt("train", "--config", str(config_file), "--save-dir", str(run), "--resume", "auto",
                    "--data_dir", str(tiny_corpus), "--max-steps", "5", "--seed", "8")
    assert other.returncode == 2 and "seed was 7, now 8" in other.stderr


@pytest.mark.parametrize("args, message", [
    (["-o", "model.n_heads=3"], "model.d_model (32) must be divisible by model.n_heads (3)"),
    (["-o", "optim.lrr=1"], "unknown key 'optim.lrr' (did you mean 'lr'?)"),
    (["--resume", "/nonexistent/ckpt"], "checkpoint not found: /nonexistent/ckpt"),
])
def test_user_errors_exit_2(config_file: Path, tmp_path: Path, tiny_corpus: Path, args: list[str],
                            message: str) -> None:
    done = tinygpt("train", "--config", str(config_file), "--save_dir", str(tmp_path / "run"),
                   "--data-dir", str(tiny_corpus), *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_help_documents_exit_codes() -> None:
    done = tinygpt("train", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "130 stopped by SIGINT" in text and "143 by SIGTERM" in text and "--resume" in text
