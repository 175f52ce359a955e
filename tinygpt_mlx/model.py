"""TinyGPT: a GPT-2 style decoder in mlx.nn, with GPT-2 parameter names and a KV cache.

Read top to bottom: KVCache, attention, MLP, block, the model, then parameter and FLOP counts.
Parameter names are exactly GPT-2's (`wte`, `wpe`, `h.N.attn.c_attn`, ..., `ln_f`) so that export to
mlx-lm's `gpt2` model is a plain dump of `tree_flatten(model.parameters())`.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from functools import partial

import mlx.core as mx
import mlx.nn as nn

from tinygpt_mlx import cpu_attention, kernels
from tinygpt_mlx.config import ModelConfig

INIT_STD = 0.02  # GPT-2's initializer_range

# GELU (tanh approximation) for the CPU. MLX's CPU backend has no x86 SIMD: tanh and pow are scalar libm
# calls, about 25 ns per element, which made GELU the largest single cost of a training step (more than
# all its GEMMs on the reference shape). The same function written with multiply, add, divide and clip
# compiles into one fused loop: tanh as Eigen's float32 rational approximation (max error 4e-7 against
# tanh), x**3 as x*x*x, and an explicit backward. It agrees with nn.gelu_approx to ~1e-6 (tests).
_GELU_C = math.sqrt(2 / math.pi)
_GELU_K = 0.044715
_TANH_CLAMP = 7.90531110763549805  # beyond this the rational form is exactly +-1 in float32
_TANH_P = (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
           -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16)
_TANH_Q = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)


def _tanh_rational(x: mx.array) -> mx.array:
    x = mx.clip(x, -_TANH_CLAMP, _TANH_CLAMP)
    x2 = x * x
    p = x2 * _TANH_P[6] + _TANH_P[5]
    for c in reversed(_TANH_P[:5]):
        p = x2 * p + c
    q = x2 * _TANH_Q[3] + _TANH_Q[2]
    for c in reversed(_TANH_Q[:2]):
        q = x2 * q + c
    return x * p / q


# Both directions are compiled shapeless, as mlx.nn.gelu_approx is: outside a compiled step (decoding
# token by token) the ~25 elementwise ops would otherwise each be dispatched separately.
@partial(mx.compile, shapeless=True)
def _gelu_arith_forward(x: mx.array) -> mx.array:
    x32 = x.astype(mx.float32)
    y = 0.5 * x32 * (1 + _tanh_rational(_GELU_C * (x32 + _GELU_K * (x32 * x32 * x32))))
    return y.astype(x.dtype)


@partial(mx.compile, shapeless=True)
def _gelu_arith_backward(x: mx.array, cotangent: mx.array) -> mx.array:
    x = x.astype(mx.float32)
    # No subexpression here may equal one of the forward's: inside a compiled training step, identical
    # ops on the same inputs are merged, which keeps the forward's [tokens, 4 d] intermediate alive until
    # the backward. `x * x` and `0.5 * x` did that (~100 MB more peak memory on the reference shape), hence
    # mx.square and x multiplied last.
    x2 = mx.square(x)
    t = _tanh_rational(_GELU_C * x * (1 + _GELU_K * x2))
    slope = 0.5 * (1 + t) + x * (0.5 * (1 - t * t) * _GELU_C * (1 + 3 * _GELU_K * x2))
    return (cotangent.astype(mx.float32) * slope).astype(cotangent.dtype)


@mx.custom_function
def _gelu_arith(x: mx.array) -> mx.array:
    return _gelu_arith_forward(x)


@_gelu_arith.vjp
def _gelu_arith_vjp(primals, cotangent, output):
    x = primals[0] if isinstance(primals, (list, tuple)) else primals
    return (_gelu_arith_backward(x, cotangent),)


def gelu_approx(x: mx.array) -> mx.array:
    """GPT-2's `gelu_new`: nn.gelu_approx on GPUs, its fused arithmetic twin on the CPU (see above)."""
    if mx.default_device().type == mx.DeviceType.cpu:
        # The training step's C++ kernel (4x faster again) where it applies; the arithmetic twin elsewhere.
        fused = kernels.gelu(x) if cpu_attention.active() else None
        return _gelu_arith(x) if fused is None else fused
    return nn.gelu_approx(x)


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm that, in the CPU training step, runs the kernels' one-pass forward and backward."""

    def __call__(self, x: mx.array) -> mx.array:
        if cpu_attention.active() and "weight" in self:
            fused = kernels.layer_norm(x, self.weight, self.get("bias"), self.eps)
            if fused is not None:
                return fused
        return super().__call__(x)


_dropout_keys = threading.local()


@contextlib.contextmanager
def dropout_key(key: mx.array) -> Iterator[None]:
    """Within this block, TinyGPT's dropout masks come from `key` (split per use), not the global RNG."""
    # The training step's CPU lanes trace in their own threads: touching MLX's per-thread global random
    # state there made the process abort at exit (std::terminate in MLX's teardown), so they pass keys.
    previous = getattr(_dropout_keys, "key", None)
    _dropout_keys.key = key
    try:
        yield
    finally:
        _dropout_keys.key = previous


class Dropout(nn.Dropout):
    """nn.Dropout that draws from the key set by `dropout_key` when there is one."""

    def __init__(self, p: float = 0.5):
        super().__init__(p)
        self.keep = 1 - p

    def __call__(self, x: mx.array) -> mx.array:
        key = getattr(_dropout_keys, "key", None)
        if key is None or self.keep == 1 or not self.training:
            return super().__call__(x)
        _dropout_keys.key, sub = mx.random.split(key)
        return (mx.random.bernoulli(self.keep, x.shape, key=sub) * x) * (1 / self.keep)


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
        self.resid_dropout = Dropout(cfg.dropout)

    def __call__(self, x: mx.array, cache: KVCache | None = None) -> mx.array:
        B, T, C = x.shape
        qkv = self.c_attn(x)
        if cache is None and T > 1 and cpu_attention.active():
            fused = kernels.self_attention(qkv, self.n_heads, self.scale)
            if fused is not None:
                return self.resid_dropout(self.c_proj(fused))
        q, k, v = mx.split(qkv, 3, axis=-1)
        # [B, T, C] -> [B, H, T, D]
        q, k, v = (a.reshape(B, T, self.n_heads, -1).transpose(0, 2, 1, 3) for a in (q, k, v))
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        # MLX's "causal" mask is aligned to the bottom right: with a cache holding S past positions
        # and T new queries, query t sees keys 0..S+t, which is exactly right for a chunked prefill
        # (tests/test_model.py checks this). A single new token needs no mask at all.
        if cache is None and T > 1 and cpu_attention.active():
            y = cpu_attention.causal_attention(q, k, v, self.scale)
        else:
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
        self.dropout = Dropout(cfg.dropout)

    def __call__(self, x: mx.array) -> mx.array:
        # nn.gelu_approx is the tanh approximation, GPT-2's `gelu_new`; mlx-lm's gpt2.py uses the same
        # function, so our logits match an exported model bit for bit (exact erf GELU would drift ~1e-4).
        return self.dropout(self.c_proj(gelu_approx(self.c_fc(x))))


class Block(nn.Module):
    """A pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def __call__(self, x: mx.array, cache: KVCache | None = None) -> mx.array:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class TinyGPT(nn.Module):
    """GPT-2 decoder: token + learned position embeddings, n_layers blocks, final LayerNorm, LM head."""

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        if vocab_size <= 0:
            raise ValueError(f"vocab_size must be positive, got {vocab_size}")
        if cfg.d_model % cfg.n_heads != 0:
            raise ValueError(f"d_model ({cfg.d_model}) must be divisible by n_heads ({cfg.n_heads})")
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.max_seq_len = cfg.max_seq_len
        self.wte = nn.Embedding(vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.drop = Dropout(cfg.dropout)
        self.h = [Block(cfg) for _ in range(cfg.n_layers)]
        self.ln_f = LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias)
        if not cfg.tie_embeddings:
            self.lm_head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2 init: N(0, 0.02) weights, zero biases, residual projections scaled by 1/sqrt(2 n_layers)."""
        # The residual stream adds two projections per block; scaling keeps its variance flat in depth.
        resid_std = INIT_STD / math.sqrt(2 * self.cfg.n_layers)
        # named_modules() has a fixed order, so the draws are deterministic given mx.random.seed.
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = resid_std if name.endswith("c_proj") else INIT_STD
                module.weight = std * mx.random.normal(module.weight.shape)
                if "bias" in module:
                    module.bias = mx.zeros_like(module.bias)
            elif isinstance(module, nn.Embedding):
                module.weight = INIT_STD * mx.random.normal(module.weight.shape)
        # LayerNorms keep their default weight 1, bias 0.

    def make_cache(self) -> list[KVCache]:
        """One empty KVCache per layer, to pass to __call__ while generating."""
        return [KVCache() for _ in self.h]

    def __call__(self, idx: mx.array, cache: list[KVCache] | None = None) -> mx.array:
        """Logits [B, T, vocab] for token ids [B, T]; with a cache, positions continue after its contents."""
        _, T = idx.shape
        offset = cache[0].offset if cache is not None else 0
        if offset + T > self.max_seq_len:
            raise ValueError(
                f"sequence of {offset + T} tokens exceeds the model's max_seq_len ({self.max_seq_len})"
            )
        x = self.wte(idx) + self.wpe(mx.arange(offset, offset + T))
        x = self.drop(x)
        for i, block in enumerate(self.h):
            x = block(x, cache[i] if cache is not None else None)
        x = self.ln_f(x)
        if self.cfg.tie_embeddings:
            return self.wte.as_linear(x)
        return self.lm_head(x)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count; non_embedding leaves out wte and wpe (an untied lm_head still counts)."""
        total = sum(v.size for _, v in nn.utils.tree_flatten(self.parameters()))
        if non_embedding:
            total -= self.wte.weight.size + self.wpe.weight.size
        return total


def count_params_closed_form(cfg: ModelConfig, vocab_size: int, non_embedding: bool = False) -> int:
    """The same number as TinyGPT.num_params, from the architecture formula (no model built)."""
    d, f, b = cfg.d_model, cfg.hidden_dim, int(cfg.bias)
    layer_norm = d + b * d
    attn = (d * 3 * d + b * 3 * d) + (d * d + b * d)
    mlp = (d * f + b * f) + (f * d + b * d)
    blocks = cfg.n_layers * (2 * layer_norm + attn + mlp)
    # Kaplan et al. (2020) leave out the token and position tables: they are lookups, not compute.
    # An untied lm_head is a real d x vocab matmul per token, so it stays in the non-embedding count.
    head = 0 if cfg.tie_embeddings else d * vocab_size
    non_emb = blocks + layer_norm + head
    if non_embedding:
        return non_emb
    return non_emb + vocab_size * d + cfg.max_seq_len * d


def flops_per_token(cfg: ModelConfig, vocab_size: int, seq_len: int, include_head: bool = False) -> int:
    """Training FLOPs per token (forward + backward), Kaplan et al. 2020: 6 N + 6 n_layers seq_len d_model."""
    # N is the non-embedding parameter count: each weight costs 2 FLOPs forward (multiply-add) and
    # 4 backward. The attention term is Kaplan's QK^T "mask" cost at context seq_len, times 3 for
    # training. include_head adds the tied output projection (6 d V), which Kaplan's N leaves out but
    # matters for MFU at large vocabularies; an untied lm_head is already part of N.
    n = count_params_closed_form(cfg, vocab_size, non_embedding=True)
    flops = 6 * n + 6 * cfg.n_layers * seq_len * cfg.d_model
    if include_head and cfg.tie_embeddings:
        flops += 6 * cfg.d_model * vocab_size
    return flops
