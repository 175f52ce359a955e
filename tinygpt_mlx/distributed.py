"""The mx.distributed glue for data-parallel training under `mlx.launch`: the world, reductions, a watchdog.

`mlx.launch -n N -- tinygpt train ...` starts N processes that each call `World.init()`; outside a launch
it is a world of one and every helper here is a no-op, so a single-process run never communicates.
Data parallelism: every rank draws the same global batch and keeps its own rows; gradients (and the loss)
are averaged with one all_sum inside the compiled step (train/step.py), so all ranks hold identical weights.

A collective waits forever on a peer that froze or vanished from the network (a peer that exits cleanly
closes its socket and the ring backend raises instead). Every wait on a collective therefore runs under a
watchdog: past `TINYGPT_DIST_TIMEOUT` seconds, or on a backend error, the rank prints one line and exits
with EXIT_PEER_LOST. Only rank 0 writes checkpoints, and never inside a watched wait, so the last
checkpoint is always whole and `--resume auto` (with any number of ranks) continues from it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import mlx.core as mx
import numpy as np

from tinygpt_mlx.errors import UserError

EXIT_PEER_LOST = 75  # sysexits EX_TEMPFAIL: not the user's fault, try again (resume) once all ranks are up
TIMEOUT_ENV = "TINYGPT_DIST_TIMEOUT"
# Generous: a waiting rank also waits out rank 0's evals, samples and checkpoint saves.
DEFAULT_TIMEOUT_S = 300.0
# The first step and eval of a run also build MLX's fused CPU kernels (the system compiler runs on first use;
# seconds, more on a busy machine), so their waits get this much extra on top of the timeout.
WARMUP_ALLOWANCE_S = 120.0
_POLL_S = 0.2  # how late past its deadline the watchdog may notice; polling keeps it trivially simple


def abort(message: str) -> None:
    """Print one line to stderr and leave now, skipping atexit and the group's teardown (a peer is gone)."""
    sys.stdout.flush()
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    os._exit(EXIT_PEER_LOST)


def timeout_from_env() -> float:
    """Seconds from TINYGPT_DIST_TIMEOUT (default 300); refuses a value that is not a positive number."""
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None or raw == "":
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise UserError(f"{TIMEOUT_ENV}={raw!r} must be a positive number of seconds")
    return value


class Watchdog:
    """A daemon thread that ends the process when an armed wait outlives its deadline."""

    def __init__(self, timeout_s: float, rank: int) -> None:
        self.timeout_s, self.rank = timeout_s, rank
        self._lock = threading.Lock()
        self._deadline: float | None = None
        self._what = ""
        threading.Thread(target=self._run, name="tinygpt-dist-watchdog", daemon=True).start()

    def arm(self, what: str, extra_s: float = 0.0) -> None:
        """Start the clock for a wait described by `what` (e.g. 'step 12'), allowing extra_s more."""
        with self._lock:
            self._deadline, self._what = time.monotonic() + self.timeout_s + extra_s, what

    def disarm(self) -> None:
        """The wait finished in time."""
        with self._lock:
            self._deadline = None

    def _run(self) -> None:
        # MLX releases the GIL while it waits in eval, so this thread runs while the main one is blocked.
        while True:
            time.sleep(_POLL_S)
            with self._lock:
                late = self._deadline is not None and time.monotonic() > self._deadline
                what = self._what
            if late:
                abort(f"rank {self.rank}: no answer from the other ranks for {self.timeout_s:g} s in {what} "
                      f"(a rank died, hung or lost the network; {TIMEOUT_ENV} sets the limit). The last "
                      f"checkpoint is intact: continue with --resume auto (exit code {EXIT_PEER_LOST})")


class World:
    """This process's place in the launched group: rank, size and the collectives training needs."""

    def __init__(self, group: mx.distributed.Group | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.group = group
        self.rank = group.rank() if group is not None else 0
        self.size = group.size() if group is not None else 1
        self.timeout_s = timeout_s
        self._watchdog: Watchdog | None = None

    @classmethod
    def init(cls) -> World:
        """The launched group (mlx.launch sets MLX_RANK and friends), or a world of one."""
        group = mx.distributed.init()  # not strict: a singleton group when nothing was launched
        if group.size() == 1:
            return cls(None)
        return cls(group, timeout_from_env())

    @property
    def is_main(self) -> bool:
        """True on the rank that writes files and prints (rank 0)."""
        return self.rank == 0

    def check_batch(self, batch_size: int) -> None:
        """Refuse a global batch that the ranks cannot split evenly."""
        if batch_size % self.size:
            raise UserError(f"data.batch_size ({batch_size}) is the global batch and must be divisible by the "
                            f"number of ranks ({self.size}); use a multiple of {self.size}")

    def rows(self, n: int) -> slice:
        """This rank's contiguous share of n rows (as even as possible; used for eval windows)."""
        bounds = np.linspace(0, n, self.size + 1).round().astype(int)
        return slice(int(bounds[self.rank]), int(bounds[self.rank + 1]))

    def sum(self, x: mx.array) -> mx.array:
        """all_sum over the ranks (x itself in a world of one)."""
        return x if self.group is None else mx.distributed.all_sum(x, group=self.group)

    def max_int(self, value: int, what: str) -> int:
        """The largest of every rank's `value`: how ranks agree on e.g. a stop signal seen by one of them."""
        if self.group is None:
            return value
        with self.watch(what):
            return int(mx.distributed.all_max(mx.array(value, mx.int32), group=self.group).item())

    def barrier(self, what: str, watched: bool = True) -> None:
        """Wait until every rank got here; `watched=False` for waits of unknown length (data preparation)."""
        if self.group is None:
            return
        with self.watch(what, timed=watched):
            mx.eval(mx.distributed.all_sum(mx.array(1.0), group=self.group))

    def broadcast(self, tree: Any, what: str) -> Any:
        """Rank 0's arrays on every rank (an all_sum in which the other ranks contribute zeros)."""
        if self.group is None:
            return tree
        from mlx.utils import tree_map

        with self.watch(what):
            out = tree_map(lambda a: mx.distributed.all_sum(a if self.is_main else mx.zeros_like(a),
                                                            group=self.group), tree)
            mx.eval(out)
        return out

    def check_same(self, values: dict[str, Any]) -> None:
        """Refuse to train when ranks disagree on things that must match (tokenizer, data, start step)."""
        if self.group is None:
            return
        mine = mx.array([zlib.crc32(repr(v).encode()) & 0x7FFFFFFF for v in values.values()], mx.int32)
        with self.watch("the start-up check"):
            high = mx.distributed.all_max(mine, group=self.group).tolist()
            low = mx.distributed.all_min(mine, group=self.group).tolist()
        differ = [name for name, a, b in zip(values, high, low, strict=True) if a != b]
        if differ:
            raise UserError(f"the ranks disagree on {', '.join(differ)}: every machine needs the same code, data "
                            "and config, and for --resume the same run folder (shared, or a copy of it)")

    def decorrelate_rng(self) -> None:
        """Give ranks > 0 their own dropout stream; rank 0 keeps the single-process one (and checkpoints it)."""
        if self.rank == 0:
            return
        hi, lo = (int(v) for v in mx.random.state[0].tolist())
        mx.random.seed(((hi << 32) | lo) ^ (self.rank * 0x9E3779B97F4A7C15 & (2**64 - 1)))

    @contextmanager
    def watch(self, what: str, timed: bool = True, warmup: bool = False) -> Iterator[None]:
        """Run a wait on the other ranks: bounded by the timeout, a backend error becomes one line + exit 75.

        `warmup` adds WARMUP_ALLOWANCE_S for the first step / eval, which compile kernels on every rank.
        """
        if self.group is None:
            yield
            return
        if timed and self._watchdog is None:
            self._watchdog = Watchdog(self.timeout_s, self.rank)
        if timed:
            self._watchdog.arm(what, WARMUP_ALLOWANCE_S if warmup else 0.0)
        try:
            yield
        except RuntimeError as err:  # the ring backend raises once a peer's socket closes
            abort(f"rank {self.rank}: {what} failed in a collective ({err}); another rank probably died. "
                  f"The last checkpoint is intact: continue with --resume auto (exit code {EXIT_PEER_LOST})")
        finally:
            if timed:
                self._watchdog.disarm()

