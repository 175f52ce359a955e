"""Fused C++ CPU kernels for training (see csrc/): MLX primitives with their own backward, built on first use.

The CPU modules (cpu/modules.py) call them in training mode where `usable` says they apply, and run
pure MLX otherwise: when the kernels are off (TINYGPT_KERNELS=0), for dtypes other than float32, or when
no compiler is at hand (one warning says so).
"""

from __future__ import annotations

import importlib.util
import os
import threading
import warnings
from types import ModuleType

import mlx.core as mx

from tinygpt_mlx.cpu.kernels import build as _build
from tinygpt_mlx.cpu.kernels.build import MODULE_NAME, BuildError

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


def usable(*arrays: mx.array) -> bool:
    """True when the kernels are built (building them on the first call) and every array is float32."""
    return all(a.dtype == mx.float32 for a in arrays) and load() is not None


def self_attention(qkv: mx.array, n_heads: int, scale: float) -> mx.array:
    """Causal attention of qkv [B, T, 3C] (q, k, v side by side) -> [B, T, C]; needs `usable(qkv)`."""
    return load().causal_self_attention(qkv, n_heads, scale)


def layer_norm(x: mx.array, weight: mx.array, bias: mx.array | None, eps: float) -> mx.array:
    """Layer norm over the last axis (bias None means zeros); needs `usable(x, weight)`."""
    return load().layer_norm(x, weight, mx.zeros_like(weight) if bias is None else bias, eps)


def gelu(x: mx.array) -> mx.array:
    """GELU, tanh approximation (GPT-2's gelu_new); needs `usable(x)`."""
    return load().gelu(x)
