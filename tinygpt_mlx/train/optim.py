"""Optimizer construction: AdamW / Adam / SGD with the LR schedule and a weight-decay mask.

Weight decay shrinks matrices only (GPT-2 / nanoGPT practice): biases and norm gains are 1-D and
decaying them only fights their scale, and the embedding tables (GPT-2's wte/wpe, llama's embed_tokens)
are lookups whose rows receive sparse gradients, so decay would mostly just pull rarely seen tokens to
zero. mlx's AdamW decays every parameter it is given, so the parameters are split by name into two
groups with `mlx.optimizers.MultiOptimizer`: the first optimizer (with decay) takes what `is_decayed`
accepts, the second (decay 0) takes the rest. An untied `lm_head` is a real matrix and is decayed.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.optimizers as optim

from tinygpt_mlx.config import Config
from tinygpt_mlx.train.schedule import build_schedule

EMBEDDINGS = ("wte", "wpe", "embed_tokens")


def is_decayed(path: str, param: mx.array) -> bool:
    """True for parameters that weight decay applies to: matrices that are not embedding tables."""
    return param.ndim >= 2 and not any(part in EMBEDDINGS for part in path.split("."))


def build_optimizer(cfg: Config, total_steps: int) -> optim.Optimizer:
    """The configured optimizer with the LR schedule over total_steps and decay on matrices only."""
    o = cfg.optim
    lr = build_schedule(o, cfg.schedule, total_steps)

    def make(weight_decay: float) -> optim.Optimizer:
        if o.optimizer == "adamw":
            # bias_correction matches PyTorch's AdamW (and so the torch path and nanoGPT); mlx defaults off.
            return optim.AdamW(lr, betas=list(o.betas), eps=o.eps, weight_decay=weight_decay, bias_correction=True)
        if o.optimizer == "sgd":
            return optim.SGD(lr, momentum=o.momentum, weight_decay=weight_decay)
        raise ValueError(f"unknown optimizer {o.optimizer!r}")

    if o.optimizer == "adam":  # the ablation baseline: no weight decay at all
        return optim.Adam(lr, betas=list(o.betas), eps=o.eps, bias_correction=True)
    if o.decay_all or o.weight_decay == 0:
        return make(o.weight_decay)
    return optim.MultiOptimizer([make(o.weight_decay), make(0.0)], [is_decayed])
