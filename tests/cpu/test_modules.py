"""cpu/modules.py: the CPU modules change no result of eval mode, fall back without the kernels, key dropout."""

from __future__ import annotations

import dataclasses

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from tinygpt_mlx.config import ModelConfig
from tinygpt_mlx.cpu import kernels
from tinygpt_mlx.cpu.modules import dropout_key, use_cpu_modules
from tinygpt_mlx.model import TinyGPT

CFG = ModelConfig(d_model=32, n_layers=2, n_heads=2, max_seq_len=32)


def pair(**kw) -> tuple[TinyGPT, TinyGPT]:
    """The same weights as a plain model and as a CPU one."""
    cfg = dataclasses.replace(CFG, **kw)
    mx.random.seed(0)
    plain = TinyGPT(cfg, 20)
    mx.random.seed(0)
    return plain, use_cpu_modules(TinyGPT(cfg, 20))


def test_eval_mode_is_the_plain_model_bit_for_bit_with_and_without_a_cache():
    plain, cpu = pair()
    plain.eval()
    cpu.eval()
    idx = mx.random.randint(0, 20, (2, 32), key=mx.random.key(1))
    assert mx.array_equal(cpu(idx), plain(idx)).item()
    caches = plain.make_cache(), cpu.make_cache()
    for t in (slice(0, 20), slice(20, 21), slice(21, 32)):
        assert mx.array_equal(cpu(idx[:, t], caches[1]), plain(idx[:, t], caches[0])).item()
    names = [name for name, _ in tree_flatten(cpu.parameters())]
    assert names == [name for name, _ in tree_flatten(plain.parameters())]


def test_training_without_the_kernels_falls_back_to_mlx_and_the_arithmetic_gelu(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(kernels, "usable", lambda *arrays: False)
    plain, cpu = pair()  # training mode, dropout 0: deterministic
    idx = mx.random.randint(0, 20, (2, 32), key=mx.random.key(1))
    np.testing.assert_allclose(np.array(cpu(idx)), np.array(plain(idx)), atol=1e-5)
    assert not mx.array_equal(cpu(idx), plain(idx)).item()  # the GELU is a different (arithmetic) one


def test_dropout_draws_from_an_explicit_key_when_given():
    _, model = pair(dropout=0.5)
    idx = mx.random.randint(0, 20, (2, 16), key=mx.random.key(3))
    with dropout_key(mx.random.key(1)):
        a = model(idx)
    with dropout_key(mx.random.key(1)):
        b = model(idx)
    with dropout_key(mx.random.key(2)):
        c = model(idx)
    assert mx.array_equal(a, b).item() and not mx.allclose(a, c).item()
    state = mx.random.state[0]
    without = model(idx)  # no key: nn.Dropout's own draw from the global generator
    assert not mx.array_equal(state, mx.random.state[0]).item() and not mx.allclose(without, a).item()
    model.eval()
    with dropout_key(mx.random.key(1)):
        assert mx.array_equal(model(idx), model(idx)).item()  # no dropout in eval mode
