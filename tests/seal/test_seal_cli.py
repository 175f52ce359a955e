"""`tinygpt seal adapt` / `seal analyze` end to end from a checkpoint folder, as a user runs them."""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass

import mlx.optimizers as optim
import pytest
import yaml

from tinygpt_mlx.cli import main
from tinygpt_mlx.seal.records import read_records
from tinygpt_mlx.train.checkpoint import save_checkpoint


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run(capsys, monkeypatch):
    """Run `tinygpt ARGS` in this process (a subprocess per call would spend most of the test importing)."""

    def call(*args: str) -> Result:
        monkeypatch.setattr(sys, "argv", ["tinygpt", *args])
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        out = capsys.readouterr()
        return Result(code, out.out, " ".join(out.err.split()))  # rich wraps long lines

    return call


def test_adapt_then_analyze_from_a_checkpoint(model, tokenizer, tiny_corpus, tmp_path, run, make_config):
    cfg = make_config(tmp_path, model={"n_layers": 1, "max_seq_len": 256})  # the seal fixtures' model
    optimizer = optim.Adam(learning_rate=1e-3)
    optimizer.init(model.trainable_parameters())
    save_checkpoint(tmp_path / "ckpt", 10, model, optimizer, cfg, tokenizer, {"step": 10})
    seal = {"enabled": True, "rounds": 1, "k_edits": 2, "n_train_contexts": 2, "n_heldout_contexts": 2,
            "n_forget_stories": 2, "edit_max_tokens": 8, "inner_steps": [1, 2], "ranks": [2, 4],
            "max_context_tokens": 32, "max_target_tokens": 24, "include_context": True, "seed": 1}
    (tmp_path / "seal.yaml").write_text(yaml.safe_dump({"seal": seal}))

    disabled = run("seal", "adapt", "-c", str(tmp_path / "seal.yaml"), "-o", "seal.enabled=false",
                   "--init-from", str(tmp_path / "ckpt"))
    assert disabled.returncode == 2 and "set `seal.enabled: true`" in disabled.stderr
    bad = run("seal", "adapt", "-c", str(tmp_path / "seal.yaml"), "-o", "seal.lora_modules=[c_atn]")
    assert bad.returncode == 2 and "seal.lora_modules: unknown LoRA module(s) 'c_atn'" in bad.stderr

    done = run("seal", "adapt", "-c", str(tmp_path / "seal.yaml"), "--init-from", str(tmp_path / "ckpt"),
               "--run_dir", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    records = read_records(tmp_path / "run" / "adapt.jsonl")
    assert [r["round"] for r in records if r["type"] == "round"] == [0, 1]
    # The contexts came from the checkpoint's data: its validation stories.
    valid = (tiny_corpus / "tinystories_valid.txt").read_text()
    context = next(r for r in records if r.get("method") == "context")["edit"]
    assert context[:20] in valid

    shown = run("seal", "analyze", "--run_dir", str(tmp_path / "run"))
    assert shown.returncode == 0, shown.stderr
    rows = list(csv.DictReader((tmp_path / "run" / "seal_table.csv").open()))
    assert [r["method"] for r in rows] == ["no adaptation", "train on context", "base-model self-edits",
                                           "SEAL round 1"]
    assert all(r["contexts"] == "2" for r in rows) and rows[0]["delta_loss"] == "0.0000"
    for stem in ("delta_vs_budget", "pareto_forgetting"):
        for ext in ("png", "svg"):
            assert (tmp_path / "run" / f"{stem}.{ext}").stat().st_size > 1000
    assert "| SEAL round 1 | 1 | 2 |" in shown.stdout

    empty = run("seal", "analyze", "--run_dir", str(tmp_path / "nothing"))
    assert empty.returncode == 2 and "no finished round yet" in empty.stderr
