"""The inner loop: train a fresh LoRA on one sequence, score it along the way, then remove it again.

The update is `tinygpt train`'s own: the step from train/step.py (make_train_step), passed through the
CPU seam (cpu.accelerate) exactly as train/backend.py does, over the LoRA parameters only (apply_lora
freezes the rest). One LoRA run per rank goes up to the largest of `inner_steps` and is scored after
each listed step, so the (steps x rank) grid costs one run per rank. Each run is repeated with
`lora_seeds` seeds and the results averaged, as the paper averages each inner-loop result over runs;
the seeds belong to the context, not to the method or round, so every method is scored with the same
random numbers. The base weights are never touched: remove_lora restores them exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import mlx.core as mx
import mlx.optimizers as optim

from tinygpt_mlx.config import Config
from tinygpt_mlx.cpu import accelerate
from tinygpt_mlx.lora import apply_lora, remove_lora
from tinygpt_mlx.model import TinyGPT
from tinygpt_mlx.seal.cloze import ClozeBatch, accuracy
from tinygpt_mlx.seal.reward import Scorer
from tinygpt_mlx.seal.task import derive_seed
from tinygpt_mlx.train.step import make_train_step

if TYPE_CHECKING:
    from tinygpt_mlx.seal.config import SealConfig

SCORE_FIELDS = ("target_loss", "delta_loss", "forgetting", "reward")


def inner_config(cfg: Config) -> Config:
    """The run's config as the inner step sees it: one sequence per update, no accumulation."""
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, batch_size=1),
                               runtime=dataclasses.replace(cfg.runtime, grad_accum_steps=1))


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


class InnerLoop:
    """Adapts `model` (in place, undone after each run) to one sequence and scores the result."""

    def __init__(self, model: TinyGPT, scorer: Scorer, seal: SealConfig, cfg: Config):
        self.model, self.scorer, self.seal = model, scorer, seal
        self.cfg = inner_config(cfg)
        self.steps = sorted(set(seal.inner_steps))

    def _run(self, x: mx.array, y: mx.array, rank: int, seed: int, target: Sequence[int], base_loss: float,
             cloze: ClozeBatch | None) -> tuple[list[dict], float | None]:
        """One LoRA run: the grid points at this rank, and the cloze accuracy after the last step."""
        seal, model = self.seal, self.model
        mx.random.seed(seed)  # LoRA A init and dropout: the same seed gives the same run
        apply_lora(model, seal.lora_modules, seal.lora_last_k_layers, rank, seal.lora_alpha, seal.lora_dropout)
        points, acc = [], None
        try:
            step = make_train_step(model, optim.Adam(learning_rate=seal.inner_lr), self.cfg)
            model, step = accelerate(model, step, self.cfg)
            for n in range(1, self.steps[-1] + 1):
                loss, _, ok = step(x, y)
                mx.eval(step.state, loss, ok)
                if n in self.steps:
                    model.eval()
                    points.append({"steps": n, "rank": rank, **self.scorer.score(target, base_loss)})
            acc = accuracy(model, cloze)
        finally:
            remove_lora(model)
            model.eval()
        return points, acc

    def adapt(self, train_ids: Sequence[int], target: Sequence[int], base_loss: float, seeds: Sequence[int],
              cloze: ClozeBatch | None = None) -> dict:
        """Score of LoRA runs on train_ids, averaged over seeds: the reward point's fields, seed_rewards, grid.

        The reward point is the largest of inner_steps at the chosen rank; cloze accuracy is read there.
        """
        ids = list(train_ids)[: self.model.max_seq_len + 1]
        chosen, last = self.seal.chosen_rank, self.steps[-1]
        runs: list[list[dict]] = []  # per seed, its grid points over every rank
        accs: list[float | None] = []
        for seed in seeds:
            points: list[dict] = []
            for rank in self.seal.ranks:
                if len(ids) < 2:
                    # An empty self-edit (the policy wrote EOS at once) teaches nothing: the base model.
                    score = self.scorer.score(target, base_loss)
                    points += [{"steps": s, "rank": rank, **score} for s in self.steps]
                    acc = accuracy(self.model, cloze) if rank == chosen else None
                else:
                    x, y = mx.array([ids[:-1]]), mx.array([ids[1:]])
                    got, acc = self._run(x, y, rank, derive_seed(seed, "rank", rank), target, base_loss,
                                         cloze if rank == chosen else None)
                    points += got
                if rank == chosen:
                    accs.append(acc)
            runs.append(points)
        grid = [{"steps": p["steps"], "rank": p["rank"],
                 **{k: _mean([run[i][k] for run in runs]) for k in SCORE_FIELDS}}
                for i, p in enumerate(runs[0])]
        at = next(i for i, p in enumerate(runs[0]) if p["steps"] == last and p["rank"] == chosen)
        return {"inner_steps": last, "rank": chosen, "train_tokens": len(ids) - 1,
                **{k: grid[at][k] for k in SCORE_FIELDS},
                "seed_rewards": [run[at]["reward"] for run in runs],
                "cloze_acc": None if accs[0] is None else _mean([a for a in accs if a is not None]),
                "grid": grid}
