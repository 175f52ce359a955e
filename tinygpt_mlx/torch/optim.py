"""torch optimizers laid out like MLX's, and their state written under the names MLX's optimizers use.

train/optim.py builds AdamW / Adam / SGD, splitting parameters with `is_decayed` into a MultiOptimizer
whose state is `states.0.*` (decayed matrices) and `states.1.*` (the rest), or one flat optimizer when
nothing is split. Here the same split becomes torch param groups in the same order, and the state maps
one to one: Adam's `m` / `v` are torch's `exp_avg` / `exp_avg_sq` (both use PyTorch's bias-corrected
update, `eps` added after the correction), SGD's `v` is torch's `momentum_buffer`, and `step` /
`learning_rate` are stored per group, as MLX does. So an optimizer.safetensors continues in either framework.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tinygpt_mlx.config import Config
from tinygpt_mlx.errors import UserError
from tinygpt_mlx.train.optim import is_decayed
from tinygpt_mlx.train.schedule import build_schedule


def layout(cfg: Config, named: list[tuple[str, torch.Tensor]]) -> list[tuple[str, list[str], float]]:
    """(MLX state prefix, parameter names, weight decay) per group, exactly as train/optim.py splits them."""
    o = cfg.optim
    names = [name for name, _ in named]
    if o.optimizer == "adam":
        return [("", names, 0.0)]
    if o.decay_all or o.weight_decay == 0:
        return [("", names, o.weight_decay)]
    decayed = [name for name, p in named if is_decayed(name, p)]
    rest = [name for name in names if name not in set(decayed)]
    return [("states.0.", decayed, o.weight_decay), ("states.1.", rest, 0.0)]


def build_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW / Adam / SGD over model with MLX's groups; lr is set before every step from `LRSchedule`."""
    o = cfg.optim
    params = dict(model.named_parameters())
    groups = [{"params": [params[n] for n in names], "names": names, "prefix": prefix, "weight_decay": wd}
              for prefix, names, wd in layout(cfg, list(params.items()))]
    if o.optimizer in ("adamw", "adam"):
        kind = torch.optim.AdamW if o.optimizer == "adamw" else torch.optim.Adam
        return kind(groups, lr=0.0, betas=tuple(o.betas), eps=o.eps)
    if o.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=0.0, momentum=o.momentum)
    raise ValueError(f"unknown optimizer {o.optimizer!r}")


class LRSchedule:
    """Update index -> learning rate, evaluated by train/schedule.py itself so both backends agree exactly."""

    def __init__(self, cfg: Config, total_steps: int):
        import mlx.core as mx

        self._mx = mx
        self._schedule = build_schedule(cfg.optim, cfg.schedule, total_steps)

    def __call__(self, update: int) -> float:
        """The rate of the update-th optimizer update (0-based), as the MLX optimizer would use it."""
        # MLX passes its uint64 step counter; the same dtype gives the same float32 arithmetic.
        return float(self._schedule(self._mx.array(update, dtype=self._mx.uint64)).item())


def _is_adam(optimizer: torch.optim.Optimizer) -> bool:
    return isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW))


def state_to_mlx(optimizer: torch.optim.Optimizer, updates: int) -> dict[str, np.ndarray]:
    """The optimizer state as flat MLX names (what optimizer.safetensors holds), as numpy arrays."""
    out: dict[str, np.ndarray] = {}
    for group in optimizer.param_groups:
        prefix = group["prefix"]
        out[f"{prefix}step"] = np.array(updates, dtype=np.uint64)
        out[f"{prefix}learning_rate"] = np.array(group["lr"], dtype=np.float32)
        for name, p in zip(group["names"], group["params"], strict=True):
            state = optimizer.state.get(p, {})
            keys = {"m": "exp_avg", "v": "exp_avg_sq"} if _is_adam(optimizer) else {"v": "momentum_buffer"}
            for mlx_key, torch_key in keys.items():
                value = state.get(torch_key)
                # Before the first update (or SGD without momentum) MLX holds zeros where torch holds nothing.
                array = np.zeros(tuple(p.shape), np.float32) if value is None else value.detach().cpu().numpy()
                out[f"{prefix}{name}.{mlx_key}"] = array
    return out


def state_from_mlx(optimizer: torch.optim.Optimizer, arrays: dict[str, Any], where: str) -> int:
    """Load flat MLX-named optimizer state into optimizer; returns the update count it carries."""
    expected = {k for k in state_to_mlx(optimizer, 0)}
    missing, unexpected = sorted(expected - set(arrays)), sorted(set(arrays) - expected)
    if missing or unexpected:
        first = (missing or unexpected)[0]
        raise UserError(f"the optimizer state in {where} does not fit optim settings ({len(missing)} missing, "
                        f"{len(unexpected)} unexpected, e.g. {first!r}); did optim.weight_decay or "
                        "optim.decay_all change?")
    updates = int(np.array(arrays[f"{optimizer.param_groups[0]['prefix']}step"]))
    for group in optimizer.param_groups:
        prefix = group["prefix"]
        group["lr"] = float(np.array(arrays[f"{prefix}learning_rate"]))
        for name, p in zip(group["names"], group["params"], strict=True):
            saved = {key: torch.from_numpy(np.array(arrays[f"{prefix}{name}.{key}"], copy=True)).to(p.device, p.dtype)
                     for key in ("m", "v") if f"{prefix}{name}.{key}" in arrays}
            if _is_adam(optimizer):
                # Adam's step lives on the CPU as a float tensor (the default, non-capturable form).
                optimizer.state[p] = {"step": torch.tensor(float(updates)), "exp_avg": saved["m"],
                                      "exp_avg_sq": saved["v"]}
            elif group["momentum"] > 0:
                optimizer.state[p] = {"momentum_buffer": saved["v"]}
    return updates
