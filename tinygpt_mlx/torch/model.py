"""TinyGPT in PyTorch: the same blocks, parameter names and [out, in] Linear layout as tinygpt_mlx.model.

`state_dict()` keys equal MLX's flattened parameter names (GPT-2: `wte.weight`, `h.0.attn.c_attn.weight`,
..., `ln_f.bias`; llama: `embed_tokens.weight`, `layers.0.self_attn.q_proj.weight`, ..., `norm.weight`;
`lm_head.weight` only when untied), so a checkpoint's model.safetensors loads into either framework
without renaming or transposing. Fresh weights are drawn by the MLX model from the same seed
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


def rotate(x: torch.Tensor, theta: float) -> torch.Tensor:
    """RoPE on [B, H, T, D] in the non-interleaved layout (halves rotated together), as mx.fast.rope."""
    T, D = x.shape[-2:]
    inv_freq = theta ** (-torch.arange(0, D, 2, dtype=torch.float32, device=x.device) / D)
    angles = torch.outer(torch.arange(T, dtype=torch.float32, device=x.device), inv_freq)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., : D // 2], x[..., D // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class LlamaAttention(nn.Module):
    """Causal self-attention with rotary positions and n_kv_heads key/value heads (grouped-query)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads = cfg.n_heads, cfg.n_kv_heads or cfg.n_heads
        self.theta = cfg.rope_theta
        head_dim = cfg.d_model // cfg.n_heads
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, self.n_kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, self.n_kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * head_dim, cfg.d_model, bias=False)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, -1).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, -1).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, -1).transpose(1, 2)
        q, k = rotate(q, self.theta), rotate(k, self.theta)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.n_kv_heads != self.n_heads)
        return self.resid_dropout(self.o_proj(y.transpose(1, 2).reshape(B, T, -1)))


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)), without biases."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.hidden_dim, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.hidden_dim, bias=False)
        self.down_proj = nn.Linear(cfg.hidden_dim, cfg.d_model, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x)))


class LlamaBlock(nn.Module):
    """Pre-RMSNorm block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = nn.RMSNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.self_attn = LlamaAttention(cfg)
        self.post_attention_layernorm = nn.RMSNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class TorchTinyGPT(nn.Module):
    """The decoder cfg.arch names: GPT-2 (token + position embeddings, LayerNorm) or llama (RoPE, RMSNorm)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        if cfg.arch == "llama":
            self.embed_tokens = nn.Embedding(vocab_size, cfg.d_model)
            self.layers = nn.ModuleList(LlamaBlock(cfg) for _ in range(cfg.n_layers))
            self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        else:
            self.wte = nn.Embedding(vocab_size, cfg.d_model)
            self.wpe = nn.Embedding(cfg.max_seq_len, cfg.d_model)
            self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
            self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)
        if not cfg.tie_embeddings:
            self.lm_head = nn.Linear(cfg.d_model, vocab_size, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, vocab] for token ids [B, T]."""
        T = idx.shape[1]
        if T > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {T} tokens exceeds the model's max_seq_len ({self.cfg.max_seq_len})")
        if self.cfg.arch == "llama":  # positions enter through RoPE inside attention
            embed, blocks, norm = self.embed_tokens, self.layers, self.norm
            x = embed(idx)
        else:
            embed, blocks, norm = self.wte, self.h, self.ln_f
            x = embed(idx) + self.wpe(torch.arange(T, device=idx.device))
        x = self.drop(x)
        for block in blocks:
            x = block(x)
        x = norm(x)
        # Tying reuses the embedding ([vocab, d], already [out, in]); there is no lm_head key, as in MLX.
        return F.linear(x, embed.weight) if self.cfg.tie_embeddings else self.lm_head(x)

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
