"""The C++ causal self-attention kernel against mx.fast's SDPA: values, gradients, layouts, compile, threads."""

from __future__ import annotations

import threading

import mlx.core as mx
import numpy as np
import pytest

from tinygpt_mlx.config import ModelConfig
from tinygpt_mlx.cpu import kernels
from tinygpt_mlx.cpu.modules import use_cpu_modules
from tinygpt_mlx.model import TinyGPT


def reference(qkv: mx.array, heads: int, scale: float) -> mx.array:
    b, t, c3 = qkv.shape
    q, k, v = (a.reshape(b, t, heads, -1).transpose(0, 2, 1, 3) for a in mx.split(qkv, 3, axis=-1))
    y = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask="causal")
    return y.transpose(0, 2, 1, 3).reshape(b, t, c3 // 3)


def grads(fn, qkv: mx.array, weights: mx.array) -> mx.array:
    return mx.grad(lambda x: (fn(x) * weights).sum())(qkv)


# One query; odd; exactly one 64-row block; blocks with a ragged last one; several full blocks.
@pytest.mark.parametrize("t", [1, 7, 64, 100, 192])
def test_forward_and_gradient_match_sdpa(ext, t: int):
    heads, dim = 3, 16
    key_x, key_w = mx.random.split(mx.random.key(t))
    qkv = 2 * mx.random.normal((2, t, 3 * heads * dim), key=key_x)
    weights = mx.random.normal((2, t, heads * dim), key=key_w)
    scale = dim**-0.5

    def ours(x):
        return ext.causal_self_attention(x, heads, scale)

    def theirs(x):
        return reference(x, heads, scale)

    np.testing.assert_allclose(np.array(ours(qkv)), np.array(theirs(qkv)), atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(np.array(grads(ours, qkv, weights)), np.array(grads(theirs, qkv, weights)),
                               atol=5e-5, rtol=1e-3)


def test_large_scores_stay_finite_and_exact(ext):
    # Scores in the hundreds: the softmax must subtract the row max, and masked keys must not leak.
    qkv = 30 * mx.random.normal((1, 80, 3 * 2 * 8), key=mx.random.key(3))
    out = ext.causal_self_attention(qkv, 2, 8**-0.5)
    assert np.isfinite(np.array(out)).all()
    np.testing.assert_allclose(np.array(out), np.array(reference(qkv, 2, 8**-0.5)), atol=1e-4, rtol=1e-4)
    # The first query sees only itself: its output is its own value vector.
    np.testing.assert_allclose(np.array(out[0, 0]), np.array(qkv[0, 0, 32:]), atol=1e-6)


def test_non_contiguous_input_compiled_and_uncompiled_agree(ext):
    base = mx.random.normal((96, 2, 3 * 4 * 8), key=mx.random.key(4))
    qkv = base.transpose(1, 0, 2)  # a strided view: the op makes it row-contiguous first
    weights = mx.random.normal((2, 96, 32), key=mx.random.key(5))

    def loss(x):
        return (ext.causal_self_attention(x, 4, 0.3) * weights).sum()

    eager = mx.value_and_grad(loss)(qkv)
    compiled = mx.compile(mx.value_and_grad(loss))(qkv)
    reference_grad = grads(lambda x: reference(x, 4, 0.3), qkv, weights)
    np.testing.assert_allclose(np.array(eager[1]), np.array(reference_grad), atol=5e-5, rtol=1e-3)
    np.testing.assert_allclose(np.array(compiled[1]), np.array(eager[1]), atol=1e-6)
    assert compiled[0].item() == pytest.approx(eager[0].item(), rel=1e-6)


def test_runs_on_the_streams_of_concurrent_threads(ext):
    # Training lanes evaluate the step on their own streams from their own threads.
    qkvs = [mx.random.normal((2, 70, 48), key=mx.random.key(i)) for i in range(4)]
    expected = [np.array(reference(x, 2, 0.25)) for x in qkvs]
    results: dict[int, np.ndarray] = {}

    def lane(i: int) -> None:
        with mx.stream(mx.new_stream(mx.cpu)):
            out = ext.causal_self_attention(qkvs[i], 2, 0.25)
            mx.eval(out)
            results[i] = np.array(out)

    threads = [threading.Thread(target=lane, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(4):
        np.testing.assert_allclose(results[i], expected[i], atol=2e-5, rtol=1e-4)


def test_bad_input_is_a_clear_error(ext):
    with pytest.raises(ValueError, match="3 \\* heads"):
        ext.causal_self_attention(mx.zeros((1, 4, 10)), 2, 1.0)
    with pytest.raises(ValueError, match="float32"):
        ext.causal_self_attention(mx.zeros((1, 4, 12), dtype=mx.bfloat16), 2, 1.0)
    with pytest.raises(ValueError, match="positive"):
        ext.causal_self_attention(mx.zeros((1, 4, 12)), 2, 0.0)


def test_cpu_model_takes_the_fused_path_in_training_and_falls_back_for_bfloat16(ext, monkeypatch):
    mx.random.seed(0)
    model = TinyGPT(ModelConfig(d_model=32, n_layers=2, n_heads=4, max_seq_len=128), 50)
    idx = mx.random.randint(0, 50, (2, 100), key=mx.random.key(1))
    plain = model(idx)  # training mode (dropout 0), before the CPU modules
    calls = []
    original = ext.causal_self_attention
    monkeypatch.setattr(ext, "causal_self_attention", lambda *a: calls.append(1) or original(*a))
    use_cpu_modules(model)
    fused = model(idx)
    assert len(calls) == 2  # one per layer
    np.testing.assert_allclose(np.array(fused), np.array(plain), atol=1e-4)
    model.eval()
    assert mx.array_equal(model(idx), plain).item() and len(calls) == 2  # eval mode: the model's own code
    model.train()
    model(idx[:, :8], model.make_cache())  # a KV cache (generation) never takes the kernel
    model.set_dtype(mx.bfloat16)
    model(idx)  # bfloat16: mx.fast's attention
    assert len(calls) == 2
    assert not kernels.usable(mx.zeros((1, 4, 12), dtype=mx.bfloat16))
