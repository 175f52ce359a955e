"""eval/loss.py: the score formulas, the bytes targets spell, and `evaluate` leaving the model's mode alone."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest

from tinygpt_mlx.config import ModelConfig
from tinygpt_mlx.eval.loss import bits_per_byte, evaluate, perplexity, scores, target_bytes
from tinygpt_mlx.model import TinyGPT
from tinygpt_mlx.tokenizers.char import train_char

VOCAB, T = 12, 8


def test_bits_per_byte_and_ppl() -> None:
    # A uniform guess over 256 byte values costs ln(256) nats per byte = 8 bits.
    assert bits_per_byte(100 * math.log(256), 100) == pytest.approx(8.0)
    # Two bytes per token at 1 nat per token: 1 / (2 ln 2) bits per byte.
    assert bits_per_byte(10.0, 20) == pytest.approx(1 / (2 * math.log(2)))
    assert perplexity(math.log(7.0)) == pytest.approx(7.0)
    assert math.isfinite(perplexity(1e6))


def test_scores_from_summed_loss() -> None:
    got = scores(sum_nats=30.0, n_targets=10, n_bytes=15)
    assert got == {"val_loss": 3.0, "val_ppl": pytest.approx(math.exp(3.0)),
                   "val_bpb": pytest.approx(30.0 / (math.log(2) * 15))}


def test_target_bytes_counts_utf8_and_one_per_separator() -> None:
    tok = train_char(["café au lait"])
    row = tok.encode("café") + [tok.eos_id] + tok.encode("au")
    assert target_bytes(tok, np.array([row])) == len("café".encode()) + 1 + 2 == 8


def windows(seed: int, n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    tokens = np.random.default_rng(seed).integers(0, VOCAB, size=(n, T + 1))
    return tokens[:, :-1], tokens[:, 1:]


@pytest.mark.parametrize("training", [True, False])
def test_evaluate_matches_the_mean_loss_and_keeps_the_mode(training: bool) -> None:
    mx.random.seed(0)
    model = TinyGPT(ModelConfig(d_model=16, n_layers=1, n_heads=2, max_seq_len=T, dropout=0.5), VOCAB)
    model.train(training)
    x, y = windows(1)
    got = evaluate(model, x, y, n_bytes=60, batch_size=2)  # batches of 2, 2 and 1 windows
    assert model.training == training
    model.eval()  # no dropout: the reference below is deterministic, as evaluate must be
    logits = np.array(model(mx.array(x)), dtype=np.float64)
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    nats = float((logz - np.take_along_axis(logits, y[..., None], -1)[..., 0]).sum())
    assert got["val_loss"] == pytest.approx(nats / y.size, rel=1e-5)
    assert got["val_bpb"] == pytest.approx(nats / (math.log(2) * 60), rel=1e-5)
