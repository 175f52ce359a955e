"""A NaN in the forward pass (injected at chosen steps) never reaches the weights: abort, skip, give up."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from tinygpt_mlx.errors import UserError
from tinygpt_mlx.model import TinyGPT
from tinygpt_mlx.train import backend, inputs, trainer
from tinygpt_mlx.train import checkpoint as ck


class PoisonGPT(TinyGPT):
    """TinyGPT whose logits turn NaN when the first sequence of a batch is all token 0 (never in real text)."""

    def __call__(self, idx: mx.array, cache: object = None) -> mx.array:
        logits = super().__call__(idx, cache)
        poisoned = mx.all(idx[0] == 0)
        return logits + mx.where(poisoned, mx.array(float("nan")), mx.array(0.0))


@pytest.fixture
def poison_steps(monkeypatch: pytest.MonkeyPatch) -> set[int]:
    """Steps (1-based) whose batch is poisoned; fill the returned set."""
    bad: set[int] = set()
    real_next = inputs.Batches.next
    calls = {"n": 0}

    def next_batch(self: inputs.Batches):
        x, y, state = real_next(self)
        calls["n"] += 1  # call k supplies the batch of step k
        if calls["n"] in bad:
            x = x.copy()
            x[0, 0, :] = 0
        return x, y, state

    monkeypatch.setattr(backend, "TinyGPT", PoisonGPT)
    monkeypatch.setattr(inputs.Batches, "next", next_batch)
    return bad


def finite(folder: Path) -> bool:
    ckpt = ck.load_checkpoint(folder)
    arrays = list(ckpt.weights.values()) + list(ckpt.optimizer_state.values())
    return all(np.isfinite(np.array(a)).all() for a in arrays if mx.issubdtype(a.dtype, mx.floating))


def test_abort_names_the_step(make_cfg, poison_steps: set[int]) -> None:
    poison_steps.add(3)
    cfg = make_cfg(runtime={"nonfinite": "abort"})
    with pytest.raises(UserError, match=r"non-finite loss or gradient at step 3 .*weights were not updated"):
        trainer.train(cfg, live=False)
    run = Path(cfg.checkpoint.save_dir)
    assert (run / "last").resolve() == run / "step-0000002"
    assert finite(run / "last")


def test_skip_withholds_the_update(make_cfg, poison_steps: set[int]) -> None:
    poison_steps.add(4)
    cfg = make_cfg(runtime={"nonfinite": "skip", "max_nonfinite": 2}, schedule={"max_steps": 5})
    result = trainer.train(cfg, live=False)
    run = Path(cfg.checkpoint.save_dir)
    assert result.step == 5 and np.isnan(result.losses[4]) and np.isfinite(result.losses[5])
    # The skipped step changed nothing: weights and optimizer state (its step count too) equal step 3's.
    before, after = ck.load_checkpoint(run / "step-0000003"), ck.load_checkpoint(run / "step-0000004")
    assert all(mx.array_equal(before.weights[k], after.weights[k]).item() for k in before.weights)
    assert all(mx.array_equal(before.optimizer_state[k], after.optimizer_state[k]).item()
               for k in before.optimizer_state)
    assert after.state["nonfinite"] == {"consecutive": 1, "total": 1}
    assert json.loads((run / "step-0000005" / "state.json").read_text())["nonfinite"] == {
        "consecutive": 0, "total": 1}
    assert finite(run / "last")


def test_skip_gives_up_after_max_in_a_row(make_cfg, poison_steps: set[int]) -> None:
    poison_steps.update({2, 4, 5, 6})
    cfg = make_cfg(runtime={"nonfinite": "skip", "max_nonfinite": 3})
    with pytest.raises(UserError, match=r"at step 6 .*3 bad steps in a row \(runtime.max_nonfinite = 3\)"):
        trainer.train(cfg, live=False)
    assert finite(Path(cfg.checkpoint.save_dir) / "last")
