"""TinyGPT's modules for training on MLX's CPU backend, put in place by `use_cpu_modules(model)`.

Each class is a subclass of the module it replaces, with the same parameters under the same names, so
checkpoints, the optimizer state and exports see no difference. In training mode they call the fused C++
kernels (kernels/); in eval mode (evaluation, sampling), and wherever a kernel does not apply (not built,
not float32), they run the model's own code, except GELU, whose fallback is gelu.py's arithmetic form.
Dropout draws from an explicit key inside `dropout_key`: the lanes' threads (step.py) must not use MLX's
per-thread global random state, which made processes abort at exit (std::terminate in MLX's teardown).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import mlx.core as mx
import mlx.nn as nn

from tinygpt_mlx import model as model_lib
from tinygpt_mlx.cpu import kernels
from tinygpt_mlx.cpu.gelu import gelu_arith


class FusedLayerNorm(nn.LayerNorm):
    """nn.LayerNorm running the kernels' one-pass forward and backward in training."""

    def __call__(self, x: mx.array) -> mx.array:
        if self.training and "weight" in self and kernels.usable(x, self.weight):
            return kernels.layer_norm(x, self.weight, self.get("bias"), self.eps)
        return super().__call__(x)


class FusedAttention(model_lib.CausalSelfAttention):
    """Causal self-attention as one kernel per direction on the packed qkv, in training (no cache)."""

    def __call__(self, x: mx.array, cache: model_lib.KVCache | None = None) -> mx.array:
        if self.training and cache is None and x.shape[1] > 1 and kernels.usable(x):
            y = kernels.self_attention(self.c_attn(x), self.n_heads, self.scale)
            return self.resid_dropout(self.c_proj(y))
        return super().__call__(x, cache)


class FusedMLP(model_lib.MLP):
    """The MLP with the kernels' GELU in training, else its arithmetic twin (gelu.py)."""

    def __call__(self, x: mx.array) -> mx.array:
        if not self.training:
            return super().__call__(x)
        h = self.c_fc(x)
        h = kernels.gelu(h) if kernels.usable(h) else gelu_arith(h)
        return self.dropout(self.c_proj(h))


_dropout_keys = threading.local()


@contextlib.contextmanager
def dropout_key(key: mx.array) -> Iterator[None]:
    """Within this block (in this thread), KeyedDropout masks come from `key`, split per use."""
    previous = getattr(_dropout_keys, "key", None)
    _dropout_keys.key = key
    try:
        yield
    finally:
        _dropout_keys.key = previous


class KeyedDropout(nn.Dropout):
    """nn.Dropout that draws from the key set by `dropout_key` when there is one."""

    def __call__(self, x: mx.array) -> mx.array:
        key = getattr(_dropout_keys, "key", None)
        keep = self._p_1  # nn.Dropout keeps 1 - p
        if key is None or keep == 1 or not self.training:
            return super().__call__(x)
        _dropout_keys.key, sub = mx.random.split(key)
        return (mx.random.bernoulli(keep, x.shape, key=sub) * x) * (1 / keep)


CPU_MODULES = {
    nn.LayerNorm: FusedLayerNorm,
    model_lib.CausalSelfAttention: FusedAttention,
    model_lib.MLP: FusedMLP,
    nn.Dropout: KeyedDropout,
}


def use_cpu_modules(model: nn.Module) -> nn.Module:
    """Give every module of exactly a type in CPU_MODULES its CPU class, in place; returns the model."""
    for _, module in model.named_modules():
        cpu_class = CPU_MODULES.get(type(module))
        if cpu_class is not None:
            # The same object keeps its arrays, children and settings; only its forward changes. So the
            # optimizer state and a step built on the model before stay valid.
            module.__class__ = cpu_class
    return model
