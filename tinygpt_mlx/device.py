"""Which device MLX computes on, and the compute dtype a run gets there."""

from __future__ import annotations

from tinygpt_mlx.config import RuntimeConfig
from tinygpt_mlx.errors import UserError


def device_description() -> tuple[str, str]:
    """(device, backend) MLX computes on, e.g. ('gpu', 'metal') or ('cpu', 'cpu')."""
    import mlx.core as mx

    device = mx.default_device()
    kind = "gpu" if device.type == mx.DeviceType.gpu else "cpu"
    if kind == "cpu":
        return kind, "cpu"
    if mx.metal.is_available():
        return kind, "metal"
    return kind, "cuda" if getattr(mx, "cuda", None) and mx.cuda.is_available() else "gpu"


def gpu_available() -> bool:
    """True when MLX can compute on a GPU here (Metal, or CUDA with `mlx[cuda]`)."""
    import mlx.core as mx

    return mx.metal.is_available() or bool(getattr(mx, "cuda", None) and mx.cuda.is_available())


def on_accelerator() -> bool:
    """True when MLX's default device is a GPU."""
    return device_description()[0] == "gpu"


def select_device(choice: str) -> None:
    """Apply runtime.device: `auto` keeps MLX's default (the GPU where there is one), `cpu` or `gpu` force it."""
    import mlx.core as mx

    if choice == "cpu":
        mx.set_default_device(mx.cpu)
    elif choice == "gpu":
        if not gpu_available():
            raise UserError("runtime.device is gpu, but MLX sees no GPU here (no Metal, no CUDA); "
                            "use runtime.device: auto or cpu")
        mx.set_default_device(mx.gpu)


def precision_notice(runtime: RuntimeConfig, accelerator: bool) -> str | None:
    """One line explaining the compute dtype where it is not what the config literally asks for, else None."""
    if accelerator:
        return None
    if runtime.amp and runtime.precision == "float32":
        return ("runtime.amp: training in float32 on the CPU, where MLX's matmul has no fast bfloat16 path "
                "(about 10x slower); amp means bfloat16 on Metal and CUDA")
    if runtime.precision in ("bfloat16", "float16"):
        return (f"runtime.precision is {runtime.precision}: honoured, but MLX's CPU matmul has no fast "
                f"{runtime.precision} path (about 10x slower than float32 here)")
    return None
