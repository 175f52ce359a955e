"""TrainState: where a run stands besides its weights and optimizer moments; a checkpoint's state.json.

Resuming is exact because a checkpoint carries everything the next step depends on: the arrays (weights,
optimizer moments and step count) in safetensors, and this state as JSON: the step and tokens seen, the
python / numpy / mlx generator states (and torch's on the torch backend), the batch sampler's position,
the best eval so far, the non-finite counters and the float16 loss scale. Both backends write and read
the same layout, so a checkpoint continues in either.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import numpy as np


def capture_rng() -> dict[str, Any]:
    """JSON-able states of the python, numpy and mlx global generators."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "mlx": mx.random.state[0].tolist(),
    }


def restore_rng(rng: dict[str, Any]) -> None:
    """Put the global generators back to a state from `capture_rng`."""
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    # mx.random.state cannot be assigned, but seed(s) sets the key to [s >> 32, s & 0xffffffff].
    hi, lo = rng["mlx"]
    mx.random.seed((int(hi) << 32) | int(lo))


@dataclass
class TrainState:
    """The loop's position and counters; `state_dict()` is what state.json holds, `load_state_dict` reads it."""

    total_steps: int
    best_by: str = "val_loss"
    """The eval metric (lower is better) whose best value `best` follows."""
    step: int = 0
    tokens_seen: int = 0
    elapsed_s: float = 0.0
    """Wall time of steps, evals and saves over every call that trained this run."""
    sampler: dict[str, Any] = field(default_factory=dict)
    """The batch sampler's state that draws the next step's batch."""
    best_value: float | None = None
    best_step: int | None = None
    nonfinite_in_a_row: int = 0
    nonfinite_total: int = 0
    loss_scale: dict[str, Any] | None = None
    """{"scale", "good_steps"} of float16 loss scaling (scale 1.0 in other dtypes)."""
    rng: dict[str, Any] = field(default_factory=dict)
    """Generator states as of the last save or restore, by generator name."""

    def record_eval(self, value: float) -> bool:
        """Note an eval score of `best_by` at this step; True when it is a new best."""
        if self.best_value is not None and value >= self.best_value:
            return False
        self.best_value, self.best_step = value, self.step
        return True

    def state_dict(self) -> dict[str, Any]:
        """The JSON-able form written to state.json."""
        return {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "elapsed_s": self.elapsed_s,
            "total_steps": self.total_steps,
            "rng": self.rng,
            "sampler": self.sampler,
            "best": {"metric": self.best_by, "value": self.best_value, "step": self.best_step},
            "nonfinite": {"consecutive": self.nonfinite_in_a_row, "total": self.nonfinite_total},
            "loss_scale": self.loss_scale,
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Continue from a state.json; total_steps and best_by stay this run's own."""
        self.step, self.tokens_seen = int(saved["step"]), int(saved["tokens_seen"])
        self.elapsed_s = float(saved.get("elapsed_s", 0.0))
        self.rng, self.sampler = saved["rng"], saved["sampler"]
        best = saved["best"]
        # A run that changed best_by starts its own record: a value of another metric is no baseline.
        same = best.get("metric") == self.best_by
        self.best_value, self.best_step = (best["value"], best["step"]) if same else (None, None)
        self.nonfinite_in_a_row = int(saved["nonfinite"]["consecutive"])
        self.nonfinite_total = int(saved["nonfinite"]["total"])
        self.loss_scale = saved.get("loss_scale")
