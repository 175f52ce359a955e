"""TinyGPT in PyTorch: the same blocks, parameter names and [out, in] Linear layout as tinygpt_mlx.model.

`state_dict()` keys equal MLX's flattened parameter names (`wte.weight`, `h.0.attn.c_attn.weight`, ...,
`ln_f.bias`; `lm_head.weight` only when untied), so a checkpoint's model.safetensors loads into either
framework without renaming or transposing. Fresh weights are drawn by the MLX model from the same seed
(`from_mlx_init`), so a torch run and an MLX run of one config start from identical weights.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tinygpt_mlx.config import ModelConfig


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with a fused QKV projection, as in GPT-2."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.c_attn = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (a.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for a in (q, k, v))
        # No dropout on the attention probabilities: the MLX model has none either.
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, C)))


class MLP(nn.Module):
    """Linear, GELU (tanh approximation, GPT-2's `gelu_new`), Linear."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.d_model, cfg.hidden_dim, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.hidden_dim, cfg.d_model, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    """Pre-LayerNorm block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TorchTinyGPT(nn.Module):
    """GPT-2 decoder: token + position embeddings, n_layers blocks, final LayerNorm, (tied) LM head."""

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.wte = nn.Embedding(vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias)
        if not cfg.tie_embeddings:
            self.lm_head = nn.Linear(cfg.d_model, vocab_size, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, vocab] for token ids [B, T]."""
        T = idx.shape[1]
        if T > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {T} tokens exceeds the model's max_seq_len ({self.cfg.max_seq_len})")
        x = self.drop(self.wte(idx) + self.wpe(torch.arange(T, device=idx.device)))
        for block in self.h:
            x = block(x)
        x = self.ln_f(x)
        # Tying reuses wte.weight ([vocab, d], already [out, in]); there is no lm_head key, as in MLX.
        return F.linear(x, self.wte.weight) if self.cfg.tie_embeddings else self.lm_head(x)

    def num_params(self) -> int:
        """Parameter count (equals TinyGPT.num_params)."""
        return sum(p.numel() for p in self.parameters())


def to_torch(arrays: dict, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Flat name -> MLX array (or numpy) dict as float32/int torch tensors on device."""
    return {k: torch.from_numpy(np.array(v, copy=True)).to(device) for k, v in arrays.items()}


def to_mlx(tensors: dict[str, torch.Tensor]) -> dict:
    """Flat name -> torch tensor dict as MLX arrays (float32 master weights stay float32)."""
    import mlx.core as mx

    return {k: mx.array(t.detach().to("cpu").numpy()) for k, t in tensors.items()}


def load_mlx_weights(model: TorchTinyGPT, weights: dict) -> None:
    """Copy a checkpoint's model.safetensors arrays (MLX names) into model, strictly."""
    device = next(model.parameters()).device
    missing, unexpected = model.load_state_dict(to_torch(weights, device), strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint weights do not fit the model: missing {missing}, unexpected {unexpected}")


def from_mlx_init(cfg: ModelConfig, vocab_size: int) -> TorchTinyGPT:
    """A TorchTinyGPT holding exactly the weights TinyGPT(cfg, vocab_size) draws from mlx's generator now."""
    from mlx.utils import tree_flatten

    from tinygpt_mlx.model import TinyGPT

    model = TorchTinyGPT(cfg, vocab_size)
    load_mlx_weights(model, dict(tree_flatten(TinyGPT(cfg, vocab_size).parameters())))
    return model
