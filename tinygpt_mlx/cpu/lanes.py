"""Data parallelism over CPU cores inside one process: each lane is a thread with its own MLX stream.

Why: MLX's CPU backend runs every op except BLAS calls on one thread per stream. On the reference
shape that left one of two cores idle for about 40% of a step (layer norm, softmax, GELU, copies),
while OpenBLAS's helper threads spun. Splitting each micro-batch into n equal shards, each evaluated
by its own thread on its own stream with a single-threaded BLAS, keeps every core busy in every op.
The shards' gradients are summed in a fixed order, so a run is deterministic for a given lane count.

Graph construction (including a first call's trace) mutates shared Python state (the model's
parameters), so it runs under one lock; evaluation, where the time goes, does not. MLX streams belong to
the thread that made them, so each lane makes its own and keeps its thread. Lane functions must not use
MLX's global random state (it is per thread, and using it in these threads made processes abort at exit):
the lane step (step.py) hands each lane an explicit dropout key instead.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any

import mlx.core as mx

from tinygpt_mlx.cpu import blas
from tinygpt_mlx.cpu.malloc_arenas import share_malloc_arena

TRACE_LOCK = threading.Lock()
_STOP = object()


def usable_cores() -> int:
    """CPU cores this process may use: $TINYGPT_CPU_CORES (set by parallel sweeps), else its CPU affinity."""
    budget = os.environ.get("TINYGPT_CPU_CORES", "")
    if budget.isdigit() and int(budget) > 0:
        return int(budget)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def auto_lanes(micro_batch: int, cores: int | None = None, max_lanes: int = 8) -> int:
    """The lane count `runtime.cpu_threads: 0` picks: up to two per core, dividing the batch, 2+ rows each."""
    cores = usable_cores() if cores is None else cores
    # Two lanes per core measured 2-9% faster than one on 2 cores (benchmarks/README.md): while one lane
    # waits between ops, the other computes. Capped at 8: each lane repeats the small per-op overheads.
    for n in range(min(2 * cores, max_lanes, micro_batch // 2), 1, -1):
        if micro_batch % n == 0:
            return n
    return 1


def choose_lanes(requested: int, micro_batch: int, distributed: bool) -> int:
    """Lanes for runtime.cpu_threads `requested` (0 = auto_lanes); 1 under mlx.launch (ranks own the cores)."""
    if distributed:
        return 1
    if requested == 0:
        return auto_lanes(micro_batch)
    if micro_batch % requested:
        raise ValueError(f"runtime.cpu_threads ({requested}) must divide the micro-batch ({micro_batch})")
    return requested


class Lanes:
    """n worker threads; run() hands one argument tuple to each and returns their evaluated results in order."""

    def __init__(self, n: int, make_fn: Callable[[], Callable[..., Any]]):
        self.size = n
        self._jobs = 0
        self._inbox: list[queue.Queue] = [queue.Queue() for _ in range(n)]
        self._outbox: list[queue.Queue] = [queue.Queue() for _ in range(n)]
        share_malloc_arena()  # before the threads exist: each would otherwise get an arena of its own
        # One function per lane (each its own compile cache, so each traces on its own lane's stream).
        self._threads = [
            threading.Thread(target=self._serve, args=(i, make_fn()), name=f"tinygpt-lane-{i}", daemon=True)
            for i in range(n)
        ]
        for thread in self._threads:
            thread.start()

    def _serve(self, i: int, fn: Callable[..., Any]) -> None:
        stream = mx.new_stream(mx.cpu)
        with mx.stream(stream):
            while (job := self._inbox[i].get()) is not _STOP:
                self._outbox[i].put(self._do(fn, *job))
                del job  # hold no arrays between jobs

    @staticmethod
    def _do(fn: Callable[..., Any], number: int, args: tuple) -> tuple[int, bool, Any]:
        try:
            with TRACE_LOCK:
                out = fn(*args)
            mx.eval(out)
            return number, True, out
        except BaseException as error:  # handed to the caller's thread, which re-raises it
            return number, False, error

    def run(self, per_lane_args: list[tuple]) -> list[Any]:
        """Evaluate fn(*per_lane_args[i]) on lane i, all lanes at once, with BLAS at cores // n threads each."""
        self._jobs += 1
        previous = blas.set_threads(max(1, usable_cores() // self.size))
        try:
            for inbox, args in zip(self._inbox, per_lane_args, strict=True):
                inbox.put((self._jobs, args))
            answers = [self._answer(outbox) for outbox in self._outbox]
        finally:
            if previous is not None:
                blas.set_threads(previous)
        for ok, value in answers:
            if not ok:
                raise value
        return [value for _, value in answers]

    def _answer(self, outbox: queue.Queue) -> tuple[bool, Any]:
        # A run interrupted in the caller (Ctrl-C while waiting) leaves its answers behind: skip them.
        while True:
            number, ok, value = outbox.get()
            if number == self._jobs:
                return ok, value

    def close(self) -> None:
        """Stop the threads (they are daemons, so a process that forgets this still exits)."""
        for inbox in self._inbox:
            inbox.put(_STOP)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()
