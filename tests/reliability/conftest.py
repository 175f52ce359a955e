"""A tiny real-data config for fault-injection runs, as a YAML file the CLI can take too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tinygpt_mlx.config import Config, from_dict


def tiny_raw(run_dir: Path, cache: Path, data_dir: Path) -> dict:
    return {
        "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "max_seq_len": 32, "dropout": 0.1},
        "data": {"dataset": "local", "data_dir": str(data_dir), "max_stories": 200, "block_size": 32,
                 "batch_size": 4, "cache_dir": str(cache), "num_workers": 1},
        "optim": {"lr": 3e-3},
        "schedule": {"max_steps": 8, "warmup_steps": 1, "min_lr": 3e-4},
        "runtime": {"log_interval": 1},
        "eval": {"eval_every": 1000, "eval_subset": 1024, "sample_n": 0},
        "checkpoint": {"save_dir": str(run_dir), "save_every": 1, "keep_last_k": 100},
    }


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data_cache")


@pytest.fixture
def make_cfg(tmp_path: Path, cache: Path, tinystories_dir: Path) -> Callable[..., Config]:
    """make_cfg(section={key: value}, ...) -> Config with run folder tmp_path/run."""

    def make(**sections: dict) -> Config:
        raw = tiny_raw(tmp_path / "run", cache, tinystories_dir)
        for section, values in sections.items():
            raw[section] = {**raw[section], **values}
        return from_dict(raw)

    return make


@pytest.fixture
def config_file(tmp_path: Path, cache: Path, tinystories_dir: Path) -> Path:
    """The tiny config as YAML for CLI runs (save_dir tmp_path/run)."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_raw(tmp_path / "run", cache, tinystories_dir)))
    return path
