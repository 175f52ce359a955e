"""Fused C++ CPU kernels for training (see csrc/), built on first use; None wherever they cannot be.

Only the training step on the CPU calls them (TinyGPT checks `cpu_attention.active()`, set while the step
is traced); everything keeps a pure-MLX path, which is what runs when the kernels are off
(TINYGPT_KERNELS=0), on a GPU, for dtypes other than float32, or when no compiler is at hand (one warning
says so). Each wrapper below returns None where its kernel does not apply, and the caller falls back.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import warnings
from types import ModuleType

import mlx.core as mx

from tinygpt_mlx.kernels import build as _build
from tinygpt_mlx.kernels.build import MODULE_NAME, BuildError

_lock = threading.Lock()
_state: dict[str, object] = {"module": None, "status": "not-loaded"}


def enabled() -> bool:
    """False when TINYGPT_KERNELS is 0/false/off."""
    return os.environ.get("TINYGPT_KERNELS", "1").strip().lower() not in ("0", "false", "off", "no")


def load(verbose: bool = True) -> ModuleType | None:
    """The compiled kernel module (building it when needed), or None with the reason in `status()`."""
    with _lock:
        if _state["status"] != "not-loaded":
            return _state["module"]  # type: ignore[return-value]
        if not enabled():
            _state["status"] = "off (TINYGPT_KERNELS=0)"
            return None
        try:
            path = _build.build(verbose=verbose)
            spec = importlib.util.spec_from_file_location(f"{__name__}.{MODULE_NAME}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            _smoke_test(module)
        except (BuildError, ImportError, OSError, TypeError) as err:
            _state["status"] = f"unavailable: {err}"
            warnings.warn(f"tinygpt: CPU kernels unavailable, training uses MLX's own ops (slower): "
                          f"{err}", RuntimeWarning, stacklevel=2)
            return None
        _state["module"], _state["status"] = module, f"ready ({path})"
        return module


def _smoke_test(module: ModuleType) -> None:
    # An MLX built with another nanobind ABI imports the module fine but cannot pass it an mx.array:
    # find out here, where it means the fallback, and not in the middle of a training step. Building the
    # (lazy) op is enough to convert the argument, and safe even while a compiled step is being traced.
    try:
        module.gelu(mx.zeros((8,)))
    except TypeError as err:
        raise TypeError(f"the built kernels do not accept mx.array (nanobind ABI unlike MLX's?): {err}") from err


def status() -> str:
    """One line: ready (path), off, unavailable: why, or not-loaded."""
    return str(_state["status"])


def reset() -> None:
    """Forget what `load` found (tests switch TINYGPT_KERNELS and the cache directory)."""
    with _lock:
        _state["module"], _state["status"] = None, "not-loaded"


def _float32_module(*arrays: mx.array) -> ModuleType | None:
    if any(a.dtype != mx.float32 for a in arrays):
        return None
    return load()


def self_attention(qkv: mx.array, n_heads: int, scale: float) -> mx.array | None:
    """Causal attention of qkv [B, T, 3C] (q, k, v side by side) -> [B, T, C], or None."""
    module = _float32_module(qkv)
    return None if module is None else module.causal_self_attention(qkv, n_heads, scale)


def layer_norm(x: mx.array, weight: mx.array, bias: mx.array | None, eps: float) -> mx.array | None:
    """Layer norm over the last axis (bias None means zeros), or None."""
    bias = mx.zeros_like(weight) if bias is None else bias
    module = _float32_module(x, weight, bias)
    return None if module is None else module.layer_norm(x, weight, bias, eps)


def gelu(x: mx.array) -> mx.array | None:
    """GELU, tanh approximation (GPT-2's gelu_new), or None."""
    module = _float32_module(x)
    return None if module is None else module.gelu(x)
