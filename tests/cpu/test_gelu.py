"""cpu/gelu.py: the arithmetic GELU (the fallback below the kernels) against nn.gelu_approx, both directions."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from tinygpt_mlx.cpu.gelu import gelu_arith

X = mx.concatenate([mx.linspace(-12, 12, 4001), 3 * mx.random.normal((5000,), key=mx.random.key(0))])


def test_values_match_nn_gelu_approx():
    np.testing.assert_allclose(np.array(gelu_arith(X)), np.array(nn.gelu_approx(X)), atol=2e-6, rtol=0)
    # Saturation: exactly x far right, exactly 0 far left (the rational tanh is clamped to +-1 there).
    assert gelu_arith(mx.array([20.0, -20.0])).tolist() == [20.0, 0.0]


@pytest.mark.parametrize("compiled", [False, True])
def test_gradient_matches_nn_gelu_approx(compiled: bool):
    g = mx.random.normal(X.shape, key=mx.random.key(1))

    def grad_of(fn):
        grad = mx.grad(lambda v: (fn(v) * g).sum())
        return np.array((mx.compile(grad) if compiled else grad)(X))

    np.testing.assert_allclose(grad_of(gelu_arith), grad_of(nn.gelu_approx), atol=2e-5, rtol=1e-5)


def test_half_precision_keeps_its_dtype_and_computes_in_float32():
    for dtype in (mx.bfloat16, mx.float16):
        x = X.astype(dtype)
        y = gelu_arith(x)
        assert y.dtype == dtype
        np.testing.assert_allclose(np.array(y.astype(mx.float32)), np.array(nn.gelu_approx(x).astype(mx.float32)),
                                   atol=2e-2, rtol=1e-2)
        assert mx.grad(lambda v: gelu_arith(v).astype(mx.float32).sum())(x).dtype == dtype
