"""Tokenizers: exact round trips, GPT-2 ids, fingerprints, save/load, and transformers compatibility."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinygpt_mlx.config import DataConfig
from tinygpt_mlx.data.sources import read_stories
from tinygpt_mlx.errors import UserError
from tinygpt_mlx.tokenizers import EOS_TOKEN, build_tokenizer, load_tokenizer
from tinygpt_mlx.tokenizers.gpt2 import load_gpt2

SAMPLES = [
    "Once upon a time, there was a little dog.",
    "Héllo wörld, café naïve — “quotes” 🙂🐶 日本語",
    "",
    "line one\nline two\n\n  indented\ttab\r\n",
    "   leading and trailing spaces   ",
]


@pytest.fixture(scope="module")
def corpus(tiny_corpus: Path) -> list[str]:
    """The samples plus the tiny corpus's stories: enough text for 300 BPE ids."""
    return SAMPLES + read_stories(tiny_corpus / "tinystories_train.txt")


@pytest.fixture(scope="module")
def gpt2(gpt2_bpe_dir: Path):
    return build_tokenizer(DataConfig(tokenizer="gpt2", tokenizer_dir=str(gpt2_bpe_dir)), [])


@pytest.fixture(scope="module")
def toks(corpus: list[str]):
    return {
        "char": build_tokenizer(DataConfig(tokenizer="char"), corpus),
        "bpe": build_tokenizer(DataConfig(tokenizer="bpe", bpe_vocab_size=300), corpus),
    }


def check_round_trip(tok, kind: str, text: str) -> None:
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert len(ids) == (len(text) if kind == "char" else len(ids))
    assert all(0 <= i < tok.vocab_size for i in ids)


@pytest.mark.parametrize("kind", ["char", "bpe"])
@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip_is_exact(toks, kind, text):
    check_round_trip(toks[kind], kind, text)


@pytest.mark.parametrize("text", SAMPLES)
def test_gpt2_round_trip_is_exact(gpt2, text):
    check_round_trip(gpt2, "gpt2", text)


def test_bpe_round_trips_text_it_never_saw(toks):
    text = "Ünïcödé ✓ Ωμέγα 🚀 never in the training corpus"
    ids = toks["bpe"].encode(text)
    assert toks["bpe"].decode(ids) == text
    assert toks["bpe"].hf.token_to_id("<unk>") is None  # byte-level: nothing is unknown


def test_gpt2_known_ids(gpt2):
    tok = gpt2
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode(" The quick brown fox") == [383, 2068, 7586, 21831]
    assert tok.eos_id == 50256 and tok.vocab_size == 50257
    assert tok.encode("a<|endoftext|>b") == [64, 50256, 65]


def test_eos_and_sizes(toks, corpus):
    assert toks["char"].eos_id == 0 and toks["bpe"].eos_id == 0
    assert toks["bpe"].vocab_size == 300
    # char: <|endoftext|>, <unk>, then every distinct character of the corpus
    assert toks["char"].vocab_size == 2 + len(set("".join(corpus)))


def test_char_vocab_is_sorted_and_unknown_maps_to_unk():
    tok = build_tokenizer(DataConfig(tokenizer="char"), ["cab", "b a"])
    assert tok.encode(" abc") == [2, 3, 4, 5]  # ' ' < 'a' < 'b' < 'c' after the two specials
    assert tok.encode("azé") == [3, 1, 1]
    assert tok.decode([3, 1, 0]) == "a<unk>" + EOS_TOKEN


def test_fingerprint_stable_over_save_load_and_sensitive_to_vocab(toks, corpus, tmp_path):
    for kind, tok in toks.items():
        tok.save(tmp_path / kind)
        loaded = load_tokenizer(tmp_path / kind)
        assert loaded.kind == kind
        assert loaded.fingerprint == tok.fingerprint and len(tok.fingerprint) == 64
        assert loaded.vocab_size == tok.vocab_size and loaded.eos_id == tok.eos_id
        for text in SAMPLES:
            assert loaded.encode(text) == tok.encode(text)
        meta = json.loads((tmp_path / kind / "tinygpt_tokenizer.json").read_text())
        assert meta["kind"] == kind and meta["fingerprint"] == tok.fingerprint
        hf_cfg = json.loads((tmp_path / kind / "tokenizer_config.json").read_text())
        assert hf_cfg["tokenizer_class"] == "PreTrainedTokenizerFast" and hf_cfg["eos_token"] == EOS_TOKEN
    other_char = build_tokenizer(DataConfig(tokenizer="char"), ["xyz"])
    other_bpe = build_tokenizer(DataConfig(tokenizer="bpe", bpe_vocab_size=290), corpus)
    assert other_char.fingerprint != toks["char"].fingerprint
    assert other_bpe.fingerprint != toks["bpe"].fingerprint
    assert toks["char"].fingerprint != toks["bpe"].fingerprint
    # the same corpus gives the same tokenizer: training is deterministic
    assert build_tokenizer(DataConfig(tokenizer="bpe", bpe_vocab_size=300), corpus).fingerprint == \
        toks["bpe"].fingerprint


def test_gpt2_save_load_and_tokenizer_json(gpt2, tmp_path):
    gpt2.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.kind == "gpt2" and loaded.fingerprint == gpt2.fingerprint and len(gpt2.fingerprint) == 64
    assert (loaded.vocab_size, loaded.eos_id) == (gpt2.vocab_size, gpt2.eos_id)
    for text in SAMPLES:
        assert loaded.encode(text) == gpt2.encode(text)
    again = load_gpt2(tmp_path)  # the folder now holds tokenizer.json only
    assert again.fingerprint == gpt2.fingerprint
    assert again.encode("Hello world") == [15496, 995]


def test_gpt2_missing_file_is_one_line_user_error(tmp_path, gpt2_bpe_dir):
    (tmp_path / "vocab.json").write_bytes((gpt2_bpe_dir / "vocab.json").read_bytes())
    with pytest.raises(UserError, match="merges.txt") as err:
        load_gpt2(tmp_path)
    assert "\n" not in str(err.value)


def test_gpt2_without_tokenizer_dir_is_a_user_error():
    with pytest.raises(UserError, match="tokenizer_dir"):
        build_tokenizer(DataConfig(tokenizer="gpt2"), [])


def test_load_tokenizer_missing_folder(tmp_path):
    with pytest.raises(UserError, match="tokenizer.json"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_transformers_decodes_like_us(toks, kind, tmp_path):
    transformers = pytest.importorskip("transformers")
    tok = toks[kind]
    tok.save(tmp_path)
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    auto = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert auto.eos_token_id == tok.eos_id
    for text in SAMPLES:
        ids = tok.encode(text)
        assert hf.decode(ids) == tok.decode(ids) == text
        assert auto.encode(text, add_special_tokens=False) == ids
        assert auto.decode(ids) == text
