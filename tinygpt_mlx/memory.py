"""What a model needs in memory, so that one this machine cannot hold is refused before anything is allocated.

MLX allocates lazily and a failed allocation kills the process (a segmentation fault, no message), so a
model or sequence length far beyond the machine has to be refused up front, from its shape alone. The
estimate is a lower bound: float32 weights (plus gradients and the two AdamW moments when training), the
activations a backward pass keeps, the logits and, on the CPU (where MLX computes attention unfused), one
layer's attention scores. Anything it refuses could not run; a model that passes may still be too large.
"""

from __future__ import annotations

import os

from tinygpt_mlx.config import Config, ModelConfig
from tinygpt_mlx.errors import UserError
from tinygpt_mlx.model import count_params_closed_form

FLOAT_BYTES = 4
TRAIN_COPIES = 4  # weights, gradients, AdamW m and v
KEPT_PER_LAYER = 8  # residual-width activations a block keeps for its backward pass (a lower bound)


def estimate_bytes(cfg: ModelConfig, vocab_size: int, batch: int, seq_len: int, training: bool,
                   attention_scores: bool = True) -> int:
    """A lower bound on the memory a model of this shape needs for a training step or a forward pass."""
    params = count_params_closed_form(cfg, vocab_size)
    tokens = batch * seq_len
    # one layer's attention probabilities, where attention is computed unfused
    scores = batch * cfg.n_heads * seq_len * seq_len if attention_scores else 0
    logits = tokens * vocab_size
    if training:
        kept = tokens * cfg.n_layers * (KEPT_PER_LAYER * cfg.d_model + cfg.hidden_dim)
        floats = TRAIN_COPIES * params + kept + scores + logits
    else:
        cache = 2 * cfg.n_layers * tokens * cfg.d_model  # keys and values
        floats = params + cache + tokens * (cfg.d_model + cfg.hidden_dim) + scores + logits
    return FLOAT_BYTES * floats


def machine_bytes() -> int | None:
    """Memory MLX can use here: the GPU's on Metal, the physical RAM elsewhere (None when unknown)."""
    import mlx.core as mx

    size = mx.device_info().get("memory_size")
    if size:
        return int(size)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _gb(n: int) -> str:
    return f"{n / 2**30:,.1f} GB" if n < 2**50 else f"{n / 2**30:.2e} GB"


def check_fits(cfg: ModelConfig, vocab_size: int, batch: int, seq_len: int, training: bool, what: str) -> None:
    """Raise UserError when `what` (e.g. 'this config') needs more memory than the machine has."""
    from tinygpt_mlx.device import on_accelerator

    have = machine_bytes()
    need = estimate_bytes(cfg, vocab_size, batch, seq_len, training, attention_scores=not on_accelerator())
    if have is None or need <= have:
        return
    params = count_params_closed_form(cfg, vocab_size)
    task = f"train at batch {batch} x {seq_len} tokens" if training else f"run over {seq_len} tokens"
    raise UserError(f"{what} does not fit in memory: {params:,} parameters (d_model {cfg.d_model}, "
                    f"{cfg.n_layers} layers) need at least {_gb(need)} to {task}, and this machine has "
                    f"{_gb(have)}; choose a smaller model, batch or sequence length")


def check_training_fits(cfg: Config, ranks: int = 1) -> None:
    """check_fits for a run's config, before its data or model exist (the vocabulary at its smallest)."""
    batch = max(1, cfg.data.batch_size // ranks)
    check_fits(cfg.model, cfg.model.vocab_size or 1, batch, cfg.data.block_size, True, "this config")
