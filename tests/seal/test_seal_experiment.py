"""scripts/seal_experiment.sh end to end, shrunk: base model, SEAL (2 + 3 contexts, 1 round), table, resume."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_one_command_trains_adapts_and_writes_the_table(tiny_corpus, tmp_path):
    env = {**os.environ, "BIN": str(Path(sys.executable).parent), "DATA": str(tiny_corpus), "STEPS": "2",
           "BASE": str(tmp_path / "base"), "SEAL_RUN": str(tmp_path / "seal"), "OUT": str(tmp_path / "out"),
           "BASE_OVERRIDES": " ".join(f"-o {o}" for o in (
               "model.arch=llama", "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.max_seq_len=256",
               "data.block_size=32", "data.batch_size=4", f"data.cache_dir={tmp_path / 'cache'}",
               "eval.eval_subset=256", "eval.sample_n=0", "schedule.warmup_steps=1")),
           "SEAL_OVERRIDES": " ".join(f"-o seal.{o}" for o in (
               "n_train_contexts=2", "n_heldout_contexts=3", "rounds=1", "n_forget_stories=2", "k_edits=2",
               "edit_max_tokens=8", "inner_steps=[1,2]", "lora_seeds=2", "max_context_tokens=32",
               "max_target_tokens=24", "cloze_max_doc_freq=0.5"))}

    def experiment() -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(REPO / "scripts" / "seal_experiment.sh")], env=env, capture_output=True,
                              text=True, timeout=600)

    first = experiment()
    assert first.returncode == 0, first.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "out" / "seal_table.csv").open()))
    assert [r["method"] for r in rows][-2:] == ["SEAL round 1", "in-context (upper bound)"]
    assert all(r["contexts"] == "3" for r in rows)
    table = (tmp_path / "out" / "seal_table.md").read_text()
    # Run again: every step finds its work done and the table comes out the same.
    again = experiment()
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming: 25 records found, rounds [0, 1] finished" in again.stdout
    assert (tmp_path / "out" / "seal_table.md").read_text() == table
