"""prepare_data: token counts computed independently, meta.json, reuse, fingerprints (tiny corpus; DATA.md numbers on
the shared excerpt)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tinygpt_mlx.config import Config, ConfigError, DataConfig, from_dict
from tinygpt_mlx.data.loader import TokenFile
from tinygpt_mlx.data.prepare import check_fingerprint, prepare_data, token_dtype
from tinygpt_mlx.errors import UserError
from tinygpt_mlx.tokenizers import build_tokenizer, load_tokenizer


def _stories(path: Path) -> list[str]:
    """Stories as SOURCES.md describes the format: each followed by a line holding only <|endoftext|>."""
    blocks, current = [], []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line == "<|endoftext|>":
            blocks.append("\n".join(current).strip())
            current = []
        else:
            current.append(line)
    return [b for b in blocks if b]


@pytest.fixture(scope="module")
def char_prepared(tiny_corpus, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    cfg = Config(data=DataConfig(data_dir=str(tiny_corpus), tokenizer="char", cache_dir=str(cache)))
    return cfg, prepare_data(cfg)


def test_char_prepare_counts_match_the_text(char_prepared, tiny_corpus):
    cfg, prep = char_prepared
    train = _stories(tiny_corpus / "tinystories_train.txt")
    val = _stories(tiny_corpus / "tinystories_valid.txt")
    assert (len(train), len(val)) == (24, 13)
    meta = json.loads((prep.directory / "meta.json").read_text())
    assert meta == prep.meta
    assert meta["dtype"] == "uint16" and prep.dtype == np.uint16
    for split, stories in (("train", train), ("val", val)):
        info = meta["splits"][split]
        # one token per character plus one EOS per story
        assert info["tokens"] == sum(map(len, stories)) + len(stories)
        assert info["stories"] == len(stories)
        assert info["bytes"] == sum(len(s.encode("utf-8")) for s in stories)
    tok = prep.tokenizer
    assert meta["tokenizer"] == {"kind": "char", "fingerprint": tok.fingerprint, "vocab_size": tok.vocab_size,
                                 "eos_id": 0, "path": "tokenizer"}
    assert tok.vocab_size == 2 + len(set("".join(train)))  # learned from train only
    assert meta["source"]["description"] == f"local:{tiny_corpus.resolve()}"
    assert "file names" in meta["split_rule"]
    assert prep.directory.name.startswith("tiny-char-all-")


def test_token_files_decode_back_to_the_stories(char_prepared, tiny_corpus):
    _, prep = char_prepared
    train = _stories(tiny_corpus / "tinystories_train.txt")
    tf = TokenFile(prep.train_path, prep.dtype)
    assert len(tf) == prep.meta["splits"]["train"]["tokens"]
    n = len(train[0]) + 1 + len(train[1]) + 1
    assert prep.tokenizer.decode(tf.tokens[:n].tolist()) == f"{train[0]}<|endoftext|>{train[1]}<|endoftext|>"
    assert int(tf.tokens[-1]) == prep.tokenizer.eos_id
    assert int((tf.tokens == prep.tokenizer.eos_id).sum()) == 24
    # validation characters never seen in train become <unk> (id 1), not errors
    val = _stories(tiny_corpus / "tinystories_valid.txt")
    seen = set("".join(train))
    unseen = sum(ch not in seen for s in val for ch in s)
    assert unseen > 0 and int((TokenFile(prep.val_path, prep.dtype).tokens == 1).sum()) == unseen


def test_shared_excerpt_token_counts_match_data_md(tinystories_dir, tmp_path):
    cfg = Config(data=DataConfig(data_dir=str(tinystories_dir), tokenizer="char", cache_dir=str(tmp_path)))
    prep = prepare_data(cfg)
    assert prep.meta["splits"]["train"]["tokens"] == 3455485
    assert (prep.meta["splits"]["train"]["stories"], prep.meta["splits"]["val"]["stories"]) == (4042, 800)
    assert prep.directory.name.startswith("tinystories-char-all-")


def test_second_call_reuses_and_incomplete_folder_rebuilds(char_prepared):
    cfg, prep = char_prepared
    mtime = prep.train_path.stat().st_mtime_ns
    again = prepare_data(cfg)
    assert again.directory == prep.directory and again.meta == prep.meta
    assert prep.train_path.stat().st_mtime_ns == mtime  # not rewritten
    assert again.tokenizer.fingerprint == prep.tokenizer.fingerprint
    # a folder whose token file is truncated (an interrupted write) is not complete: rebuilt
    with prep.val_path.open("r+b") as fh:
        fh.truncate(10)
    rebuilt = prepare_data(cfg)
    assert rebuilt.meta["splits"] == prep.meta["splits"] and rebuilt.meta["created"] >= prep.meta["created"]
    assert prep.val_path.stat().st_size == 2 * prep.meta["splits"]["val"]["tokens"]


def test_fingerprint_mismatch_is_refused(char_prepared, tmp_path):
    _, prep = char_prepared
    check_fingerprint(prep.meta, load_tokenizer(prep.directory / "tokenizer"))  # the matching one passes
    other = build_tokenizer(DataConfig(tokenizer="char"), ["abc"])
    with pytest.raises(UserError, match="different tokenizer"):
        check_fingerprint(prep.meta, other)


def _check_small_prepare(prep, train: list[str]) -> None:
    """Token counts re-derived story by story, and the first story decodes back."""
    expected = sum(len(prep.tokenizer.encode(s)) + 1 for s in train)
    assert prep.meta["splits"]["train"]["tokens"] == expected
    assert prep.meta["splits"]["train"]["stories"] == len(train)
    tokens = TokenFile(prep.train_path, prep.dtype).tokens
    first = int(np.argmax(tokens == prep.tokenizer.eos_id))
    assert prep.tokenizer.decode(tokens[:first].tolist()) == train[0]


def test_bpe_prepare_small(tiny_corpus, tmp_path):
    cfg = Config(data=DataConfig(tokenizer="bpe", bpe_vocab_size=300, data_dir=str(tiny_corpus),
                                 cache_dir=str(tmp_path), max_stories=10))
    bpe = prepare_data(cfg)
    assert bpe.directory.name.startswith("tiny-bpe300-n10-")
    assert bpe.meta["tokenizer"]["vocab_size"] == 300 and bpe.meta["dtype"] == "uint16"
    assert bpe.meta["splits"]["val"]["stories"] == 10
    train = _stories(tiny_corpus / "tinystories_train.txt")[:10]
    _check_small_prepare(bpe, train)
    assert bpe.meta["splits"]["train"]["tokens"] < sum(len(s) + 1 for s in train)  # merges shorten the text


def test_gpt2_prepare_small(tinystories_dir, gpt2_bpe_dir, tmp_path):
    cfg = Config(data=DataConfig(tokenizer="gpt2", tokenizer_dir=str(gpt2_bpe_dir), data_dir=str(tinystories_dir),
                                 cache_dir=str(tmp_path), max_stories=40))
    gpt2 = prepare_data(cfg)
    assert gpt2.meta["tokenizer"]["eos_id"] == 50256 and gpt2.meta["dtype"] == "uint16"
    _check_small_prepare(gpt2, _stories(tinystories_dir / "tinystories_train.txt")[:40])


def test_token_dtype():
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


def test_validation_chars_unseen_in_train_become_unk(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.txt").write_text("ab\n<|endoftext|>\nba\n<|endoftext|>\n")
    (tmp_path / "data" / "valid.txt").write_text("abz\n<|endoftext|>\n")
    cfg = Config(data=DataConfig(dataset="local", data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "c")))
    prep = prepare_data(cfg)
    assert TokenFile(prep.train_path).tokens.tolist() == [2, 3, 0, 3, 2, 0]
    assert TokenFile(prep.val_path).tokens.tolist() == [2, 3, 1, 0]  # z -> <unk>
    assert prep.meta["splits"]["val"] == {"file": "val.bin", "tokens": 4, "stories": 1, "bytes": 3}


@pytest.mark.parametrize("workers", [1, 3])
def test_num_workers_sets_the_tokenizing_threads(tiny_corpus, tmp_path, monkeypatch, workers):
    from tinygpt_mlx.tokenizers.base import Tokenizer

    calls = []
    real = Tokenizer.encode_batch

    def spy(self, texts):
        calls.append((len(texts), os.environ.get("TOKENIZERS_PARALLELISM")))
        return real(self, texts)

    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    data = dict(data_dir=str(tiny_corpus), tokenizer="bpe", bpe_vocab_size=300)
    auto = prepare_data(Config(data=DataConfig(cache_dir=str(tmp_path / "auto"), **data)))
    monkeypatch.setattr(Tokenizer, "encode_batch", spy)
    threaded = prepare_data(Config(data=DataConfig(cache_dir=str(tmp_path / "n"), num_workers=workers, **data)))
    # HF's pool is off while the threads run, so `workers` is the parallelism; the setting is restored after.
    assert calls == [(n, "false") for n in (*split_sizes(24, workers), *split_sizes(13, workers))]
    assert "TOKENIZERS_PARALLELISM" not in os.environ
    for split in ("train_path", "val_path"):
        assert getattr(threaded, split).read_bytes() == getattr(auto, split).read_bytes()


def split_sizes(n: int, parts: int) -> list[int]:
    size = -(-n // parts)
    return [min(size, n - i) for i in range(0, n, size)]


def test_negative_num_workers_is_refused():
    with pytest.raises(ConfigError, match=r"data.num_workers must be >= 0 \(0 = every core\), got -1"):
        from_dict({"data": {"num_workers": -1}})
