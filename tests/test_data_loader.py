"""Loader: deterministic resumable batches, x/y shift, sharding, pinned eval windows, TokenFile."""

from __future__ import annotations

import numpy as np
import pytest

from tinygpt_mlx.data.loader import BatchSampler, TokenFile, eval_windows, shard
from tinygpt_mlx.errors import UserError

TOKENS = np.arange(1000, dtype=np.uint16)  # token value == position, so windows are easy to check


def test_batches_are_shifted_windows_in_range():
    s = BatchSampler(len(TOKENS), batch_size=8, block_size=16, seed=3)
    for _ in range(20):
        x, y = s.next_batch(TOKENS)
        assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == np.int32
        np.testing.assert_array_equal(y, x + 1)  # next-token targets
        np.testing.assert_array_equal(x, x[:, :1] + np.arange(16))  # contiguous windows
        assert x.min() >= 0 and y.max() <= 999


def test_same_seed_same_batches_other_seed_different():
    a = BatchSampler(1000, 4, 8, seed=1)
    b = BatchSampler(1000, 4, 8, seed=1)
    c = BatchSampler(1000, 4, 8, seed=2)
    xa = [a.next_batch(TOKENS)[0] for _ in range(3)]
    xb = [b.next_batch(TOKENS)[0] for _ in range(3)]
    xc = [c.next_batch(TOKENS)[0] for _ in range(3)]
    for u, v in zip(xa, xb, strict=True):
        np.testing.assert_array_equal(u, v)
    assert not all(np.array_equal(u, v) for u, v in zip(xa, xc, strict=True))
    assert not np.array_equal(xa[0], xa[1])  # successive batches differ


def test_resume_from_state_reproduces_the_uninterrupted_run():
    straight = BatchSampler(1000, 4, 8, seed=42)
    for _ in range(5):
        straight.next_batch(TOKENS)
    state = dict(straight.state_dict())
    assert state == {"seed": 42, "batch_index": 5, "batch_size": 4, "block_size": 8, "num_tokens": 1000}
    expected = [straight.next_batch(TOKENS) for _ in range(3)]
    resumed = BatchSampler(1000, 4, 8, seed=42)
    resumed.load_state_dict(state)
    for ex, ey in expected:
        x, y = resumed.next_batch(TOKENS)
        np.testing.assert_array_equal(x, ex)
        np.testing.assert_array_equal(y, ey)
    with pytest.raises(UserError, match="block_size was 8, now 16"):
        BatchSampler(1000, 4, 16, seed=42).load_state_dict(state)


def test_shard_splits_the_global_batch():
    x = np.arange(8)[:, None] * np.ones((1, 3), dtype=np.int32)
    parts = [shard(x, r, 4) for r in range(4)]
    np.testing.assert_array_equal(np.concatenate(parts), x)
    np.testing.assert_array_equal(parts[1][:, 0], [2, 3])
    with pytest.raises(UserError, match="divisible"):
        shard(x, 0, 3)


def test_eval_windows_are_pinned_and_full_pass_tiles():
    starts = eval_windows(1001, block_size=10, token_budget=50)
    np.testing.assert_array_equal(starts, [0, 247, 495, 742, 990])  # evenly spaced, last ends at the end
    np.testing.assert_array_equal(starts, eval_windows(1001, 10, 50))
    full = eval_windows(1001, block_size=10, token_budget=10**9)
    np.testing.assert_array_equal(full, np.arange(100) * 10)  # 100 windows x 10 = every input token once
    assert len(eval_windows(1000, 10, 10**9)) == 99  # 1000 tokens: the 100th window would lack a target
    assert len(eval_windows(1001, 10, 3)) == 1


def test_too_short_split_is_a_user_error():
    with pytest.raises(UserError, match="fewer than data.block_size"):
        BatchSampler(16, 2, block_size=16, seed=0)
    with pytest.raises(UserError, match="validation split has 5 tokens"):
        eval_windows(5, 8, 100)


def test_token_file_is_a_memmap(tmp_path):
    path = tmp_path / "train.bin"
    TOKENS.tofile(path)
    tf = TokenFile(path, "uint16")
    assert len(tf) == 1000 and isinstance(tf.tokens, np.memmap)
    x, y = BatchSampler(len(tf), 2, 4, seed=0).next_batch(tf.tokens)
    np.testing.assert_array_equal(y, x + 1)
    (tmp_path / "odd.bin").write_bytes(b"\x00\x01\x02")
    with pytest.raises(UserError, match="whole number"):
        TokenFile(tmp_path / "odd.bin", np.uint16)
    with pytest.raises(UserError, match="not found"):
        TokenFile(tmp_path / "missing.bin", np.uint16)
    with pytest.raises(UserError, match="no meta.json"):
        TokenFile(path)
    (tmp_path / "meta.json").write_text('{"dtype": "uint8"}')
    assert len(TokenFile(path)) == 2000  # dtype taken from meta.json
