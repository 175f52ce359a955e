"""Byte-level BPE trained on the corpus with HF `tokenizers` (the GPT-2 scheme, our own merges)."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from tinygpt_mlx.tokenizers.base import EOS_TOKEN, Tokenizer


def byte_level_pipeline(hf: HFTokenizer) -> HFTokenizer:
    """Attach the GPT-2 byte-level pre-tokenizer and decoder (no prefix space: exact round trips)."""
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    return hf


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE of `vocab_size` ids (256 byte tokens + <|endoftext|> + merges)."""
    if vocab_size < 257:
        from tinygpt_mlx.errors import UserError

        raise UserError(f"data.bpe_vocab_size must be at least 257 (256 bytes + <|endoftext|>), got {vocab_size}")
    hf = byte_level_pipeline(HFTokenizer(models.BPE()))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS_TOKEN],
        # every byte is in the vocabulary from the start, so any unicode text encodes without <unk>
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(texts, trainer=trainer)
    return Tokenizer(hf, "bpe")
