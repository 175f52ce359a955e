"""The loss and the training step: one compiled function per optimizer update.

The step follows mlx-lm's tuner/trainer.py: everything that changes (model weights, optimizer state,
the random key that dropout draws from, the float16 loss scale) is captured as compile state, so the
whole update (accumulation, clipping, the optimizer and the non-finite guard) is one graph. Under data
parallelism (a `group` of several ranks) the gradients and the loss are averaged over the ranks in that
same graph, as mlx-lm's tuner does with `average_gradients`.

On the CPU the gradients come from lanes instead (train/lanes.py): each thread computes its shard's
loss and gradients in its own compiled graph on its own stream, and a second compiled graph averages
them and runs the same clipping, optimizer and guard. Attention is traced with cpu_attention there.
"""

from __future__ import annotations

import weakref
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_map, tree_reduce

from tinygpt_mlx import cpu_attention
from tinygpt_mlx import model as model_lib
from tinygpt_mlx.config import Config
from tinygpt_mlx.device import on_accelerator
from tinygpt_mlx.loss import cross_entropy_loss
from tinygpt_mlx.train import lanes as lanes_lib

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
    call with `mx.eval(step.state, loss, grad_norm, ok)`. With CPU lanes (`runtime.cpu_threads`), a call
    waits for the lanes' gradients; the update itself stays lazy.
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
        self.group = group if group is not None and group.size() > 1 else None
        self.optimizer = optimizer
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
        if self.compiled:
            self._update = mx.compile(self._update, inputs=self.state, outputs=self.state)
            self._apply_lanes = mx.compile(self._apply_lanes, inputs=self.state, outputs=self.state)
        n_lanes = lanes_lib.choose_lanes(cfg.runtime.cpu_threads, cfg.data.batch_size, self.group is not None)
        self.lanes = lanes_lib.Lanes(n_lanes, self._make_lane_fn) if n_lanes > 1 else None
        if self.lanes is not None:
            weakref.finalize(self, self.lanes.close)

    @property
    def loss_scale(self) -> float:
        """The current float16 loss scale (1.0 for the other dtypes)."""
        return self.scaler["scale"].item()

    def __call__(self, x: mx.array, y: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        """Run one update on token ids x and targets y ([accum, B, T], or [B, T] when accum is 1)."""
        if x.ndim == 2:
            x, y = x[None], y[None]
        if x.shape[0] != self.accum:
            raise ValueError(f"expected {self.accum} micro-batches in the leading axis, got {x.shape[0]}")
        if not self.model.training:
            # A compiled trace keeps the dropout setting it was traced with, so always step in train mode.
            self.model.train()
        if self.lanes is not None and x.shape[1] % self.lanes.size == 0:
            return self._update_in_lanes(x, y)
        with cpu_attention.enabled():
            return self._update(x, y)

    def _loss(self, params: dict, x: mx.array, y: mx.array, scale: mx.array) -> mx.array:
        # Differentiating w.r.t. the float32 master weights and casting inside makes the cast's
        # backward deliver float32 gradients while the forward and backward run in the compute dtype.
        if self.dtype != mx.float32:
            params = tree_map(lambda p: p.astype(self.dtype) if mx.issubdtype(p.dtype, mx.floating) else p, params)
        self.model.update(params)
        loss = cross_entropy_loss(self.model(x), y)
        return loss * scale if self.scaled else loss

    def _accumulate(self, params: dict, x: mx.array, y: mx.array, scale: mx.array) -> tuple[mx.array, dict]:
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

    def _update(self, x: mx.array, y: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        params = self.model.trainable_parameters()
        loss, grads = self._accumulate(params, x, y, self.scaler["scale"])
        return self._apply(params, loss, grads)

    def _make_lane_fn(self):
        # Called once per lane; the lane traces it on its own stream. Dropout draws from the `key` input
        # (model.dropout_key), never from MLX's global random state, which lane threads must not touch.
        # The closures hold the step weakly, so a dropped TrainStep (bench, sweeps) frees its model and
        # its finalizer stops the lanes.
        step = weakref.proxy(self)

        def lane_grads(all_params: dict, params: dict, x: mx.array, y: mx.array, scale: mx.array, key: mx.array):
            step.model.update(all_params)
            with cpu_attention.enabled(), model_lib.dropout_key(key):
                return step._accumulate(params, x, y, scale)

        fn = mx.compile(lane_grads) if self.compiled else lane_grads

        def call(all_params, params, x, y, scale, key):
            try:
                return fn(all_params, params, x, y, scale, key)
            finally:  # a trace leaves tracers in the shared model: put the real arrays back
                step.model.update(all_params)

        return call

    def _update_in_lanes(self, x: mx.array, y: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        n = self.lanes.size
        # Drawn from this thread's global key, which checkpoints save: dropout resumes exactly with lanes.
        keys = list(mx.random.split(mx.random.key(mx.random.randint(0, 2**31 - 1, ()).item()), n))
        all_params, params = self.model.parameters(), self.model.trainable_parameters()
        rows = x.shape[1] // n
        shards = [(x[:, i * rows:(i + 1) * rows], y[:, i * rows:(i + 1) * rows]) for i in range(n)]
        # Lanes evaluate on their own streams and cannot finish work queued on this thread's stream.
        mx.eval(all_params, shards, keys, self.scaler)
        results = self.lanes.run([(all_params, params, xs, ys, self.scaler["scale"], keys[i])
                                  for i, (xs, ys) in enumerate(shards)])
        return self._apply_lanes([loss for loss, _ in results], [grads for _, grads in results])

    def _apply_lanes(self, losses: list[mx.array], grads: list[dict]) -> tuple[mx.array, mx.array, mx.array]:
        # Equal shards: the mean of the lanes' means is the mean over the whole batch.
        n = len(losses)
        loss = sum(losses[1:], losses[0]) / n
        mean_grads = tree_map(lambda *g: sum(g[1:], g[0]) / n, *grads)
        return self._apply(self.model.trainable_parameters(), loss, mean_grads)

    def _apply(self, params: dict, loss: mx.array, grads: dict) -> tuple[mx.array, mx.array, mx.array]:
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
