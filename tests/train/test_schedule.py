"""LR schedules: warmup start and boundary, monotone decay, the last step lands on min_lr."""

from __future__ import annotations

import mlx.core as mx
import pytest

from tinygpt_mlx.config import OptimConfig, ScheduleConfig
from tinygpt_mlx.train.schedule import build_schedule

LR, MIN_LR, WARMUP, TOTAL = 1e-3, 1e-4, 10, 50


def values(kind: str, warmup: int = WARMUP, total: int = TOTAL) -> list[float]:
    sched = build_schedule(OptimConfig(lr=LR), ScheduleConfig(warmup_steps=warmup, lr_schedule=kind, min_lr=MIN_LR), total)
    # The optimizer passes its uint64 step counter, so evaluate with the same dtype.
    return [sched(mx.array(k, dtype=mx.uint64)).item() for k in range(total)]


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_warmup_then_decay_to_min_lr(kind: str) -> None:
    v = values(kind)
    assert v[0] == 0.0
    assert v[WARMUP // 2] == pytest.approx(LR / 2, rel=1e-6)
    assert v[WARMUP] == pytest.approx(LR, rel=1e-6)
    assert all(a < b for a, b in zip(v[:WARMUP], v[1 : WARMUP + 1], strict=False))
    decay = v[WARMUP:]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))
    assert v[-1] == pytest.approx(MIN_LR, rel=1e-5)


def test_decay_midpoint_is_halfway() -> None:
    total = WARMUP + 2 * 20 + 1  # decay spans 40 steps, so step WARMUP + 20 is its middle
    for kind in ("cosine", "linear"):
        assert values(kind, total=total)[WARMUP + 20] == pytest.approx((LR + MIN_LR) / 2, rel=1e-5)


def test_constant_stays_at_lr_after_warmup() -> None:
    v = values("constant")
    assert v[0] == 0.0
    assert all(x == pytest.approx(LR, rel=1e-7) for x in v[WARMUP:])


def test_no_warmup_starts_at_peak() -> None:
    v = values("cosine", warmup=0)
    assert v[0] == pytest.approx(LR, rel=1e-7)
    assert v[-1] == pytest.approx(MIN_LR, rel=1e-5)


def test_warmup_spanning_the_whole_run() -> None:
    v = values("cosine", warmup=TOTAL, total=TOTAL)
    assert v[-1] == pytest.approx(LR * (TOTAL - 1) / TOTAL, rel=1e-6)
