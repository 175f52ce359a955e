"""Everything only MLX's CPU backend needs, entered through one seam: `accelerate(model, step, cfg)`.

- blas.py: a fast BLAS, loaded before mlx.core binds the wheel's reference one (tinygpt_mlx/__init__.py
  imports it first thing, which is why nothing in this file imports mlx at module level);
- kernels/: fused C++ attention, layer norm and GELU, each with its own backward, built on first use;
- modules.py: TinyGPT modules that use them while training (gelu.py: the GELU where they cannot build);
- lanes.py, step.py: each micro-batch split over threads with their own MLX streams, because the backend
  runs every op but BLAS on one thread per stream; malloc_arenas.py keeps those threads in one arena.
On Metal and CUDA the seam returns at once and nothing past this file is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import mlx.nn as nn

    from tinygpt_mlx.config import Config
    from tinygpt_mlx.cpu.step import LaneStep
    from tinygpt_mlx.train.step import TrainStep


def accelerate(model: nn.Module, step: TrainStep, cfg: Config) -> tuple[nn.Module, TrainStep | LaneStep]:
    """(model, step) for MLX's CPU backend: kernels, CPU modules, lanes; on a GPU both come back unchanged.

    Call it once, after the step is built and any checkpoint restored, before the first step. The model
    is changed in place (same parameters, same names); the step returned has TrainStep's public surface.
    """
    from tinygpt_mlx.device import on_accelerator

    if on_accelerator():
        return model, step
    from tinygpt_mlx.cpu import kernels, lanes, modules
    from tinygpt_mlx.cpu.step import LaneStep

    kernels.load()  # a machine's first run compiles them (~15 s): now, not inside the first step
    modules.use_cpu_modules(model)
    n = lanes.choose_lanes(cfg.runtime.cpu_threads, cfg.data.batch_size, distributed=step.group is not None)
    return model, (LaneStep(step, n) if n > 1 else step)
