"""Character tokenizer: one id per distinct character of the training corpus, unseen characters -> <unk>.

Stored as an HF BPE model with no merges (each character is its own token) and a `Fuse` decoder, so
decoding concatenates characters exactly: spaces, newlines and unicode survive unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models

from tinygpt_mlx.tokenizers.base import EOS_TOKEN, UNK_TOKEN, Tokenizer


def char_tokenizer_from_chars(chars: Iterable[str]) -> Tokenizer:
    """Char tokenizer over the given characters (sorted; ids 0 and 1 are <|endoftext|> and <unk>)."""
    vocab = {EOS_TOKEN: 0, UNK_TOKEN: 1}
    for ch in sorted(set(chars)):
        vocab[ch] = len(vocab)
    # No pre-tokenizer: a story is one "word" split into characters; fuse_unk=False keeps one <unk> per char.
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK_TOKEN, fuse_unk=False))
    hf.decoder = decoders.Fuse()
    hf.add_special_tokens([EOS_TOKEN, UNK_TOKEN])
    return Tokenizer(hf, "char")


def train_char(texts: Iterable[str]) -> Tokenizer:
    """Char tokenizer over every distinct character of `texts` (deterministic: sorted by code point)."""
    seen: set[str] = set()
    for text in texts:
        seen.update(text)
    seen.discard("")
    return char_tokenizer_from_chars(seen)
