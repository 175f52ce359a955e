"""evaluate_run: CSV schema and hand-checked values, samples.jsonl, and the clear errors."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from tinygpt_mlx.data.prepare import prepare_data
from tinygpt_mlx.errors import UserError
from tinygpt_mlx.eval.evaluate import COLUMNS, evaluate_run
from tinygpt_mlx.tokenizers import load_tokenizer


def expected_scores(kit, cfg, run: Path, step: int, full: bool) -> dict:
    """val loss / ppl / bpb / token and byte counts computed independently with numpy."""
    T = kit.T
    folder = run / f"step-{step:07d}"
    tok = load_tokenizer(folder / "tokenizer")
    data = prepare_data(cfg)
    tokens = np.fromfile(data.val_path, dtype=data.meta["dtype"]).astype(np.int64)
    n_windows = (len(tokens) - 1) // T if full else cfg.eval.eval_subset // T
    starts = (np.arange(n_windows) * T if full
              else np.linspace(0, len(tokens) - T - 1, n_windows).astype(np.int64))
    targets = np.concatenate([tokens[s + 1:s + T + 1] for s in starts])
    c = kit.logits_of(folder)
    lse = np.log(np.exp(c - c.max()).sum()) + c.max()
    loss = float(np.mean(lse - c[targets]))
    # Bytes of the predicted text: each character's UTF-8 length, the end-of-text separator counts one.
    n_bytes = sum(1 if t == tok.eos_id else len(tok.decode([int(t)]).encode("utf-8")) for t in targets)
    return {"val_loss": loss, "eval_tokens": targets.size, "eval_bytes": n_bytes,
            "val_ppl": math.exp(loss), "val_bpb": loss * targets.size / (math.log(2) * n_bytes)}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("full", [False, True])
def test_csv_values_match_numpy(tiny_run, kit, tmp_path: Path, full: bool) -> None:
    cfg, run = tiny_run
    report = evaluate_run(run, tmp_path, full=full, say=lambda _: None)
    rows = read_csv(tmp_path / "evaluation_results.csv")
    with open(tmp_path / "evaluation_results.csv") as f:
        assert f.readline().strip() == ",".join(COLUMNS)
    assert [r["checkpoint"] for r in rows] == ["step-0000003", "step-0000006"]
    for row, step in zip(rows, kit.STEPS, strict=True):
        want = expected_scores(kit, cfg, run, step, full)
        assert int(row["step"]) == step and int(row["tokens_seen"]) == step * 4 * kit.T
        assert int(row["eval_tokens"]) == want["eval_tokens"]
        assert int(row["eval_bytes"]) == want["eval_bytes"]
        for key in ("val_loss", "val_ppl", "val_bpb"):
            assert float(row[key]) == pytest.approx(want[key], rel=1e-5), key
        assert float(row["val_ppl"]) == pytest.approx(math.exp(float(row["val_loss"])), rel=1e-9)
        assert float(row["eval_seconds"]) >= 0
    # The pinned subset is eval.eval_subset tokens; the full split tiles val.bin; "é" makes bytes > tokens.
    first = expected_scores(kit, cfg, run, 3, full)
    if not full:
        assert first["eval_tokens"] == cfg.eval.eval_subset
    else:
        assert first["eval_bytes"] == first["eval_tokens"] + 1  # the one "é" of the split is two bytes
    assert report.rows[0]["val_loss"] != report.rows[1]["val_loss"]


def test_param_counts(tiny_run, tmp_path: Path) -> None:
    _, run = tiny_run
    row = evaluate_run(run, tmp_path, say=lambda _: None).rows[-1]
    d, vocab, T, f = 16, len(load_tokenizer(run / "last" / "tokenizer").hf.get_vocab()), 8, 64
    block = 2 * (2 * d) + (3 * d * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d)
    assert row["non_embedding_params"] == block + 2 * d
    assert row["params"] == block + 2 * d + vocab * d + T * d


def test_samples_jsonl_is_seeded_and_complete(tiny_run, tmp_path: Path) -> None:
    cfg, run = tiny_run
    evaluate_run(run, tmp_path / "a", say=lambda _: None)
    evaluate_run(run, tmp_path / "b", say=lambda _: None)
    text = (tmp_path / "a" / "samples.jsonl").read_text()
    assert text == (tmp_path / "b" / "samples.jsonl").read_text()  # same seeds, same completions
    records = [json.loads(line) for line in text.splitlines()]
    assert [(r["checkpoint"], r["seed"]) for r in records] == [
        ("step-0000003", 5), ("step-0000003", 6), ("step-0000006", 5), ("step-0000006", 6)]
    for r in records:
        assert set(r) == {"checkpoint", "step", "prompt", "completion", "temperature", "top_k", "top_p",
                          "seed", "max_new_tokens", "new_tokens"}
        assert r["prompt"] == "Tom" and r["temperature"] == 0.8 and r["top_k"] is None
        assert 0 <= r["new_tokens"] <= 12 and isinstance(r["completion"], str)


def test_single_checkpoint_and_link(tiny_run, tmp_path: Path) -> None:
    _, run = tiny_run
    report = evaluate_run(None, tmp_path, checkpoint=run / "last", say=lambda _: None)
    assert [r["step"] for r in report.rows] == [6]
    # plots still find metrics.jsonl next to the step folder
    assert (tmp_path / "plots" / "loss.png").is_file()


def test_no_complete_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "step-0000004").mkdir()  # a folder without manifest.json is not a checkpoint
    with pytest.raises(UserError, match="no complete checkpoint in"):
        evaluate_run(tmp_path, tmp_path / "out", say=lambda _: None)
    with pytest.raises(UserError, match="checkpoint folder not found"):
        evaluate_run(tmp_path / "missing", tmp_path / "out", say=lambda _: None)


def test_corrupt_checkpoint(tiny_run, tmp_path: Path) -> None:
    _, run = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy, symlinks=True)
    weights = copy / "step-0000006" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"model.safetensors is corrupt: sha256 does not match"):
        evaluate_run(copy, tmp_path / "out", say=lambda _: None)
    assert not (tmp_path / "out" / "evaluation_results.csv").exists()


def test_empty_validation_split(tiny_run, kit, tmp_path: Path) -> None:
    _, run = tiny_run
    corpus = kit.write_corpus(tmp_path / "corpus", kit.TRAIN, [])
    with pytest.raises(UserError, match="validation split .* has no stories"):
        evaluate_run(run, tmp_path / "out", overrides=[f"data.data_dir={corpus}"], say=lambda _: None)


def test_other_tokenizer_is_refused(tiny_run, kit, tmp_path: Path) -> None:
    _, run = tiny_run
    # Other training text gives the char tokenizer another vocabulary: the token files would mean other chars.
    corpus = kit.write_corpus(tmp_path / "corpus", ["Zebras zigzag quietly xyz."], kit.VALID)
    with pytest.raises(UserError, match="tokenized with a different tokenizer"):
        evaluate_run(run, tmp_path / "out", overrides=[f"data.data_dir={corpus}"], say=lambda _: None)
