"""TinyGPT: names, counts, init, causality, KV cache, dropout, length limit, mlx-lm parity, plain imports.

conftest.py imports tinygpt_mlx first, so the fast BLAS is loaded before mlx.core.
"""

from __future__ import annotations

import ast
import math
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten

from tinygpt_mlx import model as model_module
from tinygpt_mlx.config import ModelConfig
from tinygpt_mlx.model import TinyGPT, count_params_closed_form, flops_per_token

V = 50


def tiny_cfg(**kw) -> ModelConfig:
    base = dict(d_model=32, n_layers=2, n_heads=4, max_seq_len=16)
    base.update(kw)
    return ModelConfig(**base)


def build(seed: int = 0, **kw) -> TinyGPT:
    mx.random.seed(seed)
    model = TinyGPT(tiny_cfg(**kw), V)
    model.eval()
    return model


def tokens(shape: tuple[int, int], seed: int = 1) -> mx.array:
    return mx.random.randint(0, V, shape, key=mx.random.key(seed))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_output_shape(arch):
    assert build(arch=arch)(tokens((3, 7))).shape == (3, 7, V)


@pytest.mark.parametrize("tie", [True, False])
def test_parameter_names_are_gpt2(tie):
    names = {k for k, _ in tree_flatten(build(tie_embeddings=tie).parameters())}
    expected = {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"}
    for i in range(2):
        for sub in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"):
            expected |= {f"h.{i}.{sub}.weight", f"h.{i}.{sub}.bias"}
    if not tie:
        expected.add("lm_head.weight")  # no bias on the head
    assert names == expected


def test_no_bias_has_no_bias_parameters():
    names = [k for k, _ in tree_flatten(build(bias=False).parameters())]
    assert not [n for n in names if n.endswith("bias")]


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("d_ff", [None, 48])
def test_num_params_matches_closed_form(tie, bias, d_ff):
    model = build(tie_embeddings=tie, bias=bias, d_ff=d_ff)
    cfg = model.cfg
    for non_emb in (False, True):
        assert model.num_params(non_embedding=non_emb) == count_params_closed_form(cfg, V, non_emb)


def test_param_counts_by_hand():
    # d=32, hidden=128, bias: per layer ln 2*64 + attn (32*96+96)+(32*32+32) + mlp (32*128+128)+(128*32+32)
    per_layer = 128 + 3168 + 1056 + 4224 + 4128
    non_emb = 2 * per_layer + 64
    model = build()
    assert model.num_params(non_embedding=True) == non_emb
    assert model.num_params() == non_emb + V * 32 + 16 * 32
    untied = build(tie_embeddings=False)
    assert untied.num_params(non_embedding=True) == non_emb + V * 32  # lm_head counts as compute


def test_flops_per_token_kaplan():
    cfg = tiny_cfg()
    n = count_params_closed_form(cfg, V, non_embedding=True)
    assert flops_per_token(cfg, V, 16) == 6 * n + 6 * 2 * 16 * 32
    assert flops_per_token(cfg, V, 16, include_head=True) == 6 * n + 6 * 2 * 16 * 32 + 6 * 32 * V


def test_init_is_gpt2_and_deterministic():
    cfg = tiny_cfg(n_layers=8, d_model=64)
    mx.random.seed(3)
    a = TinyGPT(cfg, 500)
    mx.random.seed(3)
    b = TinyGPT(cfg, 500)
    for (name, x), (_, y) in zip(tree_flatten(a.parameters()), tree_flatten(b.parameters()), strict=True):
        assert mx.array_equal(x, y), name
    resid = 0.02 / math.sqrt(2 * 8)
    proj = mx.concatenate([a.h[i].mlp.c_proj.weight.flatten() for i in range(8)])
    assert abs(proj.std().item() - resid) < 0.05 * resid
    assert abs(a.h[0].attn.c_attn.weight.std().item() - 0.02) < 0.001
    assert abs(a.wte.weight.std().item() - 0.02) < 0.001
    assert mx.all(a.h[0].attn.c_attn.bias == 0).item()
    assert mx.all(a.ln_f.weight == 1).item()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_causality(arch):
    model = build(arch=arch)
    x = tokens((1, 12))
    base = model(x)
    for t in (0, 5, 11):
        changed = x.astype(mx.int32)
        changed[0, t] = (x[0, t].item() + 1) % V
        out = model(changed)
        assert mx.array_equal(out[:, :t], base[:, :t]).item()
        assert not mx.allclose(out[:, t:], base[:, t:]).item()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("tie", [True, False])
def test_kv_cache_matches_full_forward(tie, arch):
    model = build(tie_embeddings=tie, arch=arch)
    x = tokens((2, 14))
    full = model(x)
    # prefill 5 tokens, then one at a time
    cache = model.make_cache()
    steps = [model(x[:, :5], cache)] + [model(x[:, t : t + 1], cache) for t in range(5, 14)]
    assert mx.abs(mx.concatenate(steps, axis=1) - full).max().item() <= 1e-5
    # prefill in two multi-token chunks: the second chunk's causal mask must account for the offset
    cache = model.make_cache()
    chunks = mx.concatenate([model(x[:, :6], cache), model(x[:, 6:], cache)], axis=1)
    assert mx.abs(chunks - full).max().item() <= 1e-5
    assert cache[0].offset == 14


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_kv_cache_grows_past_one_step(arch):
    model = build(max_seq_len=40, arch=arch)
    cache = model.make_cache()
    for layer in cache:
        layer.step = 4  # force several re-allocations, one of them inside a multi-token chunk
    x = tokens((1, 40))
    full = model(x)
    parts = [model(x[:, :3], cache), model(x[:, 3:10], cache)]
    parts += [model(x[:, t : t + 1], cache) for t in range(10, 40)]
    assert mx.abs(mx.concatenate(parts, axis=1) - full).max().item() <= 1e-5


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_dropout_only_in_train_mode(arch):
    model = build(dropout=0.5, arch=arch)
    x = tokens((2, 8))
    assert mx.array_equal(model(x), model(x)).item()
    evaluated = model(x)
    model.train()
    trained = model(x)
    assert not mx.allclose(trained, evaluated).item()
    model.eval()
    assert mx.array_equal(model(x), evaluated).item()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_too_long_input_raises(arch):
    model = build(arch=arch)
    with pytest.raises(ValueError, match="max_seq_len"):
        model(tokens((1, 17)))
    cache = model.make_cache()
    model(tokens((1, 16)), cache)
    with pytest.raises(ValueError, match="max_seq_len"):
        model(tokens((1, 1)), cache)


def test_matches_mlx_lm_gpt2():
    """Our weights dumped into mlx-lm's gpt2 give the same logits (same GELU, eps, attention)."""
    gpt2 = pytest.importorskip("mlx_lm.models.gpt2")
    model = build()
    args = gpt2.ModelArgs(model_type="gpt2", n_ctx=16, n_embd=32, n_head=4, n_layer=2, n_positions=16,
                          layer_norm_epsilon=1e-5, vocab_size=V)
    ref = gpt2.Model(args)
    ref.load_weights([("model." + k, v) for k, v in tree_flatten(model.parameters())])
    x = tokens((2, 16))
    assert mx.abs(model(x) - ref(x)).max().item() <= 1e-5


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_dropout_module_count(arch):
    # embeddings, attention output and MLP output: 1 + 2 per layer
    drops = [m for _, m in build(dropout=0.1, arch=arch).named_modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 1 + 2 * 2


def test_model_py_is_the_model_alone():
    """model.py imports only mlx, the standard library and the config, and never asks which device runs it."""
    tree = ast.parse(Path(model_module.__file__).read_text())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
    assert imported, "no imports found: the check would pass vacuously"
    allowed = {"mlx", "tinygpt_mlx.config", "__future__"}
    strangers = [name for name in imported
                 if name not in allowed and name.split(".")[0] not in sys.stdlib_module_names | {"mlx"}]
    assert not strangers, f"model.py imports {strangers}"
    device_words = {"default_device", "DeviceType", "Device", "metal", "cuda", "cpu", "gpu", "on_accelerator"}
    names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    names |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert not names & device_words, f"model.py tests the device: {sorted(names & device_words)}"
