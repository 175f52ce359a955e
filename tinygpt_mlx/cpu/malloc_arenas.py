"""Keep glibc's malloc to one arena while CPU lanes run, so memory freed by one lane serves the next.

Why: MLX's CPU backend allocates every activation with malloc, and glibc gives each new thread its own
arena (up to 8 per core). Memory freed into a lane's arena is reused only by that lane, so with four lanes
each arena grew to its own high-water mark: peak RSS on the reference shape ran 150-200 MB above MLX's own
allocator peak. With one shared arena it runs 70-100 MB above it, at the same step time
(`python benchmarks/compare_torch.py`, see benchmarks/README.md). A user's own MALLOC_ARENA_MAX wins.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

_M_ARENA_MAX = -8  # from glibc's malloc.h


@functools.cache
def share_malloc_arena() -> bool:
    """Limit glibc malloc to one arena for threads started from now on; True if it took effect (asked once per process)."""
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # None: not glibc
    return bool(mallopt is not None and mallopt(_M_ARENA_MAX, 1) == 1)
