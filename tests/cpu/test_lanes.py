"""Data parallelism over CPU threads inside one process (cpu/lanes.py): lane counts and the thread pool."""

from __future__ import annotations

import mlx.core as mx
import pytest

from tinygpt_mlx.cpu import blas
from tinygpt_mlx.cpu import lanes as lanes_lib


@pytest.mark.parametrize(("micro_batch", "cores", "expected"), [
    (16, 2, 4),  # two lanes per core
    (16, 1, 2),
    (16, 8, 8),  # capped at 8
    (10, 2, 2),  # 4 and 3 do not divide 10
    (6, 2, 3),   # at least 2 rows per lane
    (3, 2, 1),
    (1, 4, 1),
])
def test_auto_lanes(micro_batch: int, cores: int, expected: int):
    assert lanes_lib.auto_lanes(micro_batch, cores=cores) == expected


def test_choose_lanes_rules():
    assert lanes_lib.choose_lanes(0, 16, distributed=True) == 1  # ranks own the cores
    assert lanes_lib.choose_lanes(1, 16, distributed=False) == 1
    assert lanes_lib.choose_lanes(2, 16, distributed=False) == 2
    assert lanes_lib.choose_lanes(0, 16, distributed=False) == lanes_lib.auto_lanes(16)
    with pytest.raises(ValueError, match="must divide"):
        lanes_lib.choose_lanes(3, 16, distributed=False)


def test_lanes_run_in_order_and_restore_blas_threads():
    before = blas.set_threads(2)
    pool = lanes_lib.Lanes(3, lambda: (lambda a, b: mx.array(a) * b))
    try:
        out = pool.run([(1, 2), (3, 4), (5, 6)])
        assert [o.item() for o in out] == [2, 12, 30]
        if before is not None:
            assert blas.set_threads(2) == 2  # run() put the count back
    finally:
        pool.close()
        if before is not None:
            blas.set_threads(before)


def test_a_lane_error_reaches_the_caller():
    def make():
        def fn(x):
            if x == 1:
                raise RuntimeError("lane one failed")
            return mx.array(x)
        return fn

    pool = lanes_lib.Lanes(2, make)
    try:
        with pytest.raises(RuntimeError, match="lane one failed"):
            pool.run([(0,), (1,)])
        assert [o.item() for o in pool.run([(4,), (5,)])] == [4, 5]  # still usable
    finally:
        pool.close()


def test_answers_of_an_interrupted_run_are_not_mixed_into_the_next():
    pool = lanes_lib.Lanes(2, lambda: (lambda x: mx.array(x)))
    try:
        # As if the caller had been interrupted after handing out job 1: its answers are still queued.
        pool._jobs += 1
        for inbox in pool._inbox:
            inbox.put((pool._jobs, (99,)))
        assert [o.item() for o in pool.run([(1,), (2,)])] == [1, 2]
    finally:
        pool.close()


def test_cpu_core_budget_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TINYGPT_CPU_CORES", "1")  # what `scaling run --jobs 2` gives each child on 2 cores
    assert lanes_lib.usable_cores() == 1
    assert lanes_lib.auto_lanes(16) == 2
    monkeypatch.setenv("TINYGPT_CPU_CORES", "junk")  # ignored: falls back to the CPU affinity
    assert lanes_lib.usable_cores() >= 1
