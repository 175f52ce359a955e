"""The C++ layer norm and GELU kernels against MLX's own: values, all gradients, layouts, the model's use."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from tinygpt_mlx.config import ModelConfig
from tinygpt_mlx.cpu.modules import FusedLayerNorm, FusedMLP, use_cpu_modules
from tinygpt_mlx.model import TinyGPT


def close(a: mx.array, b: mx.array, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    np.testing.assert_allclose(np.array(a), np.array(b), atol=atol, rtol=rtol)


@pytest.mark.parametrize("shape", [(3, 5, 32), (7, 100), (1, 1, 8)])
def test_layer_norm_matches_mx_fast_forward_and_all_gradients(ext, shape):
    keys = mx.random.split(mx.random.key(len(shape)), 4)
    x = 3 * mx.random.normal(shape, key=keys[0]) + 1  # an offset mean: the centring must be right
    d = shape[-1]
    w, b = 1 + mx.random.normal((d,), key=keys[1]), mx.random.normal((d,), key=keys[2])
    g = mx.random.normal(shape, key=keys[3])

    def ours(x, w, b):
        return ext.layer_norm(x, w, b, 1e-5)

    def theirs(x, w, b):
        return mx.fast.layer_norm(x, w, b, 1e-5)

    close(ours(x, w, b), theirs(x, w, b))
    grad = mx.grad(lambda *a: (ours(*a) * g).sum(), argnums=(0, 1, 2))
    ref = mx.grad(lambda *a: (theirs(*a) * g).sum(), argnums=(0, 1, 2))
    for got, want in zip(grad(x, w, b), ref(x, w, b), strict=True):
        close(got, want, atol=1e-4)
    # Compiled, and on a transposed (non-contiguous) input.
    xt, gt = x.swapaxes(0, -2), g.swapaxes(0, -2)
    grad_t = mx.compile(mx.grad(lambda *a: (ours(*a) * gt).sum(), argnums=(0, 1, 2)))
    ref_t = mx.grad(lambda *a: (theirs(*a) * gt).sum(), argnums=(0, 1, 2))
    for got, want in zip(grad_t(xt, w, b), ref_t(xt, w, b), strict=True):
        close(got, want, atol=1e-4)


def test_gelu_matches_nn_gelu_approx_and_its_gradient(ext):
    x = mx.concatenate([mx.linspace(-12, 12, 4001), 3 * mx.random.normal((5000,), key=mx.random.key(0))])
    close(ext.gelu(x), nn.gelu_approx(x), atol=2e-6)
    g = mx.random.normal(x.shape, key=mx.random.key(1))
    got = mx.grad(lambda v: (ext.gelu(v) * g).sum())(x)
    want = mx.grad(lambda v: (nn.gelu_approx(v) * g).sum())(x)
    close(got, want, atol=5e-5, rtol=1e-3)
    strided = x.reshape(9001, 1)[::2]
    close(mx.compile(ext.gelu)(strided), nn.gelu_approx(strided), atol=2e-6)


def test_bad_input_is_a_clear_error(ext):
    with pytest.raises(ValueError, match="weight and bias"):
        ext.layer_norm(mx.zeros((2, 4)), mx.ones((3,)), mx.zeros((3,)), 1e-5)
    with pytest.raises(ValueError, match="float32"):
        ext.gelu(mx.zeros((4,), dtype=mx.float16))


def test_cpu_model_uses_them_in_training_only_and_matches_without(ext, monkeypatch):
    mx.random.seed(0)
    model = TinyGPT(ModelConfig(d_model=32, n_layers=2, n_heads=4, max_seq_len=64, bias=False), 50)
    idx = mx.random.randint(0, 50, (2, 64), key=mx.random.key(1))
    plain = model(idx)
    calls = {"layer_norm": 0, "gelu": 0}
    for name in calls:
        original = getattr(ext, name)
        monkeypatch.setattr(ext, name, lambda *a, _f=original, _n=name: calls.__setitem__(_n, calls[_n] + 1) or _f(*a))
    use_cpu_modules(model)
    assert isinstance(model.ln_f, FusedLayerNorm) and isinstance(model.h[0].mlp, FusedMLP)
    model.eval()
    model(idx)
    assert calls == {"layer_norm": 0, "gelu": 0}
    model.train()
    fused = model(idx)
    assert calls == {"layer_norm": 2 * 2 + 1, "gelu": 2}  # ln_1, ln_2 per block + ln_f; one GELU per block
    close(fused, plain, atol=1e-4)
    # bfloat16 falls back to MLX's ops (the kernels are float32 only).
    x16 = mx.random.normal((2, 8)).astype(mx.bfloat16)
    stock = nn.LayerNorm(8)
    ours = use_cpu_modules(nn.LayerNorm(8))
    assert isinstance(ours, FusedLayerNorm) and ours(x16).dtype == stock(x16).dtype
    close(ours(x16), stock(x16), atol=0)
    mlp = model.h[0].mlp
    mlp.set_dtype(mx.bfloat16)
    assert mlp(mx.zeros((1, 2, 32), dtype=mx.bfloat16)).dtype == mx.bfloat16  # gelu.py's arithmetic GELU
    assert calls == {"layer_norm": 5, "gelu": 2}
