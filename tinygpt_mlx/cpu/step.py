"""The training step with each micro-batch split over CPU lanes (lanes.py): LaneStep wraps a TrainStep.

Each lane computes its shard's loss and gradients (TrainStep.loss_and_grad) in its own compiled graph on
its own stream; a second compiled graph, holding the step's state, averages them in a fixed order and
runs TrainStep.apply (clipping, optimizer, non-finite guard). So a run is deterministic for a given lane
count. Dropout in the lanes draws from keys split off this thread's global key, which checkpoints save:
dropout resumes exactly.
"""

from __future__ import annotations

import weakref

import mlx.core as mx
from mlx.utils import tree_map

from tinygpt_mlx.cpu.lanes import Lanes
from tinygpt_mlx.cpu.modules import dropout_key
from tinygpt_mlx.train.step import TrainStep


class LaneStep:
    """`step` with its gradients from n lanes; the same surface (call, state, scaler, loss_scale, model, optimizer).

    A batch whose rows do not divide by n runs on this thread's stream, as `step` alone would. A call
    waits for the lanes' gradients; the update itself stays lazy, as TrainStep's whole call does.
    """

    def __init__(self, step: TrainStep, n: int):
        self.step = step
        self.model, self.optimizer, self.group = step.model, step.optimizer, step.group
        self.state, self.scaler = step.state, step.scaler
        self.lanes = Lanes(n, self._make_lane_fn)
        self._apply = (mx.compile(self._average, inputs=self.state, outputs=self.state) if step.compiled
                       else self._average)
        weakref.finalize(self, self.lanes.close)

    @property
    def loss_scale(self) -> float:
        """The current float16 loss scale (1.0 for the other dtypes)."""
        return self.step.loss_scale

    def __call__(self, x: mx.array, y: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        """Run one update on token ids x and targets y ([accum, B, T], or [B, T] when accum is 1)."""
        x, y = self.step.micro_batches(x, y)
        n = self.lanes.size
        if x.shape[1] % n:
            return self.step(x, y)
        keys = list(mx.random.split(mx.random.key(mx.random.randint(0, 2**31 - 1, ()).item()), n))
        all_params, params = self.model.parameters(), self.model.trainable_parameters()
        rows = x.shape[1] // n
        shards = [(x[:, i * rows:(i + 1) * rows], y[:, i * rows:(i + 1) * rows]) for i in range(n)]
        # Lanes evaluate on their own streams and cannot finish work queued on this thread's stream.
        mx.eval(all_params, shards, keys, self.scaler)
        results = self.lanes.run([(all_params, params, xs, ys, self.scaler["scale"], keys[i])
                                  for i, (xs, ys) in enumerate(shards)])
        return self._apply([loss for loss, _ in results], [grads for _, grads in results])

    def _make_lane_fn(self):
        # Called once per lane; the lane traces it on its own stream. The closures hold the step weakly,
        # so a dropped LaneStep (bench, sweeps) frees its model and its finalizer stops the lanes.
        step = weakref.proxy(self.step)

        def lane_grads(all_params: dict, params: dict, x: mx.array, y: mx.array, scale: mx.array, key: mx.array):
            step.model.update(all_params)
            with dropout_key(key):
                return step.loss_and_grad(params, x, y, scale)

        fn = mx.compile(lane_grads) if self.step.compiled else lane_grads

        def call(all_params, params, x, y, scale, key):
            try:
                return fn(all_params, params, x, y, scale, key)
            finally:  # a trace leaves tracers in the shared model: put the real arrays back
                step.model.update(all_params)

        return call

    def _average(self, losses: list[mx.array], grads: list[dict]) -> tuple[mx.array, mx.array, mx.array]:
        # Equal shards: the mean of the lanes' means is the mean over the whole batch.
        n = len(losses)
        loss = sum(losses[1:], losses[0]) / n
        mean_grads = tree_map(lambda *g: sum(g[1:], g[0]) / n, *grads)
        return self.step.apply(self.model.trainable_parameters(), loss, mean_grads)
