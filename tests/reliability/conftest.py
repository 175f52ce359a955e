"""The tiny config for fault-injection runs: dropout on, a checkpoint every step, no evals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tinygpt_mlx.config import Config, dump_config

SECTIONS = {
    "model": {"dropout": 0.1},
    "checkpoint": {"save_every": 1, "keep_last_k": 100},
}


@pytest.fixture
def make_cfg(tmp_path: Path, make_config) -> Callable[..., Config]:
    """make_cfg(section={key: value}, ...) -> the suite's tiny Config with SECTIONS, run folder tmp_path/run."""

    def make(**sections: dict) -> Config:
        merged = {name: {**SECTIONS.get(name, {}), **sections.get(name, {})} for name in {*SECTIONS, *sections}}
        return make_config(tmp_path, **merged)

    return make


@pytest.fixture
def config_file(tmp_path: Path, make_cfg) -> Path:
    """The tiny config as YAML for CLI runs (save_dir tmp_path/run)."""
    path = tmp_path / "tiny.yaml"
    dump_config(make_cfg(), path)
    return path
