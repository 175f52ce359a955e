"""LoRA on TinyGPT: zero-init is a no-op, fuse equals unfused, save/load round trip, remove restores the base."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from tinygpt_mlx.config import ModelConfig
from tinygpt_mlx.errors import UserError
from tinygpt_mlx.lora import (
    adapter_weights,
    apply_lora,
    fuse_lora,
    load_adapters,
    lora_layers,
    remove_lora,
    save_adapters,
)
from tinygpt_mlx.model import TinyGPT

VOCAB = 17


def tiny_model(seed: int = 0) -> TinyGPT:
    mx.random.seed(seed)
    model = TinyGPT(ModelConfig(d_model=32, n_layers=2, n_heads=2, max_seq_len=16), VOCAB)
    model.eval()
    return model


def tokens() -> mx.array:
    return mx.array(np.random.default_rng(0).integers(0, VOCAB, size=(2, 12)))


def randomise_b(model: TinyGPT) -> None:
    for _, layer in lora_layers(model):
        layer.lora_b = 0.05 * mx.random.normal(layer.lora_b.shape)


def test_zero_init_lora_leaves_outputs_unchanged():
    model = tiny_model()
    before = model(tokens())
    apply_lora(model, rank=4, alpha=8.0)
    assert len(lora_layers(model)) == 2 * 4  # c_attn, attn.c_proj, mlp.c_proj, c_fc in both blocks
    assert mx.array_equal(model(tokens()), before)


def test_only_adapters_train_and_last_k_limits_layers():
    model = apply_lora(tiny_model(), modules=["c_attn"], last_k_layers=1, rank=2)
    names = [k for k, _ in tree_flatten(model.trainable_parameters())]
    assert names == ["h.1.attn.c_attn.lora_a", "h.1.attn.c_attn.lora_b"]
    assert model.h[1].attn.c_attn.lora_a.shape == (32, 2)
    assert model.h[1].attn.c_attn.scale == pytest.approx(16.0 / 2)


def test_fused_forward_equals_unfused():
    model = apply_lora(tiny_model(), rank=4, alpha=8.0)
    randomise_b(model)
    unfused = model(tokens())
    fuse_lora(model)
    assert not lora_layers(model)
    assert all("lora" not in k for k, _ in tree_flatten(model.parameters()))
    assert np.allclose(np.array(model(tokens())), np.array(unfused), atol=1e-5)
    assert len(tree_flatten(model.trainable_parameters())) == len(tree_flatten(model.parameters()))


def test_remove_restores_the_exact_base():
    model = tiny_model()
    base = dict(tree_flatten(model.parameters()))
    before = model(tokens())
    apply_lora(model, rank=4)
    randomise_b(model)
    assert not mx.array_equal(model(tokens()), before)
    remove_lora(model)
    after = dict(tree_flatten(model.parameters()))
    assert after.keys() == base.keys() and all(mx.array_equal(after[k], base[k]) for k in base)
    assert mx.array_equal(model(tokens()), before)


def test_adapter_save_load_round_trip(tmp_path):
    model = apply_lora(tiny_model(), modules=["c_fc", "attn.c_proj"], last_k_layers=1, rank=3, alpha=6.0)
    randomise_b(model)
    expected = model(tokens())
    save_adapters(model, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapters.safetensors").is_file()
    fresh = tiny_model()  # same seed: same base weights
    load_adapters(fresh, tmp_path / "adapter")
    assert adapter_weights(fresh).keys() == adapter_weights(model).keys()
    assert mx.array_equal(fresh(tokens()), expected)
    assert fresh._lora_settings == model._lora_settings


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"rank": 0}, "LoRA rank must be a positive integer"),
     ({"rank": -2}, "LoRA rank must be a positive integer"),
     ({"modules": ["c_attn", "q_proj"]}, "unknown LoRA module(s) 'q_proj'"),
     ({"last_k_layers": 0}, "LoRA last_k_layers must be positive")],
)
def test_bad_settings_are_refused_clearly(kwargs, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        apply_lora(tiny_model(), **kwargs)


def test_double_apply_and_bad_folder_are_refused(tmp_path):
    model = apply_lora(tiny_model(), rank=2)
    with pytest.raises(UserError, match="already has LoRA layers"):
        apply_lora(model, rank=2)
    with pytest.raises(UserError, match="not an adapter folder"):
        load_adapters(tiny_model(), tmp_path)
