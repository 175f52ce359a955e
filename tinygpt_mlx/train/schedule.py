"""Learning-rate schedules: linear warmup, then cosine / linear decay to min_lr, or constant.

Built from `mlx.optimizers` schedule pieces so the optimizer evaluates them inside the compiled step.
Step k is the k-th optimizer update (0-based), the value mlx passes to a schedule before it counts up.
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
import mlx.optimizers as optim

from tinygpt_mlx.config import OptimConfig, ScheduleConfig

Schedule = Callable[[mx.array], mx.array]


def build_schedule(optim_cfg: OptimConfig, schedule_cfg: ScheduleConfig, total_steps: int) -> Schedule:
    """Step -> learning rate: 0 -> lr over warmup_steps, then the decay reaching min_lr at step total_steps - 1."""
    lr, min_lr, warmup = optim_cfg.lr, schedule_cfg.min_lr, schedule_cfg.warmup_steps
    if total_steps < 1:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    # The last update is step total_steps - 1, so the decay spans the steps after the warmup boundary
    # up to and including that one. At least 1 step: mlx's schedules refuse 0 (warmup == max_steps).
    decay_steps = max(1, total_steps - 1 - warmup)
    kind = schedule_cfg.lr_schedule
    if kind == "cosine":
        after = optim.cosine_decay(lr, decay_steps, end=min_lr)
    elif kind == "linear":
        after = optim.linear_schedule(lr, min_lr, decay_steps)
    elif kind == "constant":
        after = _constant(lr)
    else:
        raise ValueError(f"unknown lr_schedule {kind!r}")
    if warmup == 0:
        return after
    return optim.join_schedules([optim.linear_schedule(0.0, lr, warmup), after], [warmup])


def _constant(value: float) -> Schedule:
    def schedule(step: mx.array) -> mx.array:
        return mx.array(value, dtype=mx.float32)

    return schedule
