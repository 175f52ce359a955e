"""Batches from a prepared token file: a seeded, resumable random-window sampler and pinned eval windows.

The sampler keeps no random state, only a counter: batch i is drawn from a generator seeded with
(seed, i), so resuming from `state_dict()` reproduces exactly the batches an uninterrupted run would see.
Each call draws the *global* batch; under data parallelism every rank draws the same batch and keeps its
own rows with `shard(x, rank, world_size)`, so the result does not depend on the number of ranks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tinygpt_mlx.errors import UserError


class TokenFile:
    """A read-only memory map over a flat token file (the corpus is never copied into RAM)."""

    def __init__(self, path: str | Path, dtype: str | np.dtype | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"token file not found: {self.path} (run `tinygpt data prepare` first)")
        if dtype is None:  # a prepared folder records its dtype in meta.json next to the token files
            meta = self.path.parent / "meta.json"
            if not meta.is_file():
                raise UserError(f"no dtype given for {self.path} and no meta.json next to it")
            dtype = json.loads(meta.read_text())["dtype"]
        self.dtype = np.dtype(dtype)
        if self.path.stat().st_size % self.dtype.itemsize:
            raise UserError(f"{self.path} is not a whole number of {self.dtype.name} tokens; re-run data prepare")
        # np.memmap refuses empty files, and an empty split is useless anyway
        if self.path.stat().st_size == 0:
            raise UserError(f"token file {self.path} is empty")
        self.tokens = np.memmap(self.path, dtype=self.dtype, mode="r")

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def __repr__(self) -> str:
        return f"TokenFile({str(self.path)!r}, {self.dtype.name}, {len(self)} tokens)"


def _check_length(num_tokens: int, block_size: int, what: str = "split") -> None:
    if num_tokens < block_size + 1:
        raise UserError(f"the {what} has {num_tokens} tokens, fewer than data.block_size + 1 = {block_size + 1}; "
                        "use more data or a smaller block_size")


def windows(tokens: np.ndarray, starts: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) int32 arrays [len(starts), block_size]: the windows at `starts` and the same shifted by one."""
    idx = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(block_size + 1, dtype=np.int64)
    w = np.asarray(tokens[idx], dtype=np.int32)  # fancy indexing reads only these rows from the memmap
    return w[:, :-1], w[:, 1:]


class BatchSampler:
    """Random training windows; batch i depends only on (seed, i), so the whole state is a counter."""

    def __init__(self, num_tokens: int, batch_size: int, block_size: int, seed: int):
        _check_length(num_tokens, block_size, "training split")
        self.num_tokens = int(num_tokens)
        self.batch_size = int(batch_size)
        self.block_size = int(block_size)
        self.seed = int(seed)
        self.batch_index = 0

    def starts(self, batch_index: int) -> np.ndarray:
        """Window starts of batch `batch_index` (a pure function of seed and index)."""
        rng = np.random.default_rng([self.seed, batch_index])
        # the largest start leaves room for block_size inputs plus the one extra target token
        return rng.integers(0, self.num_tokens - self.block_size, size=self.batch_size, dtype=np.int64)

    def next_batch(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The next global batch (x, y), each int32 [batch_size, block_size]; y is x shifted by one."""
        if len(tokens) != self.num_tokens:
            raise UserError(f"sampler was built for {self.num_tokens} tokens but got {len(tokens)}")
        x, y = windows(tokens, self.starts(self.batch_index), self.block_size)
        self.batch_index += 1
        return x, y

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (JSON-serialisable)."""
        return {"seed": self.seed, "batch_index": self.batch_index, "batch_size": self.batch_size,
                "block_size": self.block_size, "num_tokens": self.num_tokens}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from `state_dict()`; refuses a state made for other data or batch shapes."""
        for key in ("seed", "batch_size", "block_size", "num_tokens"):
            if key in state and int(state[key]) != getattr(self, key):
                raise UserError(f"cannot resume the batch sampler: {key} was {state[key]}, now {getattr(self, key)}")
        self.batch_index = int(state["batch_index"])


def shard(x: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rows of a global batch that belong to `rank`: a contiguous block of batch_size / world_size rows."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    if x.shape[0] % world_size:
        raise UserError(f"data.batch_size ({x.shape[0]}) must be divisible by the number of ranks ({world_size})")
    per = x.shape[0] // world_size
    return x[rank * per:(rank + 1) * per]


def eval_windows(num_tokens: int, block_size: int, token_budget: int) -> np.ndarray:
    """Pinned validation window starts: evenly spaced, about `token_budget` tokens, no randomness.

    With a budget at least the file's size the windows tile the file without overlap (a full pass; the
    last < block_size tokens are left out).
    """
    _check_length(num_tokens, block_size, "validation split")
    max_windows = (num_tokens - 1) // block_size  # each window needs block_size + 1 tokens
    n = max(1, int(token_budget) // block_size)
    if n >= max_windows:
        return np.arange(max_windows, dtype=np.int64) * block_size
    last_start = num_tokens - block_size - 1
    return np.linspace(0, last_start, n).astype(np.int64)
