"""Compiling a training graph must not make it keep more memory: the plain model, and the CPU modules' GELU."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import pytest

from tinygpt_mlx.config import ModelConfig
from tinygpt_mlx.cpu import kernels
from tinygpt_mlx.cpu.modules import use_cpu_modules
from tinygpt_mlx.model import TinyGPT


def _peak_mb(make_outputs) -> float:
    peak = 0.0
    for _ in range(2):  # the first call traces and compiles
        mx.reset_peak_memory()
        base = mx.get_active_memory()
        mx.eval(make_outputs())
        peak = (mx.get_peak_memory() - base) / 2**20
    return peak


@pytest.mark.skipif(mx.default_device().type != mx.DeviceType.cpu, reason="peaks measured on MLX's CPU allocator")
@pytest.mark.parametrize("cpu_modules", [False, True], ids=["plain", "cpu-gelu-fallback"])
def test_compiled_training_graph_keeps_no_more_than_uncompiled(cpu_modules: bool, monkeypatch: pytest.MonkeyPatch):
    mx.random.seed(0)
    model = TinyGPT(ModelConfig(d_model=128, n_layers=4, n_heads=4, max_seq_len=128), 65)
    if cpu_modules:
        # Without the kernels, so the MLP runs cpu/gelu.py's arithmetic GELU and its hand-written backward.
        monkeypatch.setattr(kernels, "usable", lambda *arrays: False)
        use_cpu_modules(model)
    x = mx.random.randint(0, 65, (8, 128))
    y = mx.roll(x, -1, axis=1)
    mx.eval(model.parameters(), x, y)
    grad = nn.value_and_grad(model, lambda m, x, y: nn.losses.cross_entropy(m(x), y, reduction="mean"))
    compiled = mx.compile(lambda x, y: grad(model, x, y), inputs=[model.state], outputs=[model.state])
    # With a tiny memory limit MLX evaluates op by op instead of allocating ahead, so the peak is what
    # the graph itself keeps alive. Compiling merges identical ops: a GELU backward that repeats the
    # forward's `x * x` and `0.5 * x` makes the compiled graph keep those arrays from forward to backward,
    # 1.25x the uncompiled peak (1.03x without them).
    previous = mx.set_memory_limit(1)
    try:
        uncompiled_mb = _peak_mb(lambda: grad(model, x, y))
        compiled_mb = _peak_mb(lambda: compiled(x, y))
    finally:
        mx.set_memory_limit(previous)
    assert compiled_mb <= 1.12 * uncompiled_mb, f"compiled {compiled_mb:.1f} MB vs uncompiled {uncompiled_mb:.1f} MB"
