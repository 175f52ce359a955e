"""One glibc malloc arena while CPU lanes run (cpu/malloc_arenas.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc arenas are Linux-only")

# Four lanes allocate small MLX buffers (below glibc's mmap threshold, so they come from an arena), then
# glibc's malloc_stats() prints one "Arena N:" block per arena to stderr.
_CHILD = """
import ctypes
import tinygpt_mlx  # noqa: F401
import mlx.core as mx
from tinygpt_mlx.cpu import lanes

pool = lanes.Lanes(4, lambda: (lambda k: [mx.ones((16, 256)) * k for _ in range(64)]))
for _ in range(3):
    pool.run([(i,) for i in range(4)])
pool.close()
ctypes.CDLL(None).malloc_stats()
"""


def _arenas(env: dict[str, str]) -> int:
    result = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stderr.count("Arena ")


def test_lanes_share_one_malloc_arena():
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert _arenas(env) == 1


def test_users_malloc_arena_max_wins():
    # Also shows the lanes would get arenas of their own without the limit.
    assert _arenas({**os.environ, "MALLOC_ARENA_MAX": "8"}) > 1
