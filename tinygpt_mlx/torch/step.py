"""The torch training step: accumulation, autocast, clipping, the non-finite guard, the LR schedule.

It mirrors train/step.py's TrainStep: the loss is the float32 mean token loss over all micro-batches,
grad_norm the global norm before clipping (torch's clip_grad_norm_ uses the same max_norm / (norm + 1e-6)
factor as mlx's clip_grad_norm), and a non-finite loss or gradient leaves weights and optimizer state
untouched. float16 uses torch's GradScaler with MLX's starting scale and growth interval.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tinygpt_mlx.config import Config
from tinygpt_mlx.errors import UserError
from tinygpt_mlx.torch.optim import LRSchedule
from tinygpt_mlx.train.step import GROWTH_INTERVAL, INIT_LOSS_SCALE

AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def cross_entropy_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy in float32 (logits [B, T, V], targets [B, T])."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten().long(), reduction=reduction)


class TorchTrainStep:
    """One optimizer update on x, y shaped [accum, B, T]; call returns (loss, grad_norm, ok) as Python values."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule: LRSchedule,
                 cfg: Config, device: torch.device, updates: int = 0) -> None:
        self.model, self.optimizer, self.schedule, self.device = model, optimizer, schedule, device
        self.accum = cfg.runtime.grad_accum_steps
        self.grad_clip = cfg.optim.grad_clip
        precision = cfg.runtime.compute_dtype(device.type == "cuda")
        if precision == "float16" and device.type != "cuda":
            raise UserError("runtime.precision float16 with --backend torch needs CUDA; use bfloat16 or float32")
        self.amp_dtype = AMP_DTYPES.get(precision)
        self.scaler = torch.amp.GradScaler(device.type, init_scale=INIT_LOSS_SCALE,
                                           growth_interval=GROWTH_INTERVAL, enabled=precision == "float16")
        # Applied updates so far (skipped steps do not count): the schedule's step, as in MLX's optimizer.
        self.updates = updates

    @property
    def loss_scale(self) -> dict[str, float | int]:
        """The float16 loss scale in state.json's form (scale 1.0, good_steps 0 for other dtypes)."""
        if not self.scaler.is_enabled():
            return {"scale": 1.0, "good_steps": 0}
        tracker = self.scaler.state_dict().get("_growth_tracker", 0)
        return {"scale": float(self.scaler.get_scale()), "good_steps": int(tracker)}

    def load_loss_scale(self, saved: dict[str, float | int] | None) -> None:
        """Continue with a saved float16 loss scale (from either backend)."""
        if saved is not None and self.scaler.is_enabled():
            state = self.scaler.state_dict()
            self.scaler.load_state_dict({**state, "scale": float(saved["scale"]),
                                         "_growth_tracker": int(saved["good_steps"])})

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, bool]:
        """Run one update on token ids x and targets y ([accum, B, T])."""
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.schedule(self.updates)
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for i in range(self.accum):
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                enabled=self.amp_dtype is not None):
                logits = self.model(x[i])
            loss = cross_entropy_loss(logits, y[i])
            # Each micro-batch has the same token count, so summing loss / accum gives the mean's gradient.
            self.scaler.scale(loss / self.accum).backward()
            total += loss.detach()
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = self.grad_clip if self.grad_clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        loss_value = float(total / self.accum)
        apply = math.isfinite(loss_value) and math.isfinite(grad_norm)
        ok = apply
        if self.scaler.is_enabled():
            # As in MLX: an overflow while the scale can still shrink is skipped silently.
            ok = math.isfinite(loss_value) and (math.isfinite(grad_norm) or self.scaler.get_scale() > 1.0)
            if apply:
                self.scaler.step(self.optimizer)
            self.scaler.update()
        elif apply:
            self.optimizer.step()
        self.updates += int(apply)
        return loss_value, grad_norm, ok


def batch_to(array: object, device: torch.device) -> torch.Tensor:
    """A numpy int token batch as a long tensor on device."""
    return torch.from_numpy(array).to(device=device, dtype=torch.long, non_blocking=True)
