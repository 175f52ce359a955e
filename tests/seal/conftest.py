"""Fixtures for SEAL tests: the tiny corpus's validation stories, a char tokenizer and a tiny random TinyGPT."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mlx.core as mx
import pytest

from tinygpt_mlx.config import Config, DataConfig, ModelConfig
from tinygpt_mlx.data.sources import read_stories
from tinygpt_mlx.model import TinyGPT
from tinygpt_mlx.seal.config import SealConfig
from tinygpt_mlx.tokenizers import Tokenizer, build_tokenizer


@pytest.fixture(scope="session")
def stories(tiny_corpus: Path) -> list[str]:
    """The 13 validation stories of the tiny corpus (enough for a few contexts plus the forgetting set)."""
    return read_stories(tiny_corpus / "tinystories_valid.txt")


@pytest.fixture(scope="session")
def tokenizer(stories: list[str]) -> Tokenizer:
    return build_tokenizer(DataConfig(tokenizer="char"), stories)


def make_model(vocab_size: int, seed: int = 0) -> TinyGPT:
    """A tiny random TinyGPT (d_model 32, 1 layer, 256 positions)."""
    mx.random.seed(seed)
    model = TinyGPT(ModelConfig(d_model=32, n_layers=1, n_heads=2, max_seq_len=256), vocab_size)
    model.eval()
    return model


@pytest.fixture
def model(tokenizer: Tokenizer) -> TinyGPT:
    return make_model(tokenizer.vocab_size)


@pytest.fixture
def fresh_model(tokenizer: Tokenizer) -> Callable[[], TinyGPT]:
    """Factory of identical tiny models (for runs that must start from the same weights)."""
    return lambda: make_model(tokenizer.vocab_size)


@pytest.fixture
def model_for() -> Callable[[int], TinyGPT]:
    """Factory of the tiny model for another vocabulary size."""
    return make_model


def _small_seal(**changes: object) -> SealConfig:
    base = dict(enabled=True, rounds=2, k_edits=2, n_train_contexts=2, n_heldout_contexts=2, n_forget_stories=2,
                max_context_tokens=48, max_target_tokens=32, edit_max_tokens=16, inner_steps=[1, 3], ranks=[2],
                inner_lr=1e-2, policy_lr=1e-2, policy_epochs=1, seed=7, lora_seeds=2, cloze_max_doc_freq=0.5)
    base.update(changes)
    return SealConfig(**base)


@pytest.fixture
def small_seal() -> Callable[..., SealConfig]:
    """Factory of seal sections that run in seconds: 2 + 2 contexts, 2 edits, 2-step grid, one rank, 2 seeds."""
    return _small_seal


@pytest.fixture
def base_cfg() -> Config:
    return Config()
