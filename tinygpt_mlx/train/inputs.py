"""What a run starts from: token files, the batch sampler, pinned validation windows, and the source of its weights.

Both backends train on exactly these numpy batches, so a checkpoint of one continues in the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinygpt_mlx.config import Config, check_vocab
from tinygpt_mlx.data.loader import BatchSampler, TokenFile, eval_windows, shard, windows
from tinygpt_mlx.errors import UserError
from tinygpt_mlx.eval.loss import target_bytes
from tinygpt_mlx.train import checkpoint as ckpt_io

# Architecture fields that shape the weights: changing one of them on resume cannot work.
ARCH_FIELDS = ("name", "arch", "d_model", "n_layers", "n_heads", "n_kv_heads", "max_seq_len", "tie_embeddings",
               "bias", "hidden_dim", "layer_norm_eps", "rope_theta")


def total_steps_for(cfg: Config, train_tokens: int) -> int:
    """schedule.max_steps, or epochs x train tokens / tokens per optimizer step."""
    if cfg.schedule.max_steps is not None:
        return cfg.schedule.max_steps
    per_step = cfg.data.batch_size * cfg.data.block_size * cfg.runtime.grad_accum_steps
    return max(1, math.ceil(cfg.schedule.epochs * train_tokens / per_step))


def check_compatible(saved: Config, cfg: Config, saved_vocab: int, vocab: int, what: str) -> None:
    """Refuse to continue from a checkpoint whose architecture or optimizer differs from cfg."""
    changed = [f"model.{name} {getattr(saved.model, name)} -> {getattr(cfg.model, name)}"
               for name in ARCH_FIELDS if getattr(saved.model, name) != getattr(cfg.model, name)]
    if saved_vocab != vocab:
        changed.append(f"vocabulary {saved_vocab} -> {vocab}")
    if what == "resume" and saved.optim.optimizer != cfg.optim.optimizer:
        changed.append(f"optim.optimizer {saved.optim.optimizer} -> {cfg.optim.optimizer}")
    if changed:
        raise UserError(f"cannot {what} from a checkpoint with a different architecture: {'; '.join(changed)}")


class Batches:
    """Training batches [accum, B / world_size, T]: this rank's rows of each global batch, with the state."""

    def __init__(self, tokens: np.ndarray, sampler: BatchSampler, accum: int, rank: int = 0, world_size: int = 1):
        self.tokens, self.sampler, self.accum = tokens, sampler, accum
        self.rank, self.world_size = rank, world_size

    def next(self) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """(x, y, sampler state before this batch): saving that state makes resume redraw this batch."""
        state = self.sampler.state_dict()
        pairs = [self.sampler.next_batch(self.tokens) for _ in range(self.accum)]
        x = np.stack([shard(p[0], self.rank, self.world_size) for p in pairs])
        return x, np.stack([shard(p[1], self.rank, self.world_size) for p in pairs]), state


@dataclass
class RunInputs:
    """Tokens, the sampler and its batches, pinned validation windows, and the checkpoint weights come from."""

    tokenizer: Any
    train_tokens: np.ndarray
    val_tokens: np.ndarray
    sampler: BatchSampler
    batches: Batches
    total_steps: int
    tokens_per_step: int
    val_x: np.ndarray
    val_y: np.ndarray
    val_bytes: int
    source: ckpt_io.Checkpoint | None
    """The resumed or --init-from checkpoint, checked against cfg; None for fresh weights."""
    vocab: int


def run_inputs(cfg: Config, data: Any, start: ckpt_io.Checkpoint | None, init_from: str | None, say: Any,
               rank: int = 0, world_size: int = 1) -> RunInputs:
    """Token files, sampler, validation windows and the checkpoint the weights come from (if any)."""
    tokenizer = data.tokenizer
    check_vocab(cfg, tokenizer.vocab_size)
    train_tokens = TokenFile(data.train_path).tokens
    val_tokens = TokenFile(data.val_path).tokens
    block, batch = cfg.data.block_size, cfg.data.batch_size
    sampler = BatchSampler(len(train_tokens), batch, block, cfg.runtime.seed)
    # Pinned validation windows: the same tokens at every eval, in every run and resume.
    val_x, val_y = windows(val_tokens, eval_windows(len(val_tokens), block, cfg.eval.eval_subset), block)

    # Weights come from a resumed checkpoint, an --init-from checkpoint (fine-tuning), or a fresh init.
    if start is not None and init_from:
        say("--resume given: ignoring --init-from (the checkpoint already holds the weights)")
    if start is not None:
        source, what = start, "resume"
    else:
        source, what = (ckpt_io.load_checkpoint(init_from) if init_from else None), "initialize"
    if source is not None and source.tokenizer_fingerprint != tokenizer.fingerprint:
        raise UserError(f"cannot {what} from {source.path}: its tokenizer differs from this run's "
                        f"(data.tokenizer = {cfg.data.tokenizer}); use the data and tokenizer it was trained with")
    # A null model.vocab_size keeps the checkpoint's vocabulary (it may be padded past the tokenizer's).
    vocab = cfg.model.vocab_size or (source.vocab_size if source is not None else tokenizer.vocab_size)
    if source is not None:
        check_compatible(source.cfg, cfg, source.vocab_size, vocab, what)
    return RunInputs(
        tokenizer=tokenizer,
        train_tokens=train_tokens,
        val_tokens=val_tokens,
        sampler=sampler,
        batches=Batches(train_tokens, sampler, cfg.runtime.grad_accum_steps, rank, world_size),
        total_steps=total_steps_for(cfg, len(train_tokens)),
        tokens_per_step=batch * block * cfg.runtime.grad_accum_steps,
        val_x=val_x,
        val_y=val_y,
        val_bytes=target_bytes(tokenizer, val_y),
        source=source,
        vocab=vocab,
    )
