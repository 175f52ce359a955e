"""PyTorch as a training backend (`runtime.backend: torch`): the loop is train/trainer.py's, unchanged.

This module adapts the torch model (model.py), optimizer-state mapping (optim.py) and step (step.py) to
train/backend.py's `Backend`: it picks the device, converts arrays at the checkpoint boundary (MLX names
and layouts both ways), carries torch's generator in the checkpoint's RNG states, and lends generate.py
an MLX twin of the current weights for eval-time samples.
"""

from __future__ import annotations

import base64
import json
import resource
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import numpy as np
import torch

from tinygpt_mlx.config import Config
from tinygpt_mlx.errors import UserError
from tinygpt_mlx.eval.loss import scores
from tinygpt_mlx.model import TinyGPT
from tinygpt_mlx.torch.model import from_mlx_init, load_mlx_weights, to_mlx
from tinygpt_mlx.torch.optim import LRSchedule, build_optimizer, state_from_mlx, state_to_mlx
from tinygpt_mlx.torch.step import TorchTrainStep, batch_to, cross_entropy_loss
from tinygpt_mlx.train.checkpoint import Checkpoint
from tinygpt_mlx.train.state import capture_rng, restore_rng


def pick_device(cfg: Config) -> torch.device:
    """runtime.device -> a torch device: auto takes CUDA when present; gpu without CUDA is a user error."""
    want = cfg.runtime.device
    if want == "gpu" and not torch.cuda.is_available():
        raise UserError("runtime.device gpu with --backend torch needs CUDA, and torch sees no CUDA device")
    return torch.device("cuda" if want != "cpu" and torch.cuda.is_available() else "cpu")


def torch_rng_state(device: torch.device) -> str:
    """torch's generator state(s) as one base64 string (state.json stays small and readable)."""
    states = [torch.get_rng_state()] + ([torch.cuda.get_rng_state(device)] if device.type == "cuda" else [])
    return json.dumps([base64.b64encode(s.numpy().tobytes()).decode() for s in states])


def restore_torch_rng(text: str | None, device: torch.device, fallback_seed: int) -> None:
    """Put torch's generators back (a checkpoint from MLX has none: seed from fallback_seed instead)."""
    if text is None:
        torch.manual_seed(fallback_seed)
        return
    states = [torch.from_numpy(np.frombuffer(base64.b64decode(s), np.uint8).copy()) for s in json.loads(text)]
    torch.set_rng_state(states[0])
    if device.type == "cuda" and len(states) > 1:
        torch.cuda.set_rng_state(states[1], device)


class TorchBackend:
    """TorchTinyGPT, a torch optimizer laid out like MLX's, and TorchTrainStep, on CUDA or the CPU."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.device = pick_device(cfg)
        self.updates = 0
        self._twin: TinyGPT | None = None

    def build(self, vocab: int, total_steps: int, weights: dict[str, mx.array] | None) -> None:
        """See Backend.build: the init is the MLX model's for the same seed; dropout draws from torch's."""
        torch.manual_seed(self.cfg.runtime.seed)
        self.vocab = vocab
        self.model = from_mlx_init(self.cfg.model, vocab).to(self.device)
        if weights is not None:
            load_mlx_weights(self.model, weights)
        self.optimizer = build_optimizer(self.cfg, self.model)
        self.schedule = LRSchedule(self.cfg, total_steps)

    def restore_optimizer(self, ckpt: Checkpoint) -> None:
        """See Backend.restore_optimizer."""
        self.updates = state_from_mlx(self.optimizer, ckpt.optimizer_state, str(ckpt.path))

    def set_rng_state(self, rng: dict[str, Any], step: int) -> None:
        """See Backend.set_rng_state."""
        restore_rng(rng)
        restore_torch_rng(rng.get("torch"), self.device, self.cfg.runtime.seed * 1_000_003 + step)

    def start(self, loss_scale: dict[str, Any] | None) -> None:
        """See Backend.start."""
        self.train_step = TorchTrainStep(self.model, self.optimizer, self.schedule, self.cfg, self.device,
                                         self.updates)
        self.train_step.load_loss_scale(loss_scale)

    def step(self, x: np.ndarray, y: np.ndarray) -> Callable[[], tuple[float, float, bool]]:
        """See Backend.step: torch's step returns host values, so it is done when this returns."""
        outcome = self.train_step(batch_to(x, self.device), batch_to(y, self.device))
        return lambda: outcome

    def learning_rate(self) -> float:
        """See Backend.learning_rate."""
        return self.optimizer.param_groups[0]["lr"]

    def peak_memory(self) -> int:
        """See Backend.peak_memory."""
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    @torch.no_grad()
    def evaluate(self, x: np.ndarray, y: np.ndarray, n_bytes: int, batch_size: int) -> dict[str, float]:
        """See Backend.evaluate: float32 logits, float64 sum, no dropout; the model's mode is kept."""
        was_training = self.model.training
        self.model.eval()
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for i in range(0, len(x), batch_size):
            logits = self.model(batch_to(x[i : i + batch_size], self.device))
            total += cross_entropy_loss(logits, batch_to(y[i : i + batch_size], self.device), reduction="sum").double()
        self.model.train(was_training)
        return scores(float(total), y.size, n_bytes)

    def sampling_model(self) -> TinyGPT:
        """See Backend.sampling_model: one MLX twin, refilled with the current weights at every call."""
        if self._twin is None:
            # Building it draws init weights from mlx's generator; keep that off the training state's RNG.
            saved = mx.random.state[0]
            self._twin = TinyGPT(self.cfg.model, self.vocab)
            mx.random.seed((int(saved[0].item()) << 32) | int(saved[1].item()))
        self._twin.load_weights(list(to_mlx(self.model.state_dict()).items()), strict=True)
        return self._twin

    def arrays(self) -> tuple[dict[str, mx.array], dict[str, mx.array]]:
        """See Backend.arrays."""
        optimizer_state = state_to_mlx(self.optimizer, self.train_step.updates)
        return to_mlx(self.model.state_dict()), {k: mx.array(v) for k, v in optimizer_state.items()}

    def rng_state(self) -> dict[str, Any]:
        """See Backend.rng_state: MLX's three plus torch's."""
        return {**capture_rng(), "torch": torch_rng_state(self.device)}

    def loss_scale(self) -> dict[str, Any]:
        """See Backend.loss_scale."""
        return self.train_step.loss_scale

    def num_params(self) -> int:
        """See Backend.num_params."""
        return self.model.num_params()

    def describe(self) -> str:
        """See Backend.describe."""
        return f" with torch on {self.device}"

    def env(self) -> dict[str, Any]:
        """See Backend.env."""
        return {"train_backend": "torch", "torch": torch.__version__, "torch_device": str(self.device)}
