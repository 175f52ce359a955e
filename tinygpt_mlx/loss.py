"""The language-modelling loss, shared by training, evaluation, SEAL and the benchmarks."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


def cross_entropy_loss(logits: mx.array, targets: mx.array, reduction: str = "mean") -> mx.array:
    """Next-token cross-entropy in float32: `mean`, `sum` or `none` (per token, shaped like targets)."""
    # Upcast first: on the CPU the logsumexp accumulates in the logits' dtype.
    return nn.losses.cross_entropy(logits.astype(mx.float32), targets, reduction=reduction)
