"""What every interop format shares: GPT-2's config keys, its Conv1D weight names, the export source and
the output folder (written whole or not at all).

TinyGPT already uses GPT-2's parameter names, so mlx-lm and Hugging Face differ from us only in a name
prefix, in the Conv1D layout (`[in, out]`, the transpose of MLX's `nn.Linear` `[out, in]`) and in which
options they can express (the llama arch's names are theirs too: hf_llama.py). Shapes always come from a
TinyGPT built lazily from the config (nothing is computed until evaluated), so these checks can never
drift from model.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten

from tinygpt_mlx.config import ModelConfig
from tinygpt_mlx.errors import UserError

# GPT-2's Conv1D layers store weight as [in, out]; every other 2-D weight (wte, wpe, lm_head) is [rows, d].
CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
GELU_TANH = "gelu_new"  # HF's name for the tanh-approximated GELU TinyGPT uses


def is_conv1d(name: str) -> bool:
    """True for the weights Hugging Face GPT-2 stores transposed (Conv1D)."""
    return name.endswith(CONV1D_SUFFIXES)


def param_shapes(cfg: ModelConfig, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """TinyGPT's parameter names and shapes for cfg, from a lazily built model (no weights computed)."""
    from tinygpt_mlx.model import TinyGPT

    return {name: tuple(v.shape) for name, v in tree_flatten(TinyGPT(cfg, vocab_size).parameters())}


def with_zero_biases(cfg: ModelConfig, vocab_size: int, weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Weights of a bias-free model plus zero biases: the same function, in GPT-2's always-biased layout."""
    # x + 0 is exact in floating point, so a GPT-2 with zero biases computes bit for bit what bias=False does.
    biased = dataclasses.replace(cfg, bias=True)
    full = dict(weights)
    for name, shape in param_shapes(biased, vocab_size).items():
        if name not in full:
            full[name] = mx.zeros(shape, dtype=weights["wte.weight"].dtype)
    return full


def gpt2_config(cfg: ModelConfig, vocab_size: int, eos_id: int) -> dict[str, Any]:
    """A Hugging Face GPT2Config dict for cfg (mlx-lm's gpt2 ModelArgs reads the same keys)."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": vocab_size,
        "n_positions": cfg.max_seq_len,
        "n_ctx": cfg.max_seq_len,
        "n_embd": cfg.d_model,
        "n_layer": cfg.n_layers,
        "n_head": cfg.n_heads,
        # None is GPT-2's "4 x n_embd"; anything else must be spelled out.
        "n_inner": None if cfg.hidden_dim == 4 * cfg.d_model else cfg.hidden_dim,
        "activation_function": GELU_TANH,
        "layer_norm_epsilon": cfg.layer_norm_eps,
        # TinyGPT drops out embeddings and both residual branches but never attention probabilities.
        "embd_pdrop": cfg.dropout,
        "resid_pdrop": cfg.dropout,
        "attn_pdrop": 0.0,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "use_cache": True,
    }


def load_export_source(checkpoint: str | Path) -> tuple[Any, Any]:
    """(verified Checkpoint, its Tokenizer) for an export; the vocabulary is checked against the embedding."""
    from tinygpt_mlx.tokenizers import load_tokenizer
    from tinygpt_mlx.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    tokenizer = load_tokenizer(ckpt.tokenizer_dir)
    check_vocab_rows(ckpt.vocab_size, tokenizer.vocab_size, str(ckpt.path))
    return ckpt, tokenizer


def check_vocab_rows(rows: int, tokenizer_vocab: int, where: str) -> None:
    """Refuse an embedding with fewer rows than the tokenizer has ids (ids past the table are garbage)."""
    if rows < tokenizer_vocab:
        raise UserError(f"vocabulary mismatch in {where}: the tokenizer has {tokenizer_vocab} tokens but the "
                        f"embedding has only {rows} rows")


def write_model_folder(folder: Path, weights: dict[str, mx.array], config: dict[str, Any], tokenizer: Any,
                       metadata_format: str) -> None:
    """model.safetensors (metadata `format` as given), config.json and the tokenizer files into folder."""
    tensors = {name: mx.contiguous(value) for name, value in weights.items()}  # transposed views included
    mx.save_safetensors(str(folder / "model.safetensors"), tensors, metadata={"format": metadata_format})
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer.save(folder)  # tokenizer.json + tokenizer_config.json, which transformers and mlx-lm read


@contextmanager
def output_folder(path: str | Path) -> Iterator[Path]:
    """Yield a scratch folder that becomes `path` only when the block finishes; refuse a non-empty path."""
    final = Path(path)
    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        raise UserError(f"output {final} already exists and is not an empty folder; choose another --output")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if final.exists():
            final.rmdir()  # empty (checked above); os.rename cannot replace it otherwise
        os.rename(tmp, final)  # a crash midway never leaves a half-written export behind
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
