"""MLX <-> torch logits parity, GPT-2 and llama: the same checkpoint gives the same logits in both (<= 1e-4)."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from tinygpt_mlx.config import ModelConfig
from tinygpt_mlx.model import TinyGPT
from tinygpt_mlx.train import checkpoint as ck
from tinygpt_mlx.train import trainer

torch = pytest.importorskip("torch")
from tinygpt_mlx.torch.model import TorchTinyGPT, from_mlx_init, load_mlx_weights, rotate  # noqa: E402


def logits_both(mlx_model: TinyGPT, torch_model: TorchTinyGPT, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mlx_model.eval()
    torch_model.eval()
    with torch.no_grad():
        return np.array(mlx_model(mx.array(ids))), torch_model(torch.from_numpy(ids).long()).numpy()


def test_checkpoint_logits_match(make_cfg, tmp_path: Path) -> None:
    """A trained MLX checkpoint loads into torch by name, no transposes, and gives the same logits."""
    cfg = make_cfg(tmp_path, schedule={"max_steps": 3, "warmup_steps": 1}, eval={"sample_n": 0})
    trainer.train(cfg, live=False)
    model, _, saved_cfg, _ = ck.load_for_inference(cfg.checkpoint.save_dir)
    ckpt = ck.load_checkpoint(cfg.checkpoint.save_dir)
    twin = TorchTinyGPT(saved_cfg.model, ckpt.vocab_size)
    assert sorted(twin.state_dict()) == sorted(ckpt.weights)
    load_mlx_weights(twin, ckpt.weights)
    ids = np.random.default_rng(0).integers(0, ckpt.vocab_size, size=(3, 32))
    a, b = logits_both(model, twin, ids)
    assert a.shape == b.shape == (3, 32, ckpt.vocab_size)
    assert np.abs(a).max() > 0.1  # real logits, not a degenerate zero model
    assert np.abs(a - b).max() <= 1e-4


@pytest.mark.parametrize("options", [
    {"tie_embeddings": False, "bias": False},
    {"d_ff": 40, "layer_norm_eps": 1e-6, "n_heads": 4},
])
def test_architecture_options_match(options: dict) -> None:
    cfg = ModelConfig(**{"d_model": 32, "n_layers": 2, "n_heads": 2, "max_seq_len": 16, **options})
    mx.random.seed(3)
    twin = from_mlx_init(cfg, 50)
    mx.random.seed(3)
    model = TinyGPT(cfg, 50)
    names = [k for k, _ in tree_flatten(model.parameters())]
    assert sorted(twin.state_dict()) == sorted(names)
    assert ("lm_head.weight" in names) == (not cfg.tie_embeddings)
    a, b = logits_both(model, twin, np.random.default_rng(1).integers(0, 50, size=(2, 16)))
    assert np.abs(a - b).max() <= 1e-4


def test_torch_checkpoint_loads_in_mlx(make_cfg, tmp_path: Path) -> None:
    """The other way round: a checkpoint written by the torch trainer is an ordinary MLX checkpoint."""
    cfg = make_cfg(tmp_path, "torch", schedule={"max_steps": 3, "warmup_steps": 1}, eval={"sample_n": 0})
    trainer.train(cfg, live=False)
    run = Path(cfg.checkpoint.save_dir)
    ck.verify_checkpoint(run / "last")
    model, _, _, state = ck.load_for_inference(run)
    ckpt = ck.load_checkpoint(run)
    twin = TorchTinyGPT(ckpt.cfg.model, ckpt.vocab_size)
    load_mlx_weights(twin, ckpt.weights)
    a, b = logits_both(model, twin, np.random.default_rng(2).integers(0, ckpt.vocab_size, size=(2, 32)))
    assert state["step"] == 3 and np.abs(a - b).max() <= 1e-4


def test_rotate_is_mx_fast_rope() -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 8)).astype(np.float32)
    ours = rotate(torch.from_numpy(x), 500.0).numpy()
    theirs = mx.fast.rope(mx.array(x), 8, traditional=False, base=500.0, scale=1.0, offset=0)
    assert np.abs(ours - np.array(theirs)).max() <= 1e-5


@pytest.mark.parametrize("options", [
    {},
    {"n_kv_heads": 1, "tie_embeddings": False},
    {"n_heads": 4, "n_kv_heads": 2, "d_ff": 40, "layer_norm_eps": 1e-6, "rope_theta": 500.0},
], ids=["llama", "gqa-untied", "options"])
def test_llama_options_match(options: dict) -> None:
    cfg = ModelConfig(**{"arch": "llama", "d_model": 32, "n_layers": 2, "n_heads": 2, "max_seq_len": 16, **options})
    mx.random.seed(3)
    twin = from_mlx_init(cfg, 50)
    mx.random.seed(3)
    model = TinyGPT(cfg, 50)
    assert sorted(twin.state_dict()) == sorted(k for k, _ in tree_flatten(model.parameters()))
    assert twin.num_params() == model.num_params()
    # Wider than the init, so the comparison is not between two nearly flat outputs.
    weights = {k: 0.3 * mx.random.normal(v.shape) + (1.0 if "norm" in k else 0.0)
               for k, v in tree_flatten(model.parameters())}
    model.load_weights(list(weights.items()), strict=True)
    load_mlx_weights(twin, weights)
    a, b = logits_both(model, twin, np.random.default_rng(1).integers(0, 50, size=(2, 16)))
    assert np.abs(a).max() > 1.0 and np.abs(a - b).max() <= 1e-4


def test_torch_trained_llama_loads_in_mlx(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "torch", model={"arch": "llama", "n_kv_heads": 1},
                   schedule={"max_steps": 3, "warmup_steps": 1}, eval={"sample_n": 0})
    result = trainer.train(cfg, live=False)
    assert result.step == 3
    model, _, saved_cfg, _ = ck.load_for_inference(cfg.checkpoint.save_dir)
    ckpt = ck.load_checkpoint(cfg.checkpoint.save_dir)
    assert saved_cfg.model.arch == "llama"
    twin = TorchTinyGPT(saved_cfg.model, ckpt.vocab_size)
    load_mlx_weights(twin, ckpt.weights)
    a, b = logits_both(model, twin, np.random.default_rng(2).integers(0, ckpt.vocab_size, size=(2, 32)))
    assert np.abs(a - b).max() <= 1e-4
