"""Suite-wide fixtures: the tiny committed corpus, the one tiny-config factory, and the shared real data.

Unit tests run on `tests/data/tiny` (37 short stories written for this repository) and need nothing else.
Tests that need the real TinyStories excerpt or the GPT-2 BPE files take `tinystories_dir` / `gpt2_bpe_dir`
from ../shared/data: they are marked `slow` automatically, and skip where that folder is absent, so
`pytest -m "not slow"` runs anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import tinygpt_mlx  # noqa: F401 - loads the fast BLAS before any test imports mlx.core
from tinygpt_mlx.config import Config, from_dict

REPO = Path(__file__).resolve().parents[1]
TINY_CORPUS = Path(__file__).resolve().parent / "data" / "tiny"
SHARED_DATA = Path(os.environ.get("TINYGPT_SHARED_DATA", REPO.parent / "shared" / "data"))
SHARED_FIXTURE = "shared_data"


def tiny_raw(root: Path) -> dict[str, dict[str, Any]]:
    """The tiny config as a raw dict: a 2-layer, 32-wide model over the tiny corpus, 8 steps, run in root/run."""
    return {
        "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "max_seq_len": 32},
        "data": {"dataset": "local", "data_dir": str(TINY_CORPUS), "block_size": 32, "batch_size": 4,
                 "cache_dir": str(root / "cache"), "num_workers": 1},
        "optim": {"lr": 3e-3},
        "schedule": {"max_steps": 8, "warmup_steps": 1, "min_lr": 3e-4},
        "runtime": {"log_interval": 1},
        "eval": {"eval_every": 1000, "eval_subset": 256, "sample_n": 0, "sample_max_new_tokens": 8},
        "checkpoint": {"save_dir": str(root / "run"), "save_every": 1000, "keep_last_k": 3},
    }


def make_config(root: Path, **sections: dict[str, Any]) -> Config:
    """make_config(root, optim={"lr": 1e-2}, ...) -> the tiny Config with those keys changed, validated.

    Token cache in root/cache and run folder in root/run unless a section override moves them;
    `dump_config(cfg, path)` writes it as YAML for CLI tests.
    """
    raw = tiny_raw(root)
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return from_dict(raw)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that reads ../shared/data `slow`, before `-m` deselects by marker."""
    for item in items:
        if SHARED_FIXTURE in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_corpus() -> Path:
    """The committed tiny corpus: tinystories_train.txt (24 stories) and tinystories_valid.txt (13)."""
    return TINY_CORPUS


@pytest.fixture(scope="session", name="make_config")
def make_config_fixture() -> Callable[..., Config]:
    """The tiny-config factory `make_config(root, **section_overrides)` (conftest is not importable by name)."""
    return make_config


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the read-only shared data (tinystories/, gpt2-bpe/); skips the test where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set TINYGPT_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tinystories_dir(shared_data: Path) -> Path:
    """The real TinyStories excerpt (4042 train and 800 validation stories)."""
    return shared_data / "tinystories"


@pytest.fixture(scope="session")
def gpt2_bpe_dir(shared_data: Path) -> Path:
    """GPT-2's vocab.json and merges.txt."""
    return shared_data / "gpt2-bpe"
