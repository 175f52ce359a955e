"""`tinygpt seal adapt` / `seal analyze` end to end from a checkpoint folder, as a user runs them."""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass

import mlx.optimizers as optim
import pytest
import yaml

from tinygpt_mlx.cli import main
from tinygpt_mlx.data.sources import read_stories
from tinygpt_mlx.seal.config import SealConfig
from tinygpt_mlx.seal.records import read_records
from tinygpt_mlx.seal.task import build_task
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
    # The whole experiment end to end, tiny: 2 training and 3 held-out contexts, 1 round.
    cfg = make_config(tmp_path, model={"n_layers": 1, "max_seq_len": 256})  # the seal fixtures' model
    optimizer = optim.Adam(learning_rate=1e-3)
    optimizer.init(model.trainable_parameters())
    save_checkpoint(tmp_path / "ckpt", 10, model, optimizer, cfg, tokenizer, {"step": 10})
    seal = {"enabled": True, "rounds": 1, "k_edits": 2, "n_train_contexts": 2, "n_heldout_contexts": 3,
            "n_forget_stories": 2, "edit_max_tokens": 8, "inner_steps": [1, 2], "ranks": [2, 4], "lora_seeds": 2,
            "max_context_tokens": 32, "max_target_tokens": 24, "cloze_max_doc_freq": 0.5, "seed": 1}
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
    task = build_task(read_stories(tiny_corpus / "tinystories_valid.txt"), SealConfig(**seal), seed=1)
    assert [r["context_id"] for r in records if r.get("method") == "none"] == [it.id for it in task.heldout]
    edit = next(r for r in records if r.get("method") == "self_edit")
    assert edit["template"] == "implications" and edit["inner_text"] == "passage+edit"

    shown = run("seal", "analyze", "--run_dir", str(tmp_path / "run"), "--out", str(tmp_path / "docs"))
    assert shown.returncode == 0, shown.stderr
    rows = list(csv.DictReader((tmp_path / "docs" / "seal_table.csv").open()))
    assert [r["method"] for r in rows] == ["no adaptation", "train on passage", "passage + base-model self-edits",
                                           "base-model self-edits alone", "frozen policy (control)",
                                           "SEAL round 1", "in-context (upper bound)"]
    assert all(r["contexts"] == "3" for r in rows) and rows[0]["delta_loss"] == "0.0000"
    seal_row = rows[5]
    assert float(seal_row["reward_vs_passage_low"]) <= float(seal_row["reward_vs_passage"]) \
        <= float(seal_row["reward_vs_passage_high"])
    assert seal_row["reward_vs_base_edits"] != "" and rows[1]["reward_vs_passage"] == ""
    for stem in ("delta_vs_budget", "pareto_forgetting"):
        for ext in ("png", "svg"):
            assert (tmp_path / "docs" / f"{stem}.{ext}").stat().st_size > 1000
    assert "| SEAL round 1 | 3 | 3 |" in shown.stdout
    table = (tmp_path / "docs" / "seal_table.md").read_text()
    assert "- SEAL round 1 - train on passage: reward " in table and "at 95%" in table

    # What a repository keeps (the two summary CSVs) rebuilds the same table without adapt.jsonl.
    kept = tmp_path / "committed"
    kept.mkdir()
    for name in ("seal_contexts.csv", "seal_rounds.csv"):
        (kept / name).write_bytes((tmp_path / "docs" / name).read_bytes())
    again = run("seal", "analyze", "--run_dir", str(kept))
    assert again.returncode == 0, again.stderr
    assert (kept / "seal_table.md").read_text() == table
    assert (kept / "seal_table.csv").read_text() == (tmp_path / "docs" / "seal_table.csv").read_text()

    empty = run("seal", "analyze", "--run_dir", str(tmp_path / "nothing"))
    assert empty.returncode == 2 and "no finished round yet" in empty.stderr
    (kept / "seal_contexts.csv").write_text("label,what\nx,1\n")
    garbled = run("seal", "analyze", "--run_dir", str(kept))
    assert garbled.returncode == 2 and "does not have the columns `seal analyze` writes" in garbled.stderr
