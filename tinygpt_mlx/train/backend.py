"""What a framework supplies to the one training loop (`Backend`), and MLX's: TinyGPT, its optimizer, its step.

The loop (train/trainer.py) owns data, TrainState, evals, samples, metrics and checkpoints. A backend
owns the model, the optimizer and the step, and converts at the checkpoint boundary: `arrays()` hands
weights and optimizer state over as flat MLX arrays under MLX's names, `restore_optimizer` takes them
back, so a checkpoint written by one backend continues in the other. torch/backend.py is PyTorch's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from tinygpt_mlx.config import Config
from tinygpt_mlx.cpu import accelerate
from tinygpt_mlx.device import on_accelerator, precision_notice, select_device
from tinygpt_mlx.distributed import World
from tinygpt_mlx.eval.loss import evaluate
from tinygpt_mlx.model import TinyGPT
from tinygpt_mlx.train.checkpoint import Checkpoint
from tinygpt_mlx.train.optim import build_optimizer
from tinygpt_mlx.train.state import capture_rng, restore_rng
from tinygpt_mlx.train.step import make_train_step

StepOutcome = tuple[float, float, bool]
"""(loss, grad_norm before clipping, ok): ok is False when the update was withheld as non-finite."""


class Backend(Protocol):
    """The framework-specific part of training; the loop calls these in this order."""

    def build(self, vocab: int, total_steps: int, weights: dict[str, mx.array] | None) -> None:
        """Model (fresh weights drawn from mlx's generator, or `weights`) and optimizer."""

    def restore_optimizer(self, ckpt: Checkpoint) -> None:
        """Take over a checkpoint's optimizer state (MLX names, either backend's)."""

    def set_rng_state(self, rng: dict[str, Any], step: int) -> None:
        """Put the generators back as a checkpoint at `step` saved them."""

    def start(self, loss_scale: dict[str, Any] | None) -> None:
        """Build the step once everything is restored; `loss_scale` continues a saved float16 scale."""

    def step(self, x: np.ndarray, y: np.ndarray) -> Callable[[], StepOutcome]:
        """Start one update on [accum, B, T] token ids; the returned call waits for it."""

    def learning_rate(self) -> float:
        """The rate the last update used."""

    def peak_memory(self) -> int:
        """Peak bytes of the device's memory (the process's RSS on a CPU without a counter)."""

    def evaluate(self, x: np.ndarray, y: np.ndarray, n_bytes: int, batch_size: int) -> dict[str, float]:
        """val_loss / val_ppl / val_bpb on the windows x -> y, as eval/loss.py defines them."""

    def sampling_model(self) -> TinyGPT:
        """An MLX TinyGPT with the current weights, for generate.py."""

    def arrays(self) -> tuple[dict[str, mx.array], dict[str, mx.array]]:
        """(weights, optimizer state) as flat MLX arrays under MLX's names: what a checkpoint stores."""

    def rng_state(self) -> dict[str, Any]:
        """The generators' states, JSON-able."""

    def loss_scale(self) -> dict[str, Any]:
        """The float16 loss scale as {"scale", "good_steps"}."""

    def num_params(self) -> int:
        """Parameter count of the model."""

    def describe(self) -> str:
        """Words for the start-up line after 'tokens/step)', e.g. ' with torch on cuda'."""

    def env(self) -> dict[str, Any]:
        """Entries this backend adds to env.json."""


class MLXBackend:
    """TinyGPT, the mlx.optimizers optimizer and the compiled TrainStep; data-parallel under mlx.launch."""

    def __init__(self, cfg: Config, world: World, say: Callable[[str], None]) -> None:
        select_device(cfg.runtime.device)
        world.check_batch(cfg.data.batch_size)
        notice = precision_notice(cfg.runtime, on_accelerator())
        if notice:
            say(notice)
        self.cfg, self.world = cfg, world

    def build(self, vocab: int, total_steps: int, weights: dict[str, mx.array] | None) -> None:
        """See Backend.build."""
        self.model = TinyGPT(self.cfg.model, vocab)
        self.optimizer = build_optimizer(self.cfg, total_steps)
        if weights is not None:
            self.model.load_weights(list(weights.items()), strict=True)

    def restore_optimizer(self, ckpt: Checkpoint) -> None:
        """See Backend.restore_optimizer."""
        ckpt.restore_optimizer(self.optimizer)

    def set_rng_state(self, rng: dict[str, Any], step: int) -> None:
        """See Backend.set_rng_state."""
        restore_rng(rng)

    def start(self, loss_scale: dict[str, Any] | None) -> None:
        """See Backend.start."""
        world = self.world
        # Identical weights on every rank even where the seeded init could differ by an ulp across machines.
        self.model.update(world.broadcast(self.model.parameters(), "the start-up weight broadcast"))
        world.decorrelate_rng()  # after the init and the restore, which must match on every rank
        # The compiled step captures the model and optimizer state: build it only once they are final.
        self.train_step = make_train_step(self.model, self.optimizer, self.cfg, group=world.group)
        # MLX's CPU backend gets fused kernels (built on a machine's first run, ~15 s) and lanes; GPUs: as is.
        self.model, self.train_step = accelerate(self.model, self.train_step, self.cfg)
        if loss_scale is not None:
            self.train_step.scaler["scale"] = mx.array(loss_scale["scale"], mx.float32)
            self.train_step.scaler["good_steps"] = mx.array(loss_scale["good_steps"], mx.int32)
        mx.eval(self.model.parameters(), self.optimizer.state)

    def step(self, x: np.ndarray, y: np.ndarray) -> Callable[[], StepOutcome]:
        """See Backend.step: the update is queued, so the host can build the next batch meanwhile."""
        loss, grad_norm, ok = self.train_step(mx.array(x), mx.array(y))
        mx.async_eval(self.train_step.state, loss, grad_norm, ok)
        return lambda: (loss.item(), grad_norm.item(), ok.item())

    def learning_rate(self) -> float:
        """See Backend.learning_rate."""
        return float(self.optimizer.learning_rate.item())

    def peak_memory(self) -> int:
        """See Backend.peak_memory."""
        return mx.get_peak_memory()

    def evaluate(self, x: np.ndarray, y: np.ndarray, n_bytes: int, batch_size: int) -> dict[str, float]:
        """See Backend.evaluate: each rank scores its share of the windows."""
        return evaluate(self.model, x, y, n_bytes, batch_size, world=self.world)

    def sampling_model(self) -> TinyGPT:
        """See Backend.sampling_model."""
        return self.model

    def arrays(self) -> tuple[dict[str, mx.array], dict[str, mx.array]]:
        """See Backend.arrays."""
        return dict(tree_flatten(self.model.parameters())), dict(tree_flatten(self.optimizer.state))

    def rng_state(self) -> dict[str, Any]:
        """See Backend.rng_state."""
        return capture_rng()

    def loss_scale(self) -> dict[str, Any]:
        """See Backend.loss_scale."""
        return {"scale": self.train_step.loss_scale, "good_steps": self.train_step.scaler["good_steps"].item()}

    def num_params(self) -> int:
        """See Backend.num_params."""
        return self.model.num_params()

    def describe(self) -> str:
        """See Backend.describe."""
        return ""

    def env(self) -> dict[str, Any]:
        """See Backend.env."""
        return {}
