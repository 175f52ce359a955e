"""The training step: one compiled function per optimizer update.

The step follows mlx-lm's tuner/trainer.py: everything that changes (model weights, optimizer state,
the random key that dropout draws from, the float16 loss scale) is captured as compile state, so the
whole update (accumulation, clipping, the optimizer and the non-finite guard) is one graph. Under data
parallelism (a `group` of several ranks) the gradients and the loss are averaged over the ranks in that
same graph, as mlx-lm's tuner does with `average_gradients`.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_map, tree_reduce

from tinygpt_mlx.config import Config
from tinygpt_mlx.device import on_accelerator
from tinygpt_mlx.loss import cross_entropy_loss

DTYPES = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}

# Dynamic loss scaling for float16, as PyTorch's GradScaler: start high, halve on overflow, double after
# a run of good steps. The floor of 1 marks a real overflow: gradients that are non-finite even unscaled.
INIT_LOSS_SCALE = 2.0**15
MIN_LOSS_SCALE = 1.0
GROWTH_INTERVAL = 2000


def global_norm(tree: Any) -> mx.array:
    """L2 norm of all arrays in a tree together, accumulated in float32."""
    return mx.sqrt(tree_reduce(lambda acc, g: acc + g.astype(mx.float32).square().sum(), tree, 0.0))


class TrainStep:
    """One optimizer update on x, y shaped [accum, B, T]; call returns (loss, grad_norm, ok) arrays, lazily.

    - loss: float32 mean token loss over all micro-batches; grad_norm: global norm before clipping.
    - ok: False when the loss or the gradient was non-finite; then weights and optimizer state are
      left exactly as they were (float16: a loss-scale overflow is skipped silently and stays ok,
      unless the scale is already at its floor of 1).
    With a distributed `group`, x and y are this rank's share of the global batch; gradients and loss
    are averaged over the ranks before clipping, so every rank clips, guards and updates identically.
    Build it after the model and optimizer state are final (e.g. restored from a checkpoint): compile
    captures those containers, so replacing `optimizer.state` later would go unseen. Evaluate after a
    call with `mx.eval(step.state, loss, grad_norm, ok)`.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: optim.Optimizer,
        cfg: Config,
        loss_scale: float = INIT_LOSS_SCALE,
        growth_interval: int = GROWTH_INTERVAL,
        group: mx.distributed.Group | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.group = group if group is not None and group.size() > 1 else None
        self.accum = cfg.runtime.grad_accum_steps
        self.grad_clip = cfg.optim.grad_clip
        self.dtype = DTYPES[cfg.runtime.compute_dtype(on_accelerator())]
        self.scaled = self.dtype == mx.float16
        self.growth_interval = growth_interval
        # Saved in checkpoints with the optimizer so a float16 run resumes with the same scale.
        self.scaler = {
            "scale": mx.array(loss_scale if self.scaled else 1.0, mx.float32),
            "good_steps": mx.array(0, mx.int32),
        }
        # Create the optimizer state now: compile must see every array it will update.
        optimizer.init(model.trainable_parameters())
        self.state = [model.state, optimizer.state, mx.random.state, self.scaler]
        self.compiled = cfg.runtime.compile
        self._update = mx.compile(self.update, inputs=self.state, outputs=self.state) if self.compiled else self.update

    @property
    def loss_scale(self) -> float:
        """The current float16 loss scale (1.0 for the other dtypes)."""
        return self.scaler["scale"].item()

    def __call__(self, x: mx.array, y: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        """Run one update on token ids x and targets y ([accum, B, T], or [B, T] when accum is 1)."""
        return self._update(*self.micro_batches(x, y))

    def micro_batches(self, x: mx.array, y: mx.array) -> tuple[mx.array, mx.array]:
        """x and y as [accum, B, T], checked; puts the model in training mode."""
        if x.ndim == 2:
            x, y = x[None], y[None]
        if x.shape[0] != self.accum:
            raise ValueError(f"expected {self.accum} micro-batches in the leading axis, got {x.shape[0]}")
        if not self.model.training:
            # A compiled trace keeps the dropout setting it was traced with, so always step in train mode.
            self.model.train()
        return x, y

    def update(self, x: mx.array, y: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        """The whole update, uncompiled: loss and gradients of every micro-batch, then `apply`."""
        params = self.model.trainable_parameters()
        loss, grads = self.loss_and_grad(params, x, y, self.scaler["scale"])
        return self.apply(params, loss, grads)

    def _loss(self, params: dict, x: mx.array, y: mx.array, scale: mx.array) -> mx.array:
        # Differentiating w.r.t. the float32 master weights and casting inside makes the cast's
        # backward deliver float32 gradients while the forward and backward run in the compute dtype.
        if self.dtype != mx.float32:
            params = tree_map(lambda p: p.astype(self.dtype) if mx.issubdtype(p.dtype, mx.floating) else p, params)
        self.model.update(params)
        loss = cross_entropy_loss(self.model(x), y)
        return loss * scale if self.scaled else loss

    def loss_and_grad(self, params: dict, x: mx.array, y: mx.array, scale: mx.array) -> tuple[mx.array, dict]:
        """Mean loss and gradients over the micro-batches x[i], y[i], unscaled (the model ends up holding params)."""
        # Unrolled at trace time: accum forward/backward passes, summed, in one graph.
        loss_and_grad = mx.value_and_grad(self._loss)
        loss, grads = loss_and_grad(params, x[0], y[0], scale)
        for i in range(1, self.accum):
            loss_i, grads_i = loss_and_grad(params, x[i], y[i], scale)
            loss, grads = loss + loss_i, tree_map(mx.add, grads, grads_i)
        # Every micro-batch has the same token count, so the mean of means is the mean over all tokens.
        divisor = self.accum * scale if self.scaled else self.accum
        if self.accum == 1 and not self.scaled:
            return loss, grads
        return loss / divisor, tree_map(lambda g: g / divisor, grads)

    def apply(self, params: dict, loss: mx.array, grads: dict) -> tuple[mx.array, mx.array, mx.array]:
        """Average over the ranks, clip, guard and update from the weights `params`: (loss, grad_norm, ok)."""
        old_opt_state = tree_map(lambda a: a, self.optimizer.state)  # new containers, same arrays
        if self.group is not None:
            # One all-reduce for both (average_gradients packs the tree into one buffer). Averaging before
            # clipping and the finite check keeps every rank's update identical to a 1-rank run's.
            mean = nn.average_gradients({"grads": grads, "loss": loss}, group=self.group)
            grads, loss = mean["grads"], mean["loss"]
        if self.grad_clip > 0:
            grads, grad_norm = optim.clip_grad_norm(grads, self.grad_clip)
        else:
            grad_norm = global_norm(grads)
        finite_loss = mx.isfinite(loss)
        finite_grad = mx.isfinite(grad_norm)
        apply = finite_loss & finite_grad
        ok = apply if not self.scaled else finite_loss & (finite_grad | (self.scaler["scale"] > MIN_LOSS_SCALE))
        if self.scaled:
            self._update_scaler(finite_grad, apply)

        # The guard selects old values with mx.where inside the graph rather than splitting the step
        # into a gradient call, a host-side check and an apply call: the select is a few elementwise
        # ops over the weights (fused by compile, well under 1% of a step), while a host check would
        # force a sync every step and stall the pipeline that overlaps batch loading with compute.
        new_params = self.optimizer.apply_gradients(grads, params)
        self.model.update(tree_map(lambda new, old: mx.where(apply, new, old), new_params, params))
        _select_in_place(apply, self.optimizer.state, old_opt_state)
        return loss, grad_norm, ok

    def _update_scaler(self, finite_grad: mx.array, applied: mx.array) -> None:
        scale, good = self.scaler["scale"], self.scaler["good_steps"]
        good = mx.where(applied, good + 1, 0)
        grow = good >= self.growth_interval
        halved = mx.maximum(scale / 2, MIN_LOSS_SCALE)
        self.scaler["scale"] = mx.where(finite_grad, mx.where(grow, scale * 2, scale), halved)
        self.scaler["good_steps"] = mx.where(grow, 0, good)


def _select_in_place(keep_new: mx.array, live: Any, old: Any) -> None:
    """Replace every array in the live containers by where(keep_new, live, old), keeping the containers."""
    # In place, because compile tracks the optimizer's own state dicts, not copies of them.
    keys = live.keys() if isinstance(live, dict) else range(len(live))
    for k in keys:
        value = live[k]
        if isinstance(value, (dict, list)):
            _select_in_place(keep_new, value, old[k])
        elif isinstance(value, mx.array):
            live[k] = mx.where(keep_new, value, old[k])


def make_train_step(model: nn.Module, optimizer: optim.Optimizer, cfg: Config,
                    group: mx.distributed.Group | None = None) -> TrainStep:
    """The training step for cfg (compiled unless runtime.compile is false), averaging over `group`."""
    return TrainStep(model, optimizer, cfg, group=group)
