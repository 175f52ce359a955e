"""Causal attention for training on MLX's CPU backend: an arithmetic exp and a softmax with its own backward.

Why: MLX's CPU backend evaluates `exp` as a scalar loop, so the softmax inside
`mx.fast.scaled_dot_product_attention` (matmul + softmax + matmul on the CPU) cost about 20-40x PyTorch's
exp on a [16, 4, 256, 256] score tensor. Written with multiply and add only, exp compiles into fused,
vectorised loops, about 5x faster (`python benchmarks/cpu_facts.py` measures all three).

How: for x <= 0 (softmax arguments after subtracting the row max), exp(x) = exp(x / 64) ** 64, with
exp(x / 64) on [-1.25, 0] as a degree-10 polynomial (least squares in relative error) and six squarings.
Squaring multiplies the polynomial's rounding by 64: the relative error is at most 3e-5 at x = -80 and
about 3e-6 on average, against 4e-6 for mx.exp itself (tests/test_cpu_attention.py checks ours against
float64). Arguments below -80 are clamped there (exp(-80) = 2e-35: masked entries are 0 for all purposes).
The first half of the queries attends to the first half of the keys on its own, skipping the masked quarter.

Where the C++ kernels build (float32), `tinygpt_mlx.kernels.self_attention` replaces all of the above
with one fused primitive per direction (2x faster again, and no stored probabilities); this module is
then the fallback. `enabled()` also switches the kernels' layer norm and GELU on. Only the training step
uses any of it (see `train.step.TrainStep`); evaluation and generation keep
mx.fast.scaled_dot_product_attention, so exported models and mlx-lm stay bit-for-bit comparable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import mlx.core as mx
import numpy as np

MIN_SPLIT = 64  # shorter sequences attend in one block
_SQUARINGS = 6
_CLAMP = -80.0
_DEGREE = 10


def _exp_coefficients() -> list[float]:
    """Polynomial p with p(x) ~ exp(x / 2**_SQUARINGS) on [_CLAMP, 0], coefficients in powers of x."""
    k = 2.0**_SQUARINGS
    half = -_CLAMP / k / 2
    # Chebyshev-spaced nodes on [_CLAMP / k, 0]; weighting by 1/exp makes the fit minimise relative error.
    t = np.cos(np.linspace(0.0, np.pi, 20_000)) * half - half
    basis = np.vander(t, _DEGREE + 1, increasing=True) * np.exp(-t)[:, None]
    coef, *_ = np.linalg.lstsq(basis, np.ones_like(t), rcond=None)
    # Folding 1/k**i into the coefficients lets Horner's rule run on x itself: one fewer multiply.
    return [float(c) / k**i for i, c in enumerate(coef)]


_COEF = _exp_coefficients()


def exp_nonpositive(x: mx.array) -> mx.array:
    """exp(x) for x <= 0 in multiply/add only (fused and vectorised by mx.compile on the CPU)."""
    x = mx.maximum(x, _CLAMP)
    p = _COEF[-1]
    for c in reversed(_COEF[:-1]):
        p = p * x + c
    for _ in range(_SQUARINGS):
        p = p * p
    return p


@mx.custom_function
def _causal_probs(q: mx.array, k: mx.array, scale: mx.array) -> mx.array:
    t, s = q.shape[-2], k.shape[-2]
    # Query i (of the last t) sees keys 0 .. s - t + i; a large finite negative keeps the max finite.
    mask = mx.triu(mx.full((t, s), -1e9, dtype=mx.float32), k=s - t + 1)
    # float32 whatever the compute dtype: the polynomial needs it, as mx.fast's softmax upcasts too.
    # Scaling the scores rather than q fuses into the mask's add and keeps no scaled copy of q.
    scores = (q @ k.swapaxes(-1, -2)).astype(mx.float32) * scale + mask
    e = exp_nonpositive(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@_causal_probs.vjp
def _causal_probs_vjp(primals, cotangent, probs):
    # Only the probabilities are needed: the scores are never kept for the backward pass.
    q, k, scale = primals
    d_scores = (probs * (cotangent - (cotangent * probs).sum(axis=-1, keepdims=True)) * scale).astype(q.dtype)
    return d_scores @ k, d_scores.swapaxes(-1, -2) @ q, mx.zeros_like(scale)


def _attend(q: mx.array, k: mx.array, v: mx.array, scale: float) -> mx.array:
    return _causal_probs(q, k, mx.array(scale, dtype=mx.float32)).astype(v.dtype) @ v


def causal_attention(q: mx.array, k: mx.array, v: mx.array, scale: float) -> mx.array:
    """softmax(q k^T * scale + causal mask) v for [B, H, T, D] inputs, like mx.fast's SDPA with mask="causal"."""
    t = q.shape[2]
    if t != k.shape[2] or t < MIN_SPLIT or t % 2:
        return _attend(q, k, v, scale)
    # The first half of the queries sees only the first half of the keys: computing it on its own skips
    # the masked quarter of the score matrix (3/4 of the matmul and softmax work; 25-30% faster on the
    # reference shape). Four blocks measured no better than two: more, smaller ops.
    half = t // 2
    first = _attend(q[:, :, :half], k[:, :, :half], v[:, :, :half], scale)
    second = _attend(q[:, :, half:], k, v, scale)
    return mx.concatenate([first, second], axis=2)


_enabled = [False]


@contextlib.contextmanager
def enabled(on: bool = True) -> Iterator[None]:
    """Within this block TinyGPT, on the CPU, uses the training kernels or causal_attention (read at trace time)."""
    previous = _enabled[0]
    _enabled[0] = on
    try:
        yield
    finally:
        _enabled[0] = previous


def active() -> bool:
    """True inside `enabled()` while the default device is the CPU."""
    return _enabled[0] and mx.default_device().type == mx.DeviceType.cpu
