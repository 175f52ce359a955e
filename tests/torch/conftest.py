"""The tiny config for the PyTorch path, and torch kept to one thread (the CI box is shared)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tinygpt_mlx.config import Config

# No dropout, so the two frameworks compute the same function step by step.
SECTIONS = {
    "schedule": {"max_steps": 12, "warmup_steps": 3},
    "runtime": {"grad_accum_steps": 2},
    "eval": {"eval_every": 6, "eval_subset": 1024, "sample_n": 1},
    "checkpoint": {"save_every": 100, "keep_last_k": 5},
}


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    # Two cores shared by several jobs: torch's spinning intra-op pool makes tiny steps ~50x slower.
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def make_cfg(make_config) -> Callable[..., Config]:
    """make_cfg(root, backend, **section_patches) -> the suite's tiny Config with SECTIONS, run folder root/run."""

    def make(root: Path, backend: str = "mlx", **sections: dict) -> Config:
        merged = {name: {**SECTIONS.get(name, {}), **sections.get(name, {})} for name in {*SECTIONS, *sections}}
        merged["runtime"] = {**merged["runtime"], "backend": backend}
        return make_config(root, **merged)

    return make
