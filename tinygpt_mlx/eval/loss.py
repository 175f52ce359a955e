"""Validation loss, perplexity and bits per byte: one definition for the training log and `tinygpt eval`.

Both score the same pinned windows with these functions, so the CSV and metrics.jsonl agree to the last
digit. Bits per byte divide by the UTF-8 bytes the targets spell, which makes runs with different
tokenizers comparable.
"""

from __future__ import annotations

import math
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from tinygpt_mlx.distributed import World
from tinygpt_mlx.loss import cross_entropy_loss


def bits_per_byte(sum_nats: float, n_bytes: int) -> float:
    """Bits per UTF-8 byte: total token loss in nats over (ln 2 x bytes of the predicted text)."""
    return sum_nats / (math.log(2) * n_bytes)


def perplexity(mean_nats: float) -> float:
    """exp(loss), kept finite in JSON (inf would not be valid JSON)."""
    return math.exp(min(mean_nats, 700.0))


def scores(sum_nats: float, n_targets: int, n_bytes: int) -> dict[str, float]:
    """val_loss, val_ppl and val_bpb from the summed token loss over n_targets tokens spelling n_bytes."""
    mean = sum_nats / n_targets
    return {"val_loss": mean, "val_ppl": perplexity(mean), "val_bpb": bits_per_byte(sum_nats, n_bytes)}


def target_bytes(tokenizer: Any, y: np.ndarray) -> int:
    """UTF-8 bytes of the text the targets spell; each end-of-text separator counts as one byte."""
    n_eos = int((y == tokenizer.eos_id).sum())
    text = "".join(tokenizer.decode([t for t in row.tolist() if t != tokenizer.eos_id]) for row in y)
    return len(text.encode("utf-8")) + n_eos


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, n_bytes: int, batch_size: int,
             world: World | None = None) -> dict[str, float]:
    """Scores of model on the windows x -> y (no dropout); the model's train/eval mode is left as it was.

    With a world of several ranks each rank scores its share of the windows and the sums are added up.
    """
    was_training = model.training
    model.eval()
    total = mx.array(0.0)
    rows = world.rows(len(x)) if world is not None else slice(0, len(x))
    for i in range(rows.start, rows.stop, batch_size):
        end = min(i + batch_size, rows.stop)
        logits = model(mx.array(x[i:end]))
        total = total + cross_entropy_loss(logits, mx.array(y[i:end]), reduction="sum")
        mx.eval(total)  # one batch of logits alive at a time
    if world is not None:
        total = world.sum(total)
    model.train(was_training)
    return scores(total.item(), y.size, n_bytes)
