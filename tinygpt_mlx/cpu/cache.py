"""The per-machine cache the CPU pieces build into (the renamed BLAS, the C++ kernels), and its lock."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_dir(kind: str, override_variable: str) -> Path:
    """$override_variable if set, else <user cache>/tinygpt_mlx/<kind>."""
    override = os.environ.get(override_variable)
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tinygpt_mlx" / kind


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on directory/.lock, so processes of one mlx.launch build a thing once."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no POSIX locks (Windows): builds race at worst, os.replace keeps them whole
        yield
        return
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
