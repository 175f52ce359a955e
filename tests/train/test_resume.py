"""Exact resume: 40 steps straight equal 20 + (SIGINT, checkpoint) + resume + 20, with dropout on."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import mlx.core as mx
import pytest

from tinygpt_mlx.config import from_dict
from tinygpt_mlx.errors import UserError
from tinygpt_mlx.train import checkpoint as ck
from tinygpt_mlx.train import trainer
from tinygpt_mlx.train.metrics import read_metrics

STEPS, STOP = 40, 20
TIMING = ("tokens_per_sec", "step_ms", "elapsed_s", "peak_memory_bytes")


def tiny(run_dir: Path, cache: Path, data_dir: Path, **sections: dict) -> object:
    """Dropout on, eval and periodic saves off the stop step, so the resume has to carry everything."""
    raw = {
        "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "max_seq_len": 32, "dropout": 0.1},
        "data": {"dataset": "local", "data_dir": str(data_dir), "max_stories": 200, "block_size": 32,
                 "batch_size": 4, "cache_dir": str(cache), "num_workers": 1},
        "optim": {"lr": 3e-3},
        "schedule": {"max_steps": STEPS, "warmup_steps": 5, "min_lr": 3e-4},
        "runtime": {"log_interval": 1, "grad_accum_steps": 2},
        "eval": {"eval_every": 15, "eval_subset": 1024, "sample_n": 1, "sample_max_new_tokens": 10},
        "checkpoint": {"save_dir": str(run_dir), "save_every": 1000, "keep_last_k": 2},
    }
    for section, values in sections.items():
        raw[section] = {**raw[section], **values}
    return from_dict(raw)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data_cache")


def interrupt_at(monkeypatch: pytest.MonkeyPatch, step: int, sig: int = signal.SIGINT) -> None:
    """Deliver a real signal while step `step` runs (when the loop prefetches the batch after it)."""
    real_next = trainer.Batches.next
    calls = {"n": 0}

    def next_batch(self: trainer.Batches):
        calls["n"] += 1
        if calls["n"] == step + 1:  # call 1 is the first batch; call k + 1 happens during step k
            os.kill(os.getpid(), sig)
        return real_next(self)

    monkeypatch.setattr(trainer.Batches, "next", next_batch)


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, cache: Path, tinystories_dir: Path):
    run_dir = tmp_path_factory.mktemp("straight")
    return trainer.train(tiny(run_dir, cache, tinystories_dir), live=False), run_dir


def test_resume_is_exact(straight, tmp_path: Path, cache: Path, tinystories_dir: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    full, full_dir = straight
    cfg = tiny(tmp_path, cache, tinystories_dir)
    with monkeypatch.context() as patch:
        interrupt_at(patch, STOP)
        first = trainer.train(cfg, live=False)
    assert (first.step, first.exit_code) == (STOP, 130)
    assert first.last_checkpoint == tmp_path / ck.step_dir_name(STOP)
    second = trainer.train(cfg, resume="auto", live=False)
    assert (second.step, second.exit_code) == (STEPS, 0)

    # Identical per-step losses, before and after the stop.
    assert {**first.losses, **second.losses} == full.losses
    assert sorted(second.losses) == list(range(STOP + 1, STEPS + 1))
    # Identical final weights and optimizer state (moments and step count), bit for bit.
    a, b = ck.load_checkpoint(full_dir), ck.load_checkpoint(tmp_path)
    assert a.weights.keys() == b.weights.keys() and a.optimizer_state.keys() == b.optimizer_state.keys()
    assert all(mx.array_equal(a.weights[k], b.weights[k]).item() for k in a.weights)
    assert all(mx.array_equal(a.optimizer_state[k], b.optimizer_state[k]).item() for k in a.optimizer_state)
    assert b.optimizer_state["states.0.step"].item() == STEPS
    assert a.state["rng"] == b.state["rng"] and a.state["sampler"] == b.state["sampler"]
    # metrics.jsonl tells the same story (timings aside), samples included.
    def strip(path: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(path / "metrics.jsonl")]
    assert strip(tmp_path) == strip(full_dir)


def test_resume_truncates_metrics_past_checkpoint(straight, tmp_path: Path, cache: Path,
                                                  tinystories_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    full, full_dir = straight
    # A copy of the finished run whose newest checkpoint is corrupt: auto falls back to step 30.
    # (Each eval set a new best and got its own checkpoint; keep_last_k 2 left 30 and 40.)
    os.system(f"cp -a {full_dir}/. {tmp_path}")
    assert [ck.step_of(p) for p in ck.list_checkpoints(tmp_path)] == [30, 40]
    (tmp_path / "step-0000040" / "state.json").write_text("{}")
    cfg = tiny(tmp_path, cache, tinystories_dir, schedule={"max_steps": 31}, eval={"eval_every": 100})
    with caplog.at_level(logging.WARNING):
        result = trainer.train(cfg, resume="auto", live=False)
    assert "step-0000040" in caplog.text and "state.json is corrupt" in caplog.text
    assert result.step == 31 and list(result.losses) == [31]
    steps = [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl", "train")]
    assert steps == list(range(1, 32))
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl", "eval")] == [15, 30, 31]


def test_resume_explicit_path_and_nothing_to_resume(straight, tmp_path: Path, cache: Path,
                                                    tinystories_dir: Path) -> None:
    _, full_dir = straight
    with pytest.raises(UserError, match="corrupt|not found|incomplete"):
        trainer.train(tiny(tmp_path, cache, tinystories_dir), resume=str(tmp_path / "step-0000007"), live=False)
    fresh = trainer.train(tiny(tmp_path / "new", cache, tinystories_dir, schedule={"max_steps": 2, "warmup_steps": 1}),
                          resume="auto", live=False)
    assert fresh.step == 2 and sorted(fresh.losses) == [1, 2]


@pytest.mark.parametrize("change, message", [
    ({"model": {"n_layers": 3}}, r"different architecture: model\.n_layers 2 -> 3"),
    ({"model": {"d_model": 64}}, r"model\.d_model 32 -> 64"),
    ({"data": {"max_stories": 3}}, "tokenizer differs"),
    ({"optim": {"optimizer": "sgd"}}, r"optim\.optimizer adamw -> sgd"),
])
def test_resume_refuses_incompatible_change(straight, tmp_path: Path, cache: Path, tinystories_dir: Path,
                                            change: dict, message: str) -> None:
    _, full_dir = straight
    cfg = tiny(tmp_path, cache, tinystories_dir, **change)
    with pytest.raises(UserError, match=message):
        trainer.train(cfg, resume=str(full_dir / "last"), live=False)


def test_resume_allows_longer_run_and_new_logging(straight, tmp_path: Path, cache: Path,
                                                  tinystories_dir: Path) -> None:
    _, full_dir = straight
    os.system(f"cp -a {full_dir}/. {tmp_path}")
    cfg = tiny(tmp_path, cache, tinystories_dir, schedule={"max_steps": 43}, runtime={"log_interval": 3},
               eval={"eval_every": 7, "sample_n": 0}, model={"dropout": 0.0})
    result = trainer.train(cfg, resume="auto", live=False)
    assert result.step == 43 and sorted(result.losses) == [41, 42, 43]
    records = read_metrics(tmp_path / "metrics.jsonl", "train")
    assert [r["step"] for r in records][-4:] == [39, 40, 42, 43]  # old lines stay; the new interval applies
