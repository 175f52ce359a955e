"""`tinygpt eval` end to end on a tiny trained run: exit code, artefacts, agreement with the training log."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tinygpt_mlx.eval.evaluate import COLUMNS
from tinygpt_mlx.train.metrics import read_metrics

REPO = Path(__file__).resolve().parents[2]


def tinygpt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinygpt_mlx", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, kit) -> Path:
    """Six real training steps with checkpoints and evals at 3 and 6."""
    from tinygpt_mlx.config import from_dict
    from tinygpt_mlx.train.trainer import train

    root = tmp_path_factory.mktemp("trained")
    raw = kit.tiny_config(kit.write_corpus(root / "corpus", kit.TRAIN, kit.VALID), root / "cache",
                          root / "run").to_dict()
    raw["schedule"] = {"max_steps": 6, "warmup_steps": 1}
    raw["eval"].update(eval_every=3, sample_n=1)
    raw["checkpoint"].update(save_every=3, keep_last_k=5)
    result = train(from_dict(raw), live=False)
    assert result.exit_code == 0
    return root / "run"


def test_eval_cli_end_to_end(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = tinygpt("eval", "--checkpoint_dir", str(trained), "--output_dir", str(out))
    assert done.returncode == 0, done.stderr
    assert "step-0000003: val_loss" in done.stdout and "wrote" in done.stdout
    assert "step   tokens_seen   val_loss   val_ppl   val_bpb   params   non_emb   eval_s" in done.stdout
    with open(out / "evaluation_results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(COLUMNS)
    assert [int(r["step"]) for r in rows] == [3, 6]
    assert [int(r["tokens_seen"]) for r in rows] == [3 * 4 * 8, 6 * 4 * 8]
    # Same windows, same function: the CSV reproduces the losses the trainer logged at those steps.
    logged = {r["step"]: r for r in read_metrics(trained / "metrics.jsonl", "eval")}
    for row in rows:
        for key in ("val_loss", "val_ppl", "val_bpb"):
            assert float(row[key]) == pytest.approx(logged[int(row["step"])][key], rel=1e-6)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["checkpoint"] for s in samples] == ["step-0000003", "step-0000006"]
    plots = sorted(p.name for p in (out / "plots").iterdir())
    names = ("loss", "lr", "val_loss_per_checkpoint")
    assert plots == sorted(f"{n}.{e}" for n in names for e in ("png", "svg"))


def test_eval_cli_hyphenated_full_and_default_output(trained: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run, symlinks=True)
    done = tinygpt("eval", "--checkpoint-dir", str(run), "--full", "-o", "eval.sample_n=0")
    assert done.returncode == 0, done.stderr
    assert "full split" in done.stdout
    rows = list(csv.DictReader(open(run / "eval" / "evaluation_results.csv", newline="")))
    assert int(rows[0]["eval_tokens"]) > 4 * 8  # more than the pinned subset
    assert (run / "eval" / "samples.jsonl").read_text() == ""
    one = tinygpt("eval", "--checkpoint", str(run / "best"), "--output-dir", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    assert len(list(csv.DictReader(open(tmp_path / "one" / "evaluation_results.csv", newline="")))) == 1


def test_eval_cli_errors_exit_2(trained: Path, tmp_path: Path) -> None:
    empty = tinygpt("eval", "--checkpoint_dir", str(tmp_path), "--output_dir", str(tmp_path / "out"))
    assert empty.returncode == 2 and "no complete checkpoint in" in empty.stderr
    run = tmp_path / "run"
    shutil.copytree(trained, run, symlinks=True)
    (run / "step-0000003" / "state.json").write_text("{}")
    corrupt = tinygpt("eval", "--checkpoint_dir", str(run), "--output_dir", str(tmp_path / "out"))
    assert corrupt.returncode == 2 and "is corrupt" in corrupt.stderr and "Traceback" not in corrupt.stderr
