"""The inner loop: train a fresh LoRA on one text, score it along the way, then remove it again.

One LoRA run per rank goes up to the largest of `inner_steps` and is scored after each listed step, so
the whole (steps x rank) budget grid costs one run per rank rather than one per grid point. The base
weights are never touched: remove_lora restores them exactly, and the next self-edit starts clean.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim

from tinygpt_mlx.lora import apply_lora, remove_lora
from tinygpt_mlx.loss import cross_entropy_loss
from tinygpt_mlx.seal.reward import Scorer
from tinygpt_mlx.seal.task import derive_seed

if TYPE_CHECKING:
    from tinygpt_mlx.seal.config import SealConfig


def _loss(model: nn.Module, x: mx.array, y: mx.array) -> mx.array:
    return cross_entropy_loss(model(x), y)


def inner_loop(model: nn.Module, train_ids: Sequence[int], scorer: Scorer, target: Sequence[int],
               base_target_loss: float, seal: SealConfig, seed: int) -> list[dict]:
    """Grid points {steps, rank, target_loss, delta_loss, forgetting, reward} of LoRA runs on train_ids."""
    ids = list(train_ids)[: model.max_seq_len + 1]
    steps_grid = sorted(set(seal.inner_steps))
    points: list[dict] = []
    if len(ids) < 2:
        # An empty self-edit (the policy wrote EOS at once) teaches nothing: every point is the base model.
        for rank in seal.ranks:
            points += [{"steps": s, "rank": rank, **scorer.score(target, base_target_loss)} for s in steps_grid]
        return points
    x, y = mx.array([ids[:-1]]), mx.array([ids[1:]])
    for rank in seal.ranks:
        mx.random.seed(derive_seed(seed, "lora", rank))  # LoRA A init and dropout
        apply_lora(model, seal.lora_modules, seal.lora_last_k_layers, rank, seal.lora_alpha, seal.lora_dropout)
        try:
            optimizer = optim.Adam(learning_rate=seal.inner_lr)
            loss_and_grad = nn.value_and_grad(model, _loss)
            for step in range(1, steps_grid[-1] + 1):
                model.train()
                _, grads = loss_and_grad(model, x, y)
                optimizer.update(model, grads)
                mx.eval(model.trainable_parameters(), optimizer.state)
                if step in steps_grid:
                    model.eval()
                    points.append({"steps": step, "rank": rank, **scorer.score(target, base_target_loss)})
        finally:
            remove_lora(model)
            model.eval()
    return points


def pick(points: list[dict], steps: int, rank: int) -> dict:
    """The grid point at (steps, rank)."""
    for p in points:
        if p["steps"] == steps and p["rank"] == rank:
            return p
    raise KeyError(f"no grid point at steps={steps}, rank={rank}")
