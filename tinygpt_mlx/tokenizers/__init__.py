"""Char, byte-level BPE and GPT-2 BPE tokenizers behind one interface, each stored as `tokenizer.json`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from tinygpt_mlx.errors import UserError
from tinygpt_mlx.tokenizers.base import EOS_TOKEN, UNK_TOKEN, Tokenizer, load_tokenizer

if TYPE_CHECKING:
    from tinygpt_mlx.config import DataConfig

__all__ = ["EOS_TOKEN", "UNK_TOKEN", "Tokenizer", "build_tokenizer", "load_tokenizer"]


def build_tokenizer(data_cfg: DataConfig, texts: Iterable[str]) -> Tokenizer:
    """Build the tokenizer `data_cfg.tokenizer` names; char and bpe learn from `texts` (train split only)."""
    kind = data_cfg.tokenizer
    if kind == "char":
        from tinygpt_mlx.tokenizers.char import train_char

        return train_char(texts)
    if kind == "bpe":
        from tinygpt_mlx.tokenizers.bpe import train_bpe

        return train_bpe(texts, data_cfg.bpe_vocab_size)
    if kind == "gpt2":
        from tinygpt_mlx.tokenizers.gpt2 import load_gpt2

        return load_gpt2(data_cfg.tokenizer_dir)
    raise UserError(f"data.tokenizer = {kind!r} is not one of char, bpe, gpt2")
