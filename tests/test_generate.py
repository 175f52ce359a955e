"""Sampling: top-k / top-p sets, seeded reproducibility, KV-cache greedy = full recompute, EOS, stats, streamed text."""

from __future__ import annotations

import math

import mlx.core as mx
import pytest

from tinygpt_mlx.config import ModelConfig
from tinygpt_mlx.generate import Generator, encode_prompt, filter_logits, generate_text, stream_text
from tinygpt_mlx.model import TinyGPT
from tinygpt_mlx.tokenizers.char import train_char

V = 50


def build(seed: int = 0, max_seq_len: int = 32, train: bool = False, sharp: bool = True) -> TinyGPT:
    mx.random.seed(seed)
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=4, max_seq_len=max_seq_len, tie_embeddings=False)
    model = TinyGPT(cfg, V)
    if sharp:
        # Random init gives near-uniform logits; a larger (untied, so not self-predicting) head makes
        # greedy choices clear-cut instead of decided by rounding noise.
        model.lm_head.weight = model.lm_head.weight * 30
    model.train() if train else model.eval()
    return model


def kept(logits: mx.array) -> set[int]:
    return {i for i, v in enumerate(logits.tolist()) if v != -math.inf}


def log_probs(probs: list[float]) -> mx.array:
    return mx.log(mx.array(probs))


def test_top_k_keeps_exactly_the_k_largest():
    logits = mx.array([0.1, 2.0, -1.0, 3.0, 0.5, 2.5])
    out = filter_logits(logits, top_k=3)
    assert kept(out) == {1, 3, 5}
    assert out[3].item() == 3.0  # survivors keep their values
    assert kept(filter_logits(logits, top_k=1)) == {3}
    assert kept(filter_logits(logits, top_k=100)) == set(range(6))


def test_top_k_ties_are_deterministic_lower_id_first():
    logits = mx.array([1.0, 5.0, 5.0, 5.0, 0.0])
    assert kept(filter_logits(logits, top_k=2)) == {1, 2}


def test_top_k_batched_rows_independent():
    logits = mx.array([[0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0]])
    out = filter_logits(logits, top_k=2)
    assert kept(out[0]) == {2, 3} and kept(out[1]) == {0, 1}


@pytest.mark.parametrize(
    "p, expected",
    [(0.7, {0, 1}), (0.8, {0, 1}), (0.81, {0, 1, 2}), (0.5, {0}), (0.3, {0}), (1.0, {0, 1, 2, 3})],
)
def test_top_p_keeps_smallest_set_reaching_p(p, expected):
    assert kept(filter_logits(log_probs([0.5, 0.3, 0.1, 0.1]), top_p=p)) == expected


def test_top_p_order_independent_of_position():
    # the same distribution shuffled: the kept set follows the probabilities, not the ids
    assert kept(filter_logits(log_probs([0.1, 0.3, 0.1, 0.5]), top_p=0.8)) == {1, 3}


def test_top_k_then_top_p_renormalises():
    # top-2 leaves {0: 0.5, 1: 0.3} -> renormalised 0.625 / 0.375; p = 0.6 keeps only token 0
    assert kept(filter_logits(log_probs([0.5, 0.3, 0.1, 0.1]), top_k=2, top_p=0.6)) == {0}


def test_filter_rejects_bad_arguments():
    with pytest.raises(ValueError):
        filter_logits(mx.zeros((4,)), top_k=0)
    with pytest.raises(ValueError):
        filter_logits(mx.zeros((4,)), top_p=0.0)


def test_seeded_sampling_reproducible():
    model = build(sharp=False)  # near-uniform over 50 tokens: two seeds agreeing on 20 draws is ~impossible
    prompt = [1, 2, 3]
    a = list(Generator(model, prompt, 20, temperature=1.0, seed=7))
    mx.random.seed(999)  # the global RNG state must not matter
    mx.random.uniform(shape=(10,))
    b = list(Generator(model, prompt, 20, temperature=1.0, seed=7))
    c = list(Generator(model, prompt, 20, temperature=1.0, seed=8))
    assert a == b
    assert len(a) == 20
    assert a != c


def test_sampling_respects_top_k_1():
    model = build()
    greedy = list(Generator(model, [4, 5], 10, temperature=0))
    assert list(Generator(model, [4, 5], 10, temperature=1.5, top_k=1, seed=3)) == greedy


def greedy_by_recompute(model: TinyGPT, prompt: list[int], n: int) -> list[int]:
    ids = list(prompt)
    for _ in range(n):
        window = ids[-model.max_seq_len:]
        ids.append(mx.argmax(model(mx.array([window]))[0, -1]).item())
    return ids[len(prompt):]


def test_kv_cache_greedy_equals_full_recompute():
    model = build()
    prompt = [3, 1, 4, 1, 5]
    out = list(Generator(model, prompt, 20, temperature=0))
    assert out == greedy_by_recompute(model, prompt, 20)
    assert len(set(out)) > 1  # not a degenerate constant stream


@pytest.mark.parametrize("prompt_len", [5, 14])  # cache fills mid-way; prompt longer than the context
def test_generation_past_max_seq_len_slides_window(prompt_len):
    model = build(max_seq_len=12)
    prompt = list(range(7, 7 + prompt_len))
    out = list(Generator(model, prompt, 15, temperature=0))
    assert out == greedy_by_recompute(model, prompt, 15)


def test_eos_stops_and_is_not_yielded():
    model = build()
    free = list(Generator(model, [1, 2], 20, temperature=0))
    eos = free[5]
    first = free.index(eos)
    stopped = list(Generator(model, [1, 2], 20, temperature=0, eos_id=eos))
    assert stopped == free[:first]


def test_stats_and_train_mode_restored():
    model = build(train=True)
    gen = Generator(model, [1, 2, 3, 4], 6, temperature=0)
    out = list(gen)
    s = gen.stats
    assert (s.prompt_tokens, s.generated_tokens, s.decode_steps) == (4, 6, 5)
    assert s.prefill_seconds > 0 and s.decode_seconds > 0
    assert s.prefill_tokens_per_s > 0 and s.decode_tokens_per_s > 0
    assert model.training  # generation ran in eval mode and put the mode back
    model.eval()
    assert out == list(Generator(model, [1, 2, 3, 4], 6, temperature=0))


def test_zero_new_tokens_and_empty_prompt():
    model = build()
    assert list(Generator(model, [1], 0)) == []
    with pytest.raises(ValueError):
        Generator(model, [], 5)


class ToyTokenizer:
    """Characters 'a'.. map to ids 0..; id 0 doubles as EOS."""

    eos_id = 0

    def encode(self, text: str) -> list[int]:
        return [ord(ch) - ord("a") for ch in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i + ord("a")) for i in ids)


def test_generate_text_returns_decoded_continuation():
    model = build()
    tok = ToyTokenizer()
    ids = [i for i in Generator(model, tok.encode("bcd"), 8, temperature=0, eos_id=0)]
    assert generate_text(model, tok, "bcd", max_new_tokens=8, temperature=0) == tok.decode(ids)
    # an empty prompt starts from EOS instead of failing
    assert isinstance(generate_text(model, tok, "", max_new_tokens=3, temperature=0), str)


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
    assert encode_prompt(tok, "") == [tok.eos_id]
    assert encode_prompt(tok, "ab") == tok.encode("ab")
