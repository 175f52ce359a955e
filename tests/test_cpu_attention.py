"""The CPU training attention: its arithmetic exp, and agreement with mx.fast's SDPA forward and backward."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from tinygpt_mlx import cpu_attention, kernels
from tinygpt_mlx.config import ModelConfig
from tinygpt_mlx.model import TinyGPT


def test_exp_matches_float64_within_the_documented_error():
    x = np.linspace(-80.0, 0.0, 400_001, dtype=np.float32)
    got = np.array(mx.compile(cpu_attention.exp_nonpositive)(mx.array(x)), dtype=np.float64)
    rel = np.abs(got - np.exp(x.astype(np.float64))) / np.exp(x.astype(np.float64))
    assert rel.max() < 5e-5  # the module docstring says "at most 3e-5"
    assert rel.mean() < 1e-5
    # Near 0, where softmax's large probabilities live, it is as good as float32 exp.
    near = np.abs(x) < 4
    assert rel[near].max() < 1e-5


def test_exp_clamps_far_below_zero_to_a_tiny_finite_value():
    got = cpu_attention.exp_nonpositive(mx.array([-1e9, -1e4, -88.0, 0.0]))
    values = got.tolist()
    assert all(np.isfinite(values))
    assert max(values[:3]) < 1e-30
    assert values[3] == pytest.approx(1.0, abs=1e-6)


def reference(q, k, v, scale):
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask="causal")


@pytest.mark.parametrize("t", [1, 7, 16, 64, 130])  # one key; odd; below MIN_SPLIT; split; split, not a power of 2
def test_forward_and_gradients_match_sdpa(t: int):
    keys = mx.random.split(mx.random.key(t), 4)
    q, k, v, g = (mx.random.normal((2, 3, t, 8), key=key) for key in keys)
    scale = 8**-0.5

    def grads(fn):
        return mx.grad(lambda q, k, v: (fn(q, k, v, scale) * g).sum(), argnums=(0, 1, 2))(q, k, v)

    out = cpu_attention.causal_attention(q, k, v, scale)
    np.testing.assert_allclose(np.array(out), np.array(reference(q, k, v, scale)), atol=2e-5, rtol=1e-4)
    for ours, theirs in zip(grads(cpu_attention.causal_attention), grads(reference), strict=True):
        np.testing.assert_allclose(np.array(ours), np.array(theirs), atol=5e-5, rtol=1e-3)


def test_bfloat16_inputs_keep_their_dtype():
    keys = mx.random.split(mx.random.key(0), 3)
    q, k, v = (mx.random.normal((1, 2, 96, 16), key=key).astype(mx.bfloat16) for key in keys)
    out = cpu_attention.causal_attention(q, k, v, 0.25)
    assert out.dtype == mx.bfloat16
    ref = reference(q.astype(mx.float32), k.astype(mx.float32), v.astype(mx.float32), 0.25)
    np.testing.assert_allclose(np.array(out.astype(mx.float32)), np.array(ref), atol=3e-2)
    dq = mx.grad(lambda q: cpu_attention.causal_attention(q, k, v, 0.25).astype(mx.float32).sum())(q)
    assert dq.dtype == mx.bfloat16


def test_model_uses_it_only_inside_enabled(monkeypatch: pytest.MonkeyPatch):
    # The fallback path: what runs where the C++ kernel (tests/kernels) is unavailable.
    monkeypatch.setattr(kernels, "self_attention", lambda *args: None)
    mx.random.seed(0)
    model = TinyGPT(ModelConfig(d_model=32, n_layers=2, n_heads=4, max_seq_len=128), 50)
    idx = mx.random.randint(0, 50, (2, 128), key=mx.random.key(1))
    calls = []
    original = cpu_attention.causal_attention

    def counting(*args):
        calls.append(1)
        return original(*args)

    cpu_attention.causal_attention = counting
    try:
        plain = model(idx)
        assert not calls and not cpu_attention.active()
        with cpu_attention.enabled():
            assert cpu_attention.active()
            fast = model(idx)
        assert len(calls) == 2  # one per layer
        # A KV cache (generation) always takes mx.fast's path, even inside enabled().
        with cpu_attention.enabled():
            model(idx[:, :8], model.make_cache())
        assert len(calls) == 2
    finally:
        cpu_attention.causal_attention = original
    np.testing.assert_allclose(np.array(fast), np.array(plain), atol=1e-4)
    assert not cpu_attention.active()
