"""Fixtures for the two-rank tests: a tiny config (as a Config and a YAML file) over a prepared token cache."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tinygpt_mlx.config import Config, from_dict
from tinygpt_mlx.data.prepare import prepare_data


def tiny_raw(run_dir: Path, cache: Path, data_dir: Path, steps: int = 10, batch: int = 8) -> dict:
    """Dropout 0 (masks depend on the shard shape), grad clipping on, evals and saves inside the run."""
    return {
        "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "max_seq_len": 32, "dropout": 0.0},
        "data": {"dataset": "local", "data_dir": str(data_dir), "max_stories": 100, "block_size": 32,
                 "batch_size": batch, "cache_dir": str(cache), "num_workers": 1},
        "optim": {"lr": 3e-3, "grad_clip": 1.0},
        "schedule": {"max_steps": steps, "warmup_steps": 2, "min_lr": 3e-4},
        "runtime": {"log_interval": 1},
        "eval": {"eval_every": 5, "eval_subset": 1024, "sample_n": 1, "sample_max_new_tokens": 8},
        "checkpoint": {"save_dir": str(run_dir), "save_every": 1, "keep_last_k": 100},
    }


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, tinystories_dir: Path) -> Path:
    """A prepared token cache, so ranks only read it."""
    path = tmp_path_factory.mktemp("dist_cache")
    prepare_data(from_dict(tiny_raw(path / "unused", path, tinystories_dir)))
    return path


@pytest.fixture
def make_cfg(tmp_path: Path, cache: Path, tinystories_dir: Path) -> Callable[..., tuple[Config, Path]]:
    """make_cfg(run_name, steps=, batch=, **section_overrides) -> (Config, its YAML file)."""

    def make(name: str, steps: int = 10, batch: int = 8, **sections: dict) -> tuple[Config, Path]:
        raw = tiny_raw(tmp_path / name, cache, tinystories_dir, steps, batch)
        for section, values in sections.items():
            raw[section] = {**raw[section], **values}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return from_dict(raw), path

    return make




@pytest.fixture(scope="session")
def launch() -> ModuleType:
    """launch_helpers.py (spawn_ranks, finish, mlx_launch, ...): tests run with --import-mode=importlib."""
    spec = importlib.util.spec_from_file_location("dist_launch_helpers", Path(__file__).with_name("launch_helpers.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
