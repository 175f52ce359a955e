"""Streaming text pieces and seeded sample records."""

from __future__ import annotations

from tinygpt_mlx.config import EvalConfig
from tinygpt_mlx.eval.samples import prompt_ids, sample_records, stream_text
from tinygpt_mlx.tokenizers.char import train_char


class ByteTokenizer:
    """One token per UTF-8 byte, like byte-level BPE at its finest: characters can span tokens."""

    eos_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


def test_stream_text_waits_for_whole_characters() -> None:
    tok = ByteTokenizer()
    pieces = list(stream_text(tok, tok.encode("café ☕!")))
    assert "".join(pieces) == "café ☕!"
    assert "é" in pieces and "☕" in pieces  # never a half character on screen
    assert all("\ufffd" not in p for p in pieces)


def test_stream_text_char_tokenizer_one_piece_per_token() -> None:
    tok = train_char(["hello world"])
    assert list(stream_text(tok, tok.encode("hello"))) == ["h", "e", "l", "l", "o"]
    assert list(stream_text(tok, [])) == []


def test_empty_prompt_starts_from_eos() -> None:
    tok = train_char(["abc"])
    assert prompt_ids(tok, "") == [tok.eos_id]
    assert prompt_ids(tok, "ab") == tok.encode("ab")


def test_sample_records_reproducible(tiny_run, kit) -> None:
    from tinygpt_mlx.train.checkpoint import load_for_inference

    _, run = tiny_run
    model, tok, cfg, state = load_for_inference(run / "last")
    e = EvalConfig(sample_n=3, sample_max_new_tokens=10, sample_prompt="The", sample_temperature=1.0,
                   sample_top_k=5)
    a = sample_records(model, tok, e, seed=11, checkpoint="x", step=6)
    b = sample_records(model, tok, e, seed=11, checkpoint="x", step=6)
    assert a == b and [r["seed"] for r in a] == [11, 12, 13]
    assert len({r["completion"] for r in a}) > 1  # different seeds, different text
    assert all(r["top_k"] == 5 and 0 < r["new_tokens"] <= 10 for r in a)
