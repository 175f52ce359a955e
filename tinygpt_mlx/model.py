"""TinyGPT: a GPT-2 or llama-style decoder (`model.arch`) in mlx.nn, with a KV cache.

Read top to bottom: KVCache; GPT-2's attention, MLP and block; llama's; the model; parameter and FLOP
counts. Parameter names are exactly GPT-2's (`wte`, `wpe`, `h.N.attn.c_attn`, ..., `ln_f`) or mlx-lm's
llama names (`embed_tokens`, `layers.N.self_attn.q_proj`, ..., `norm`), so that export to mlx-lm's `gpt2`
or `llama` model is a dump of `tree_flatten(model.parameters())` under its `model.` prefix.
The same code runs on every backend; where another implementation of a module is faster on one of them,
it replaces the module from outside (MLX's CPU backend: `tinygpt_mlx.cpu.accelerate`).
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from tinygpt_mlx.config import ModelConfig

INIT_STD = 0.02  # GPT-2's initializer_range


class KVCache:
    """Keys and values of one layer, preallocated in steps so decoding does not copy every token."""

    step = 256

    def __init__(self) -> None:
        self.keys: mx.array | None = None
        self.values: mx.array | None = None
        self.offset = 0  # number of positions already stored

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        """Append [B, H, T, D] keys/values and return everything stored so far."""
        prev, new = self.offset, keys.shape[2]
        if self.keys is None or prev + new > self.keys.shape[2]:
            # Grow by whole steps: one concatenate per `step` tokens instead of one per token.
            n_steps = (new + self.step - 1) // self.step
            shape = (*keys.shape[:2], n_steps * self.step, keys.shape[3])
            grow_k, grow_v = mx.zeros(shape, keys.dtype), mx.zeros(shape, values.dtype)
            if self.keys is None:
                self.keys, self.values = grow_k, grow_v
            else:
                self.keys = mx.concatenate([self.keys[..., :prev, :], grow_k], axis=2)
                self.values = mx.concatenate([self.values[..., :prev, :], grow_v], axis=2)
        self.offset += new
        self.keys[..., prev : self.offset, :] = keys
        self.values[..., prev : self.offset, :] = values
        return self.keys[..., : self.offset, :], self.values[..., : self.offset, :]


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with a fused QKV projection, as in GPT-2."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.scale = (cfg.d_model // cfg.n_heads) ** -0.5
        self.c_attn = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def __call__(self, x: mx.array, cache: KVCache | None = None) -> mx.array:
        B, T, C = x.shape
        q, k, v = mx.split(self.c_attn(x), 3, axis=-1)
        # [B, T, C] -> [B, H, T, D]
        q, k, v = (a.reshape(B, T, self.n_heads, -1).transpose(0, 2, 1, 3) for a in (q, k, v))
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        # MLX's "causal" mask is aligned to the bottom right: with a cache holding S past positions
        # and T new queries, query t sees keys 0..S+t, which is exactly right for a chunked prefill
        # (tests/test_model.py checks this). A single new token needs no mask at all.
        mask = "causal" if T > 1 else None
        y = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        y = y.transpose(0, 2, 1, 3).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward: Linear, GELU (tanh approximation), Linear."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.d_model, cfg.hidden_dim, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.hidden_dim, cfg.d_model, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def __call__(self, x: mx.array) -> mx.array:
        # nn.gelu_approx is the tanh approximation, GPT-2's `gelu_new`; mlx-lm's gpt2.py uses the same
        # function, so our logits match an exported model bit for bit (exact erf GELU would drift ~1e-4).
        return self.dropout(self.c_proj(nn.gelu_approx(self.c_fc(x))))


class Block(nn.Module):
    """A pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def __call__(self, x: mx.array, cache: KVCache | None = None) -> mx.array:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class LlamaAttention(nn.Module):
    """Causal self-attention with rotary positions; n_kv_heads < n_heads shares key/value heads (GQA)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        head_dim = cfg.d_model // cfg.n_heads
        self.n_heads, self.n_kv_heads = cfg.n_heads, cfg.n_kv_heads or cfg.n_heads
        self.scale = head_dim**-0.5
        self.rope_theta = cfg.rope_theta
        self.q_proj = nn.Linear(cfg.d_model, self.n_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, self.n_kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, self.n_kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * head_dim, cfg.d_model, bias=False)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def rope(self, x: mx.array, offset: int) -> mx.array:
        """Rotate [B, H, T, D] by positions offset.. (the halves layout of mlx-lm's and HF's llama)."""
        return mx.fast.rope(x, x.shape[-1], traditional=False, base=self.rope_theta, scale=1.0, offset=offset)

    def __call__(self, x: mx.array, cache: KVCache | None = None) -> mx.array:
        B, T, _ = x.shape
        q = self.q_proj(x).reshape(B, T, self.n_heads, -1).transpose(0, 2, 1, 3)
        k = self.k_proj(x).reshape(B, T, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        v = self.v_proj(x).reshape(B, T, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        # Keys are cached already rotated, so new tokens rotate from the cache's length on.
        offset = cache.offset if cache is not None else 0
        q, k = self.rope(q, offset), self.rope(k, offset)
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        # The fused kernel pairs each group of n_heads / n_kv_heads query heads with one key/value head.
        mask = "causal" if T > 1 else None
        y = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        return self.resid_dropout(self.o_proj(y.transpose(0, 2, 1, 3).reshape(B, T, -1)))


class LlamaMLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x)), no biases."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.hidden_dim, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.hidden_dim, bias=False)
        self.down_proj = nn.Linear(cfg.hidden_dim, cfg.d_model, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)

    def __call__(self, x: mx.array) -> mx.array:
        return self.dropout(self.down_proj(nn.silu(self.gate_proj(x)) * self.up_proj(x)))


class LlamaBlock(nn.Module):
    """A pre-RMSNorm block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = nn.RMSNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.self_attn = LlamaAttention(cfg)
        self.post_attention_layernorm = nn.RMSNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.mlp = LlamaMLP(cfg)

    def __call__(self, x: mx.array, cache: KVCache | None = None) -> mx.array:
        x = x + self.self_attn(self.input_layernorm(x), cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class TinyGPT(nn.Module):
    """The decoder cfg.arch names: token embeddings, n_layers blocks, a final norm, the LM head.

    gpt2 adds learned position embeddings and uses LayerNorm blocks; llama rotates queries and keys (RoPE)
    and uses RMSNorm blocks.
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        if vocab_size <= 0:
            raise ValueError(f"vocab_size must be positive, got {vocab_size}")
        if cfg.d_model % cfg.n_heads != 0:
            raise ValueError(f"d_model ({cfg.d_model}) must be divisible by n_heads ({cfg.n_heads})")
        if cfg.arch == "llama" and cfg.n_heads % (cfg.n_kv_heads or cfg.n_heads) != 0:
            raise ValueError(f"n_heads ({cfg.n_heads}) must be divisible by n_kv_heads ({cfg.n_kv_heads})")
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.max_seq_len = cfg.max_seq_len
        if cfg.arch == "llama":
            self.embed_tokens = nn.Embedding(vocab_size, cfg.d_model)
            self.drop = nn.Dropout(cfg.dropout)
            self.layers = [LlamaBlock(cfg) for _ in range(cfg.n_layers)]
            self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        else:
            self.wte = nn.Embedding(vocab_size, cfg.d_model)
            self.wpe = nn.Embedding(cfg.max_seq_len, cfg.d_model)
            self.drop = nn.Dropout(cfg.dropout)
            self.h = [Block(cfg) for _ in range(cfg.n_layers)]
            self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias)
        if not cfg.tie_embeddings:
            self.lm_head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2 init (llama too): N(0, 0.02) weights, zero biases, residual projections / sqrt(2 n_layers)."""
        # The residual stream adds two projections per block; scaling keeps its variance flat in depth.
        resid_std = INIT_STD / math.sqrt(2 * self.cfg.n_layers)
        # named_modules() has a fixed order, so the draws are deterministic given mx.random.seed.
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = resid_std if name.endswith(("c_proj", "o_proj", "down_proj")) else INIT_STD
                module.weight = std * mx.random.normal(module.weight.shape)
                if "bias" in module:
                    module.bias = mx.zeros_like(module.bias)
            elif isinstance(module, nn.Embedding):
                module.weight = INIT_STD * mx.random.normal(module.weight.shape)
        # Norms keep their default weight 1 (and LayerNorm's bias 0).

    @property
    def blocks(self) -> list[nn.Module]:
        """The transformer blocks: `h` (gpt2) or `layers` (llama)."""
        return self.layers if self.cfg.arch == "llama" else self.h

    @property
    def embedding(self) -> nn.Embedding:
        """The token embedding (the output head too when tied): `wte` (gpt2) or `embed_tokens` (llama)."""
        return self.embed_tokens if self.cfg.arch == "llama" else self.wte

    def make_cache(self) -> list[KVCache]:
        """One empty KVCache per layer, to pass to __call__ while generating."""
        return [KVCache() for _ in self.blocks]

    def __call__(self, idx: mx.array, cache: list[KVCache] | None = None) -> mx.array:
        """Logits [B, T, vocab] for token ids [B, T]; with a cache, positions continue after its contents."""
        _, T = idx.shape
        offset = cache[0].offset if cache is not None else 0
        if offset + T > self.max_seq_len:
            raise ValueError(
                f"sequence of {offset + T} tokens exceeds the model's max_seq_len ({self.max_seq_len})"
            )
        llama = self.cfg.arch == "llama"
        x = self.embedding(idx)
        if not llama:  # llama's positions enter through RoPE inside the attention
            x = x + self.wpe(mx.arange(offset, offset + T))
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, cache[i] if cache is not None else None)
        x = self.norm(x) if llama else self.ln_f(x)
        if self.cfg.tie_embeddings:
            return self.embedding.as_linear(x)
        return self.lm_head(x)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count; non_embedding leaves out the token (and position) tables, not an untied lm_head."""
        total = sum(v.size for _, v in nn.utils.tree_flatten(self.parameters()))
        if non_embedding:
            total -= self.embedding.weight.size + (0 if self.cfg.arch == "llama" else self.wpe.weight.size)
        return total


def count_params_closed_form(cfg: ModelConfig, vocab_size: int, non_embedding: bool = False) -> int:
    """The same number as TinyGPT.num_params, from the architecture formula (no model built)."""
    d, f = cfg.d_model, cfg.hidden_dim
    if cfg.arch == "llama":
        kv = (cfg.n_kv_heads or cfg.n_heads) * (d // cfg.n_heads)  # key/value width: n_kv_heads heads
        norm = d  # RMSNorm: a gain, no bias
        attn = 2 * d * d + 2 * d * kv  # q and o; k and v
        mlp = 3 * d * f  # gate, up, down
        tables = vocab_size * d
    else:
        b = int(cfg.bias)
        norm = d + b * d
        attn = (d * 3 * d + b * 3 * d) + (d * d + b * d)
        mlp = (d * f + b * f) + (f * d + b * d)
        tables = vocab_size * d + cfg.max_seq_len * d
    # Kaplan et al. (2020) leave out the token and position tables: they are lookups, not compute.
    # An untied lm_head is a real d x vocab matmul per token, so it stays in the non-embedding count.
    head = 0 if cfg.tie_embeddings else d * vocab_size
    non_emb = cfg.n_layers * (2 * norm + attn + mlp) + norm + head
    if non_embedding:
        return non_emb
    return non_emb + tables


def flops_per_token(cfg: ModelConfig, vocab_size: int, seq_len: int, include_head: bool = False) -> int:
    """Training FLOPs per token (forward + backward), Kaplan et al. 2020: 6 N + 6 n_layers seq_len d_model."""
    # N is the non-embedding parameter count: each weight costs 2 FLOPs forward (multiply-add) and
    # 4 backward. The attention term is Kaplan's QK^T "mask" cost at context seq_len, times 3 for
    # training (grouped-query attention shares keys, yet every query head still scores every key).
    # include_head adds the tied output projection (6 d V), which Kaplan's N leaves out but matters for
    # MFU at large vocabularies; an untied lm_head is already part of N.
    n = count_params_closed_form(cfg, vocab_size, non_embedding=True)
    flops = 6 * n + 6 * cfg.n_layers * seq_len * cfg.d_model
    if include_head and cfg.tie_embeddings:
        flops += 6 * cfg.d_model * vocab_size
    return flops
