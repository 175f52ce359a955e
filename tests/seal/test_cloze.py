"""Cloze items (the knowledge target) and their greedy exact-match scoring."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import pytest

from tinygpt_mlx.generate import Generator
from tinygpt_mlx.seal.cloze import (
    ClozeItem,
    accuracy,
    build_batch,
    cloze_ids,
    correct,
    doc_freq,
    letter_tokens,
    make_items,
)

CONTEXT = "One day, a girl named Mia found a red kite in the park. Mia was happy."
TARGET = "She ran to the park. Mia flew the kite. Her mom was happy. The kite went up."


def test_items_ask_for_names_and_rare_words_first_stated_in_the_context():
    freq = {"park": 0.05, "kite": 0.01, "happy": 0.5, "mom": 0.3, "she": 0.6, "the": 1.0, "mia": 0.2, "was": 0.9}
    items = make_items(CONTEXT, TARGET, freq, max_doc_freq=0.1, limit=8)
    # "park" and "kite" are rare words of the context; "Mia" is a name (capitalised after "named"), however
    # common; "happy" is too common; "mom" is not in the context; "She"/"The" start sentences only.
    assert items == [ClozeItem("She ran to the ", "park"), ClozeItem("She ran to the park. ", "Mia"),
                     ClozeItem("She ran to the park. Mia flew the ", "kite")]
    # Only a word's first occurrence: the later "kite" would find the answer in its own prompt.
    assert [i.word for i in make_items(CONTEXT, TARGET, freq, 0.1, limit=2)] == ["park", "Mia"]
    assert make_items(CONTEXT, TARGET, freq, 0.1, limit=0) == []


def test_doc_freq_counts_stories_not_occurrences():
    assert doc_freq(["The dog. The dog.", "A cat and the dog."]) == {"the": 1.0, "dog": 1.0, "a": 0.5, "cat": 0.5,
                                                                     "and": 0.5}


def test_the_space_before_the_word_belongs_to_the_answer(tokenizer):
    prompt, answer = cloze_ids(tokenizer, [tokenizer.eos_id], "She ran to the ", "park")
    assert prompt == [tokenizer.eos_id, *tokenizer.encode("She ran to the")]
    assert answer == tokenizer.encode(" park")
    prompt, answer = cloze_ids(tokenizer, [tokenizer.eos_id], "", "Mia")
    assert (prompt, answer) == ([tokenizer.eos_id], tokenizer.encode("Mia"))


class Successor(nn.Module):
    """A fake model whose top token after token t is always t + 1."""

    max_seq_len = 64

    def __call__(self, ids: mx.array) -> mx.array:
        return mx.eye(16)[(ids + 1) % 16] * 10.0


def test_an_item_is_right_when_greedy_decoding_writes_the_word_and_stops():
    letters = mx.array([0.0] * 16)
    letters[9] = 1.0  # token 9 starts with a letter: after it, the word would go on
    batch = build_batch([([1, 2, 3], [4, 5]),     # right: 4, 5, then 6 ends the word
                         ([1, 2, 3], [4, 6]),     # wrong second token
                         ([5, 6], [7, 8]),        # right tokens, but 9 would continue the word
                         ([2], [3]),              # right, one token
                         ([], [3])], 64, letters, pad_id=0)  # an empty prompt is no item
    assert batch.size == 4
    assert correct(Successor(), batch) == [True, False, False, True]
    assert accuracy(Successor(), batch) == 0.5
    assert build_batch([], 64, letters, 0) is None and accuracy(Successor(), None) is None


def test_long_prompts_are_cropped_from_the_left():
    batch = build_batch([(list(range(1, 12)), [12, 13])], max_len=6, letters=mx.zeros(16), pad_id=0)
    assert batch.ids.tolist() == [[8, 9, 10, 11, 12, 13]]
    assert correct(Successor(), batch) == [True]


def test_scoring_matches_greedy_generation(model, tokenizer):
    letters = letter_tokens(tokenizer)
    prompts = [[tokenizer.eos_id, *tokenizer.encode(text)] for text in ("Tom ran to the", "Once upon a", "Sue")]
    pairs = []
    for prompt in prompts:
        greedy = list(Generator(model, prompt, 4, temperature=0.0))
        pairs.append((prompt, greedy[:3]))  # the model's own greedy tokens: right unless the word goes on
        wrong = [(greedy[0] + 1) % tokenizer.vocab_size, *greedy[1:3]]
        pairs.append((prompt, wrong))
    batch = build_batch(pairs, model.max_seq_len, letters, tokenizer.eos_id)
    got = correct(model, batch)
    for (prompt, answer), right in zip(pairs, got, strict=True):
        greedy = list(Generator(model, prompt, len(answer) + 1, temperature=0.0))
        goes_on = tokenizer.decode(greedy[len(answer):])[:1].isalpha()
        assert right == (greedy[: len(answer)] == answer and not goes_on)
    assert got[1::2] == [False, False, False]


@pytest.mark.parametrize("text, expected", [("a", True), (" ", False), (".", False)])
def test_letter_tokens(tokenizer, text, expected):
    assert letter_tokens(tokenizer)[tokenizer.encode(text)[0]].item() == float(expected)
