"""Fixtures for the two-rank tests: a tiny config (as a Config and a YAML file) over a prepared token cache."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from tinygpt_mlx.config import Config, dump_config
from tinygpt_mlx.data.prepare import prepare_data


def sections(run_dir: Path, cache: Path, steps: int = 10, batch: int = 8) -> dict:
    """Dropout 0 (masks depend on the shard shape), grad clipping on, evals and saves inside the run."""
    return {
        "model": {"dropout": 0.0},
        "data": {"batch_size": batch, "cache_dir": str(cache)},
        "optim": {"grad_clip": 1.0},
        "schedule": {"max_steps": steps, "warmup_steps": 2},
        "eval": {"eval_every": 5, "sample_n": 1},
        "checkpoint": {"save_dir": str(run_dir), "save_every": 1, "keep_last_k": 100},
    }


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, make_config) -> Path:
    """A prepared token cache, so ranks only read it."""
    path = tmp_path_factory.mktemp("dist_cache")
    prepare_data(make_config(path, **sections(path / "unused", path)))
    return path


@pytest.fixture
def make_cfg(tmp_path: Path, cache: Path, make_config) -> Callable[..., tuple[Config, Path]]:
    """make_cfg(run_name, steps=, batch=, **section_overrides) -> (Config, its YAML file); run in tmp_path/name."""

    def make(name: str, steps: int = 10, batch: int = 8, **overrides: dict) -> tuple[Config, Path]:
        base = sections(tmp_path / name, cache, steps, batch)
        merged = {key: {**base.get(key, {}), **overrides.get(key, {})} for key in {*base, *overrides}}
        cfg = make_config(tmp_path, **merged)
        path = tmp_path / f"{name}.yaml"
        dump_config(cfg, path)
        return cfg, path

    return make


@pytest.fixture(scope="session")
def launch() -> ModuleType:
    """launch_helpers.py (spawn_ranks, finish, mlx_launch, ...): tests run with --import-mode=importlib."""
    spec = importlib.util.spec_from_file_location("dist_launch_helpers", Path(__file__).with_name("launch_helpers.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
