"""Scoring an adaptation: no-context target loss, forgetting on general stories, and the reward.

Δ loss = (target loss of the unadapted model) - (target loss after the update), in nats per token, so a
positive Δ means the update taught the model something about the story. Forgetting is the increase of
the mean loss on a fixed set of general validation stories. reward = Δ loss - λ x forgetting.
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import mlx.nn as nn

from tinygpt_mlx.loss import cross_entropy_loss


def continuation_loss(model: nn.Module, prompt: Sequence[int], target: Sequence[int]) -> float:
    """Mean loss (nats/token) of target tokens after prompt; the sequence is cropped to max_seq_len + 1."""
    ids = list(prompt) + list(target)
    ids = ids[: model.max_seq_len + 1]
    if len(ids) <= len(prompt):
        raise ValueError("the prompt leaves no room for the target within max_seq_len")
    x, y = mx.array([ids[:-1]]), mx.array([ids[1:]])
    per_token = cross_entropy_loss(model(x), y, reduction="none")[0]
    # Position t predicts ids[t + 1]: the first target token is predicted at the prompt's last position.
    return per_token[len(prompt) - 1 :].mean().item()


def general_windows(stories: Sequence[list[int]], eos_id: int, length: int) -> mx.array | None:
    """The forgetting set: general stories joined by EOS, cut into [n, length + 1] windows (None if empty)."""
    stream: list[int] = []
    for ids in stories:
        stream += [eos_id, *ids]
    n = len(stream) // (length + 1)
    if n == 0:
        return None
    return mx.array(stream[: n * (length + 1)]).reshape(n, length + 1)


def windows_loss(model: nn.Module, windows: mx.array) -> float:
    """Mean next-token loss over the windows (one batched forward)."""
    return cross_entropy_loss(model(windows[:, :-1]), windows[:, 1:]).item()


def reward_of(delta_loss: float, forgetting: float, forget_weight: float) -> float:
    """reward = Δ loss - λ x forgetting (forgetting may be negative: the update helped in general too)."""
    return delta_loss - forget_weight * forgetting


class Scorer:
    """Scores the current weights of one model against a target, relative to the unadapted model."""

    def __init__(self, model: nn.Module, neutral_prompt: list[int], windows: mx.array | None,
                 forget_weight: float):
        self.model = model
        self.neutral_prompt = neutral_prompt
        self.windows = windows
        self.forget_weight = forget_weight
        was_training = model.training
        model.eval()
        self.base_general = windows_loss(model, windows) if windows is not None else 0.0
        model.train(was_training)

    def target_loss(self, target: Sequence[int]) -> float:
        """No-context loss of target under the model's current weights."""
        return continuation_loss(self.model, self.neutral_prompt, target)

    def forgetting(self) -> float:
        """Increase of the general-story loss against the unadapted model (0 when there is no set)."""
        if self.windows is None:
            return 0.0
        return windows_loss(self.model, self.windows) - self.base_general

    def score(self, target: Sequence[int], base_target_loss: float) -> dict[str, float]:
        """target_loss, delta_loss, forgetting and reward of the current weights."""
        loss = self.target_loss(target)
        forgetting = self.forgetting()
        delta = base_target_loss - loss
        return {"target_loss": loss, "delta_loss": delta, "forgetting": forgetting,
                "reward": reward_of(delta, forgetting, self.forget_weight)}
