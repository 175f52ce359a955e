"""TinyGPT with model.arch llama: mlx-lm's names, counts, init, RoPE offsets, GQA, the head, LoRA, training.

tests/test_model.py runs its shape, causality, KV cache, dropout and length tests on both architectures.
"""

from __future__ import annotations

import math
import shutil

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from tinygpt_mlx.config import ConfigError, ModelConfig, from_dict
from tinygpt_mlx.lora import adapter_weights, apply_lora, fuse_lora, load_adapters, lora_layers, save_adapters
from tinygpt_mlx.model import TinyGPT, count_params_closed_form, flops_per_token
from tinygpt_mlx.train import checkpoint as ck
from tinygpt_mlx.train import trainer

V = 50


def llama_cfg(**kw) -> ModelConfig:
    return ModelConfig(**{"arch": "llama", "d_model": 32, "n_layers": 2, "n_heads": 4, "max_seq_len": 32, **kw})


def build(seed: int = 0, **kw) -> TinyGPT:
    mx.random.seed(seed)
    model = TinyGPT(llama_cfg(**kw), V)
    model.eval()
    return model


def tokens(shape: tuple[int, int], seed: int = 1) -> mx.array:
    return mx.random.randint(0, V, shape, key=mx.random.key(seed))


@pytest.mark.parametrize("tie", [True, False])
def test_parameter_names_are_mlx_lm_llama_names(tie):
    model = build(tie_embeddings=tie, n_kv_heads=2)
    shapes = {k: v.shape for k, v in tree_flatten(model.parameters())}
    expected = {"embed_tokens.weight": (V, 32), "norm.weight": (32,)}
    for i in range(2):
        expected |= {f"layers.{i}.input_layernorm.weight": (32,), f"layers.{i}.post_attention_layernorm.weight": (32,),
                     f"layers.{i}.self_attn.q_proj.weight": (32, 32), f"layers.{i}.self_attn.k_proj.weight": (16, 32),
                     f"layers.{i}.self_attn.v_proj.weight": (16, 32), f"layers.{i}.self_attn.o_proj.weight": (32, 32),
                     f"layers.{i}.mlp.gate_proj.weight": (128, 32), f"layers.{i}.mlp.up_proj.weight": (128, 32),
                     f"layers.{i}.mlp.down_proj.weight": (32, 128)}
    if not tie:
        expected["lm_head.weight"] = (V, 32)
    assert shapes == expected  # no biases anywhere, whatever model.bias says
    assert model(tokens((3, 7))).shape == (3, 7, V)


def test_param_counts_by_hand_and_closed_form():
    # d 32, 4 heads of 8, 2 kv heads: q 32*32 + k, v 32*16 each + o 32*32; SwiGLU 3 * 32*128; two RMSNorms
    per_layer = (1024 + 512 + 512 + 1024) + 3 * 4096 + 2 * 32
    model = build(n_kv_heads=2)
    assert model.num_params(non_embedding=True) == 2 * per_layer + 32
    assert model.num_params() == 2 * per_layer + 32 + V * 32  # no position table
    for kw in ({}, {"tie_embeddings": False}, {"n_kv_heads": 1, "d_ff": 40}):
        model = build(**kw)
        for non_emb in (False, True):
            assert model.num_params(non_embedding=non_emb) == count_params_closed_form(model.cfg, V, non_emb)
    cfg = llama_cfg(n_kv_heads=2)
    n = count_params_closed_form(cfg, V, non_embedding=True)
    assert flops_per_token(cfg, V, 16, include_head=True) == 6 * n + 6 * 2 * 16 * 32 + 6 * 32 * V


def test_init_is_scaled_like_gpt2_and_deterministic():
    cfg = llama_cfg(n_layers=8, d_model=64)
    mx.random.seed(3)
    a = TinyGPT(cfg, 500)
    mx.random.seed(3)
    b = TinyGPT(cfg, 500)
    assert all(mx.array_equal(x, y).item() for (_, x), (_, y) in
               zip(tree_flatten(a.parameters()), tree_flatten(b.parameters()), strict=True))
    resid = 0.02 / math.sqrt(2 * 8)
    for name in ("self_attn.o_proj", "mlp.down_proj"):
        w = mx.concatenate([a.layers[i][name.split(".")[0]][name.split(".")[1]].weight.flatten() for i in range(8)])
        assert abs(w.std().item() - resid) < 0.05 * resid, name
    assert abs(a.layers[0].self_attn.q_proj.weight.std().item() - 0.02) < 0.001
    assert abs(a.embed_tokens.weight.std().item() - 0.02) < 0.001
    assert mx.all(a.norm.weight == 1).item() and mx.all(a.layers[3].input_layernorm.weight == 1).item()


@pytest.mark.parametrize("n_kv_heads", [None, 2, 1])
@pytest.mark.parametrize("prompt", [1, 5, 12])
def test_kv_cache_decode_equals_full_forward(n_kv_heads, prompt):
    """Prefill, one-token steps and a multi-token chunk: RoPE positions continue after the cache's contents."""
    model = build(n_kv_heads=n_kv_heads)
    x = tokens((2, 20))
    full = model(x)
    cache = model.make_cache()
    parts = [model(x[:, :prompt], cache)] + [model(x[:, t : t + 1], cache) for t in range(prompt, 15)]
    parts.append(model(x[:, 15:], cache))
    assert cache[0].offset == 20
    assert mx.abs(mx.concatenate(parts, axis=1) - full).max().item() <= 1e-5


def test_rope_makes_the_order_of_the_context_matter():
    """Causal attention without positions sees its context as a set: [a, b, c] and [b, a, c] would agree at c."""
    model = build()
    first, second = model(mx.array([[3, 7, 9]]))[0, -1], model(mx.array([[7, 3, 9]]))[0, -1]
    assert mx.abs(first - second).max().item() > 1e-3


def test_gqa_equals_mha_with_repeated_key_value_weights():
    gqa = build(seed=4, n_kv_heads=2)
    mha = build(seed=5)
    weights = dict(tree_flatten(gqa.parameters()))
    for name, w in list(weights.items()):
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            # kv head j serves query heads 2j and 2j+1: repeat its 8 rows once per query head.
            weights[name] = mx.repeat(w.reshape(2, 8, 32), 2, axis=0).reshape(32, 32)
    mha.load_weights(list(weights.items()), strict=True)
    x = tokens((2, 16))
    assert mx.abs(gqa(x) - mha(x)).max().item() <= 1e-5
    cache = gqa.make_cache()
    assert cache[0].offset == 0
    decoded = mx.concatenate([gqa(x[:, :9], cache), gqa(x[:, 9:], cache)], axis=1)
    assert cache[0].keys.shape[1] == 2  # the cache holds the 2 shared heads, not 4
    assert mx.abs(decoded - mha(x)).max().item() <= 1e-5


def test_untied_head_equal_to_the_embedding_gives_the_tied_logits():
    tied, untied = build(seed=2), build(seed=2, tie_embeddings=False)
    weights = dict(tree_flatten(tied.parameters()))
    untied.load_weights([*weights.items(), ("lm_head.weight", weights["embed_tokens.weight"])], strict=True)
    x = tokens((1, 10))
    assert mx.array_equal(tied(x), untied(x)).item()
    untied.lm_head.weight = untied.lm_head.weight * 2
    assert not mx.allclose(tied(x), untied(x)).item()


def test_config_keys_of_one_arch_are_refused_for_the_other():
    assert from_dict({"model": {"d_model": 32}}).model.arch == "gpt2"  # configs without arch are GPT-2
    with pytest.raises(ConfigError) as err:
        from_dict({"model": {"n_kv_heads": 2}})
    assert "model.n_kv_heads is for model.arch llama" in str(err.value)
    with pytest.raises(ConfigError) as err:
        from_dict({"model": {"arch": "llama", "n_heads": 4, "n_kv_heads": 3, "d_model": 36}})
    assert "divide model.n_heads (4)" in str(err.value) and "even head size for RoPE" in str(err.value)
    with pytest.raises(ConfigError, match="did you mean 'llama'"):
        from_dict({"model": {"arch": "lama"}})


def test_lora_targets_llama_layers_and_fuses(tmp_path):
    model = apply_lora(build(), rank=4, alpha=8.0)  # GPT-2's module names pick the same roles
    names = sorted(name for name, _ in lora_layers(model) if name.startswith("layers.1."))
    assert names == [f"layers.1.{p}" for p in ("mlp.down_proj", "mlp.gate_proj", "mlp.up_proj", "self_attn.k_proj",
                                                "self_attn.o_proj", "self_attn.q_proj", "self_attn.v_proj")]
    x = tokens((2, 12))
    for _, layer in lora_layers(model):
        layer.lora_b = 0.05 * mx.random.normal(layer.lora_b.shape)
    unfused = model(x)
    fuse_lora(model)
    assert not lora_layers(model) and np.allclose(np.array(model(x)), np.array(unfused), atol=1e-5)

    picked = apply_lora(build(), modules=["q_proj", "v_proj"], last_k_layers=1, rank=2)
    assert sorted(adapter_weights(picked)) == [f"layers.1.self_attn.{p}_proj.lora_{m}" for p in "qv" for m in "ab"]
    save_adapters(picked, tmp_path / "adapter")
    assert sorted(adapter_weights(load_adapters(build(), tmp_path / "adapter"))) == sorted(adapter_weights(picked))


def test_cpu_seam_swaps_only_dropout_in_a_llama():
    """cpu.accelerate's module swap knows GPT-2's modules; a llama keeps its own, with keyed dropout for lanes."""
    from tinygpt_mlx.cpu.modules import KeyedDropout, use_cpu_modules

    model = build()
    before = {name: type(m) for name, m in model.named_modules()}
    use_cpu_modules(model)
    after = {name: type(m) for name, m in model.named_modules()}
    changed = {name for name in before if before[name] is not after[name]}
    assert changed == {name for name, cls in before.items() if cls is nn.Dropout}
    assert changed and all(after[name] is KeyedDropout for name in changed)


@pytest.mark.parametrize("cpu_threads", [1, 2], ids=["one-lane", "two-lanes"])
def test_training_resumes_bitwise(make_config, tmp_path, cpu_threads):
    """20 steps straight equal 10 steps, a checkpoint, and a resumed 10 (dropout on), with and without lanes."""
    sections = {"model": {"arch": "llama", "n_kv_heads": 1, "dropout": 0.1},
                "schedule": {"max_steps": 20, "warmup_steps": 2}, "checkpoint": {"save_every": 10},
                "runtime": {"cpu_threads": cpu_threads}}
    straight = trainer.train(make_config(tmp_path / "a", **sections), live=False)
    run_a, run_b = tmp_path / "a" / "run", tmp_path / "b" / "run"
    shutil.copytree(run_a, run_b, symlinks=True)
    (run_b / ck.step_dir_name(20) / "state.json").write_text("{}")  # auto-resume falls back to step 10
    resumed = trainer.train(make_config(tmp_path / "b", **sections), resume="auto", live=False)
    assert sorted(resumed.losses) == list(range(11, 21))
    assert {k: straight.losses[k] for k in resumed.losses} == resumed.losses
    assert straight.losses[20] < straight.losses[1]  # it learns
    a, b = ck.load_checkpoint(run_a), ck.load_checkpoint(run_b)
    assert a.cfg.model.arch == "llama" and "layers.0.self_attn.k_proj.weight" in a.weights
    assert a.weights.keys() == b.weights.keys() and a.optimizer_state.keys() == b.optimizer_state.keys()
    assert all(mx.array_equal(a.weights[k], b.weights[k]).item() for k in a.weights)
    assert all(mx.array_equal(a.optimizer_state[k], b.optimizer_state[k]).item() for k in a.optimizer_state)
