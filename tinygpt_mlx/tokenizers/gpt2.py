"""The GPT-2 vocabulary (50,257 ids) from `vocab.json` + `merges.txt` or a `tokenizer.json`."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models

from tinygpt_mlx.errors import UserError
from tinygpt_mlx.tokenizers.base import EOS_TOKEN, Tokenizer, parse_tokenizer_files
from tinygpt_mlx.tokenizers.bpe import byte_level_pipeline


def load_gpt2(tokenizer_dir: str | Path | None) -> Tokenizer:
    """GPT-2 BPE from a folder holding tokenizer.json, or vocab.json and merges.txt."""
    if not tokenizer_dir:
        raise UserError("tokenizer gpt2 needs data.tokenizer_dir: a folder with GPT-2 vocab.json and merges.txt")
    folder = Path(tokenizer_dir)
    if not folder.is_dir():
        raise UserError(f"data.tokenizer_dir not found: {folder}")
    if (folder / "tokenizer.json").is_file():
        hf = parse_tokenizer_files(lambda: HFTokenizer.from_file(str(folder / "tokenizer.json")),
                                   folder / "tokenizer.json")
    else:
        for name in ("vocab.json", "merges.txt"):
            if not (folder / name).is_file():
                raise UserError(f"GPT-2 tokenizer file missing: {folder / name} (need vocab.json and merges.txt)")
        hf = parse_tokenizer_files(lambda: byte_level_pipeline(HFTokenizer(models.BPE.from_file(
            str(folder / "vocab.json"), str(folder / "merges.txt")))), f"{folder} (vocab.json, merges.txt)")
    # <|endoftext|> is already id 50256 in the vocabulary; marking it special keeps it one token in text.
    hf.add_special_tokens([EOS_TOKEN])
    return Tokenizer(hf, "gpt2")
