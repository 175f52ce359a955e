"""The one tokenizer interface: a Hugging Face `tokenizers.Tokenizer` plus its kind, saved as `tokenizer.json`.

Every kind (char, bpe, gpt2) is a plain HF tokenizer underneath, so a saved folder loads in mlx-lm and
transformers without our code, and `fingerprint` lets a prepared token file refuse a mismatched tokenizer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from tinygpt_mlx.errors import UserError

EOS_TOKEN = "<|endoftext|>"
UNK_TOKEN = "<unk>"
KINDS = ("char", "bpe", "gpt2")
META_FILE = "tinygpt_tokenizer.json"


def _fingerprint(hf: HFTokenizer) -> str:
    """sha256 of vocabulary + merges + added tokens, in a canonical form independent of JSON layout."""
    model = json.loads(hf.to_str())["model"]
    # tokenizers has written merges both as "a b" strings and as [a, b] pairs; hash one spelling.
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    added = sorted((t.content, i) for i, t in hf.get_added_tokens_decoder().items())
    payload = {"vocab": sorted(hf.get_vocab(with_added_tokens=False).items(), key=lambda kv: kv[1]),
               "merges": merges, "added": added}
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


class Tokenizer:
    """A tokenizer of one kind; encode/decode are exact inverses on text (char: on seen characters)."""

    def __init__(self, hf: HFTokenizer, kind: str):
        if kind not in KINDS:
            raise UserError(f"unknown tokenizer kind {kind!r}; expected one of {', '.join(KINDS)}")
        eos = hf.token_to_id(EOS_TOKEN)
        if eos is None:
            raise UserError(f"the {kind} tokenizer has no {EOS_TOKEN} token")
        self.hf = hf
        self.kind = kind
        self.eos_id: int = eos
        self.fingerprint: str = _fingerprint(hf)

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included (the model's embedding needs at least this many rows)."""
        return self.hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of one text, no EOS appended (prepare appends it after each story)."""
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of many texts; HF tokenizes them on all cores in Rust."""
        return [e.ids for e in self.hf.encode_batch_fast(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        """Text of ids; special tokens are kept so EOS shows up as <|endoftext|>."""
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=False)

    def save(self, directory: str | Path) -> Path:
        """Write tokenizer.json, tokenizer_config.json (transformers/mlx-lm) and tinygpt_tokenizer.json."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.hf.save(str(directory / "tokenizer.json"))
        unk = UNK_TOKEN if self.hf.token_to_id(UNK_TOKEN) is not None else EOS_TOKEN
        hf_config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": EOS_TOKEN, "eos_token": EOS_TOKEN, "unk_token": unk,
            # transformers' default cleanup rewrites " ." to "." and would break exact round trips
            "clean_up_tokenization_spaces": False,
            "add_prefix_space": False,
            "model_max_length": 1_000_000,
        }
        (directory / "tokenizer_config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        ours = {"kind": self.kind, "fingerprint": self.fingerprint, "vocab_size": self.vocab_size,
                "eos_id": self.eos_id}
        (directory / META_FILE).write_text(json.dumps(ours, indent=2) + "\n")
        return directory

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size}, fingerprint={self.fingerprint[:12]})"


def parse_tokenizer_files(read: Callable[[], HFTokenizer], where: str | Path) -> HFTokenizer:
    """read(), a tokenizers call that parses the files at `where`; files it cannot parse are a UserError."""
    try:
        return read()
    except Exception as err:  # tokenizers reports a file it cannot parse as a bare Exception
        raise UserError(f"{where} is not a readable tokenizer file ({str(err).splitlines()[0]})") from None


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Load a folder written by `Tokenizer.save`."""
    directory = Path(directory)
    path, meta_path = directory / "tokenizer.json", directory / META_FILE
    for p in (path, meta_path):
        if not p.is_file():
            raise UserError(f"tokenizer file not found: {p}")
    try:
        meta = json.loads(meta_path.read_text())
        kind = meta["kind"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{meta_path} is not a tokenizer description (JSON with a 'kind')") from None
    tok = Tokenizer(parse_tokenizer_files(lambda: HFTokenizer.from_file(str(path)), path), kind)
    if meta.get("fingerprint") not in (None, tok.fingerprint):
        raise UserError(f"{path} does not match the fingerprint recorded in {meta_path}; the folder was altered")
    return tok
