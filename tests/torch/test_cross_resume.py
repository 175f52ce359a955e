"""A torch run resumed by MLX and an MLX run resumed by torch: 6 + 6 steps track 12 straight MLX steps.

Both frameworks start from the same weights (the torch path draws its init through the MLX model) and
read the same batches, so with dropout off the interrupted-and-switched run follows the straight one to
float32 round-off: losses, learning rates, evals and the final weights and optimizer moments.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from tinygpt_mlx.train import checkpoint as ck
from tinygpt_mlx.train import inputs, trainer
from tinygpt_mlx.train.metrics import read_metrics

pytest.importorskip("torch")

STEPS, STOP = 12, 6


def interrupt_at(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """SIGINT while step `step` runs: both loops finish it, checkpoint it and stop (exit code 130)."""
    real_next = inputs.Batches.next
    calls = {"n": 0}

    def next_batch(self: inputs.Batches):
        calls["n"] += 1
        if calls["n"] == step + 1:
            os.kill(os.getpid(), signal.SIGINT)
        return real_next(self)

    monkeypatch.setattr(inputs.Batches, "next", next_batch)


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, make_cfg):
    cfg = make_cfg(tmp_path_factory.mktemp("straight"), "mlx")
    return trainer.train(cfg, live=False), Path(cfg.checkpoint.save_dir)


@pytest.mark.parametrize("first, second", [("torch", "mlx"), ("mlx", "torch")])
def test_switch_backend_on_resume(straight, make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  first: str, second: str) -> None:
    full, full_dir = straight
    with monkeypatch.context() as patch:
        interrupt_at(patch, STOP)
        a = trainer.train(make_cfg(tmp_path, first), live=False)
    assert (a.step, a.exit_code) == (STOP, 130)
    run = tmp_path / "run"
    ck.verify_checkpoint(run / ck.step_dir_name(STOP))
    b = trainer.train(make_cfg(tmp_path, second), resume="auto", live=False)
    assert (b.step, b.exit_code) == (STEPS, 0)
    assert sorted(b.losses) == list(range(STOP + 1, STEPS + 1))

    # Loss continuity: the first resumed loss continues the last one, and every loss tracks the straight run.
    losses = {**a.losses, **b.losses}
    assert abs(losses[STOP + 1] - losses[STOP]) < 0.1
    assert np.allclose([losses[s] for s in range(1, STEPS + 1)], [full.losses[s] for s in range(1, STEPS + 1)],
                       rtol=1e-4, atol=1e-5)
    assert losses[STEPS] < losses[1] - 0.3  # it learned something

    # Every checkpoint verifies; the final one carries the whole run's counters and optimizer state.
    for folder in ck.step_folders(run):
        ck.verify_checkpoint(folder)
    mine, ref = ck.load_checkpoint(run), ck.load_checkpoint(full_dir)
    assert mine.step == STEPS and mine.state["tokens_seen"] == ref.state["tokens_seen"] == STEPS * 4 * 32 * 2
    assert mine.state["sampler"] == ref.state["sampler"]
    assert mine.weights.keys() == ref.weights.keys() and mine.optimizer_state.keys() == ref.optimizer_state.keys()
    assert mine.optimizer_state["states.0.step"].item() == STEPS
    for name in mine.weights:
        assert np.allclose(np.array(mine.weights[name]), np.array(ref.weights[name]), atol=1e-4), name
    for name in mine.optimizer_state:
        assert mine.optimizer_state[name].dtype == ref.optimizer_state[name].dtype, name
        assert np.allclose(np.array(mine.optimizer_state[name]), np.array(ref.optimizer_state[name]),
                           rtol=1e-3, atol=1e-6), name

    # metrics.jsonl: one train line per step, the same learning rates, evals at 6 and 12, samples from both.
    records = read_metrics(run / "metrics.jsonl")
    train = [r for r in records if r["type"] == "train"]
    ref_train = read_metrics(full_dir / "metrics.jsonl", "train")
    assert [r["step"] for r in train] == list(range(1, STEPS + 1))
    assert [r["lr"] for r in train] == pytest.approx([r["lr"] for r in ref_train], rel=1e-6)
    assert [r["step"] for r in records if r["type"] == "eval"] == [6, 12]
    assert [r["text"][:16] for r in records if r["type"] == "sample"] == ["Once upon a time"] * 2
    evals = [r["val_loss"] for r in records if r["type"] == "eval"]
    ref_evals = [r["val_loss"] for r in read_metrics(full_dir / "metrics.jsonl", "eval")]
    assert evals == pytest.approx(ref_evals, rel=1e-4)

