"""ReST^EM's two halves: keep the rewarded self-edits (E-step), fine-tune the policy on them (M-step).

The filter keeps, per context, the best of its k self-edits when its reward is positive, that is when
it beats no adaptation (the paper's rule); `select_against: passage` also asks it to beat training on
the passage itself. The policy is a copy of the base model, fine-tuned either through one LoRA adapter
grown over the rounds or in full; the model the inner loop adapts stays the unchanged base, so every
round's Δ loss is measured against the same reference. The policy is trained on the ids it sampled.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten

from tinygpt_mlx.lora import apply_lora, load_adapters, save_adapters
from tinygpt_mlx.loss import cross_entropy_loss
from tinygpt_mlx.model import TinyGPT
from tinygpt_mlx.seal.task import derive_seed

if TYPE_CHECKING:
    from tinygpt_mlx.seal.config import SealConfig

POLICY_WEIGHTS = "model.safetensors"


def select_edits(candidates: dict[str, list[dict]], baseline_reward: dict[str, float] | None = None,
                 ) -> dict[str, int]:
    """Per context, the index of its best candidate when that reward is > 0 (and > the baseline's, if given)."""
    kept = {}
    for context_id, edits in candidates.items():
        if not edits:
            continue
        best = max(range(len(edits)), key=lambda i: edits[i]["reward"])
        reward = edits[best]["reward"]
        if reward > 0 and (baseline_reward is None or reward > baseline_reward[context_id]):
            kept[context_id] = best
    return kept


def copy_model(model: TinyGPT) -> TinyGPT:
    """A second TinyGPT with the same weights (arrays are immutable, so sharing them is safe)."""
    twin = TinyGPT(model.cfg, model.vocab_size)
    twin.load_weights(tree_flatten(model.parameters()), strict=True)
    twin.eval()
    return twin


def make_policy(base: TinyGPT, seal: SealConfig, seed: int, saved: Path | None = None) -> TinyGPT:
    """The self-edit policy: a copy of base, with its LoRA adapter (mode lora), restored from saved if given.

    A new adapter's A matrices are drawn from `seed`, so the round-0 policy is the same in a resumed run.
    """
    policy = copy_model(base)
    if seal.policy_mode == "lora":
        if saved is not None:
            load_adapters(policy, saved)
        else:
            mx.random.seed(derive_seed(seed, "policy-init"))
            apply_lora(policy, seal.lora_modules, seal.lora_last_k_layers, seal.policy_rank, seal.lora_alpha,
                       seal.lora_dropout)
    elif saved is not None:
        policy.load_weights(str(saved / POLICY_WEIGHTS), strict=True)
    policy.eval()
    return policy


def save_policy(policy: TinyGPT, seal: SealConfig, directory: Path) -> None:
    """Write the policy's adapter (mode lora) or its full weights (mode full) to directory."""
    if seal.policy_mode == "lora":
        save_adapters(policy, directory)
    else:
        directory.mkdir(parents=True, exist_ok=True)
        mx.save_safetensors(str(directory / POLICY_WEIGHTS), dict(tree_flatten(policy.parameters())))


def _masked_loss(model: nn.Module, x: mx.array, y: mx.array, mask: mx.array) -> mx.array:
    per_token = cross_entropy_loss(model(x), y, reduction="none")
    return (per_token * mask).sum() / mask.sum()


def finetune_policy(policy: TinyGPT, pairs: Sequence[tuple[list[int], list[int]]], seal: SealConfig,
                    seed: int, eos_id: int) -> float:
    """SFT on (prompt ids -> self-edit ids) pairs, loss on the self-edit and its EOS only; mean loss."""
    if not pairs:
        return float("nan")
    mx.random.seed(derive_seed(seed, "policy-dropout"))
    optimizer = optim.Adam(learning_rate=seal.policy_lr)
    loss_and_grad = nn.value_and_grad(policy, _masked_loss)
    order = list(range(len(pairs)))
    shuffle = random.Random(derive_seed(seed, "policy-order"))
    losses = []
    policy.train()
    for _ in range(seal.policy_epochs):
        shuffle.shuffle(order)
        for i in order:
            prompt, edit = pairs[i]
            ids = (list(prompt) + list(edit) + [eos_id])[-(policy.max_seq_len + 1):]
            n_edit = min(len(edit) + 1, len(ids) - 1)  # cropping from the left keeps the edit whole
            mask = mx.array([[0.0] * (len(ids) - 1 - n_edit) + [1.0] * n_edit])
            loss, grads = loss_and_grad(policy, mx.array([ids[:-1]]), mx.array([ids[1:]]), mask)
            optimizer.update(policy, grads)
            mx.eval(policy.trainable_parameters(), optimizer.state, loss)
            losses.append(loss.item())
    policy.eval()
    return sum(losses) / len(losses)
