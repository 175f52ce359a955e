"""Tiny real-data configs for the PyTorch path, and torch kept to one thread (the CI box is shared)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tinygpt_mlx.config import Config, from_dict


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    # Two cores shared by several jobs: torch's spinning intra-op pool makes tiny steps ~50x slower.
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data_cache")


def tiny_raw(run_dir: Path, cache: Path, data_dir: Path, steps: int = 12) -> dict:
    """No dropout, so the two frameworks compute the same function step by step."""
    return {
        "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "max_seq_len": 32},
        "data": {"dataset": "local", "data_dir": str(data_dir), "max_stories": 200, "block_size": 32,
                 "batch_size": 4, "cache_dir": str(cache), "num_workers": 1},
        "optim": {"lr": 3e-3},
        "schedule": {"max_steps": steps, "warmup_steps": 3, "min_lr": 3e-4},
        "runtime": {"log_interval": 1, "grad_accum_steps": 2},
        "eval": {"eval_every": 6, "eval_subset": 1024, "sample_n": 1, "sample_max_new_tokens": 8},
        "checkpoint": {"save_dir": str(run_dir), "save_every": 100, "keep_last_k": 5},
    }


@pytest.fixture(scope="module")
def make_cfg(cache: Path, tinystories_dir: Path) -> Callable[..., Config]:
    """make_cfg(run_dir, backend, **section_patches) -> a validated tiny Config."""

    def make(run_dir: Path, backend: str = "mlx", **sections: dict) -> Config:
        raw = tiny_raw(run_dir, cache, tinystories_dir)
        raw["runtime"]["backend"] = backend
        for name, values in sections.items():
            raw[name] = {**raw[name], **values}
        return from_dict(raw)

    return make
