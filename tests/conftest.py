"""Shared fixtures: the real TinyStories excerpt and GPT-2 BPE files under ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import tinygpt_mlx  # noqa: F401 - loads the fast BLAS before any test imports mlx.core

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TINYGPT_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_sessionstart(session: pytest.Session) -> None:
    """Build the CPU kernels now (~15 s on a fresh machine), not inside a test that runs under a timeout."""
    from tinygpt_mlx import kernels

    kernels.load()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the read-only shared data (tinystories/, gpt2-bpe/)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA}; set TINYGPT_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tinystories_dir(shared_data: Path) -> Path:
    return shared_data / "tinystories"


@pytest.fixture(scope="session")
def gpt2_bpe_dir(shared_data: Path) -> Path:
    return shared_data / "gpt2-bpe"
