"""The knowledge target: cloze items about facts a story's first half states, answered without it.

SEAL's paper scores knowledge incorporation by questions about the passage, answered without the passage
in the prompt. A TinyStories model answers no questions, so the items are cloze ones: in the second half
of a story (the target), the first occurrence of a word that its first half (the context) already used,
with the target's text before that word as the prompt. Words worth asking about are names (capitalised
inside a sentence of the context) and words rare across the stories (objects, places, what happened);
common words ("happy", "said") a model guesses without knowing the story are left out.

An item is right when greedy decoding writes exactly the word: the model's top token at every answer
position is the answer's token (greedy decoding of that prompt follows the same path) and the token after
it does not go on with letters ("Tommy" for "Tom"). All items of a context are scored in one forward pass.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import mlx.core as mx
import mlx.nn as nn

if TYPE_CHECKING:
    from tinygpt_mlx.tokenizers import Tokenizer

_WORD = re.compile(r"[A-Za-z]+")
MIN_WORD_CHARS = 3  # "a", "I", "he": never a fact of the story


@dataclass(frozen=True)
class ClozeItem:
    """A word of the target (its first occurrence) and the target text before it."""

    prefix: str
    word: str


def doc_freq(stories: Sequence[str]) -> dict[str, float]:
    """Share of the stories each lowercase word occurs in."""
    counts: Counter[str] = Counter()
    for story in stories:
        counts.update({w.lower() for w in _WORD.findall(story)})
    return {w: n / len(stories) for w, n in counts.items()} if stories else {}


def _names(text: str) -> set[str]:
    """Capitalised words that do not start a sentence (so are names, as "Roxy" in "a bird named Roxy")."""
    names = set()
    for m in _WORD.finditer(text):
        before = text[: m.start()].rstrip()
        if m.group()[0].isupper() and before and (before[-1].isalnum() or before[-1] == ","):
            names.add(m.group())
    return names


def make_items(context: str, target: str, freq: dict[str, float], max_doc_freq: float,
               limit: int) -> list[ClozeItem]:
    """Up to limit items from target about words first stated in context, in the target's order."""
    context_words = {w.lower() for w in _WORD.findall(context)}
    names = _names(context)
    items, asked = [], set()
    for m in _WORD.finditer(target):
        word, low = m.group(), m.group().lower()
        if len(items) >= limit or low in asked or len(word) < MIN_WORD_CHARS:
            continue
        asked.add(low)  # only the first occurrence: a later one has the answer in its own prompt
        if low in context_words and (word in names or freq.get(low, 0.0) <= max_doc_freq):
            items.append(ClozeItem(target[: m.start()], word))
    return items


def cloze_ids(tokenizer: Tokenizer, lead: list[int], text: str, word: str) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids): lead then text; the space before the word goes with the answer, as BPE has it."""
    stripped = text.rstrip()
    space = " " if stripped != text else ""
    return [*lead, *tokenizer.encode(stripped)], tokenizer.encode(space + word)


@dataclass(frozen=True)
class ClozeBatch:
    """A context's items as one padded batch: ids [n, T], answer positions and tokens, the boundary check."""

    ids: mx.array
    positions: mx.array  # [n, A + 1]: where the answer tokens and the token after them are predicted
    answers: mx.array  # [n, A]
    mask: mx.array  # [n, A]: 1 on real answer tokens
    boundary: mx.array  # [n]: position predicting the token after the answer
    letter_tokens: mx.array  # [V]: 1 where a token starts with a letter (it would go on with the word)

    @property
    def size(self) -> int:
        """Number of items."""
        return self.ids.shape[0]


def letter_tokens(tokenizer: Tokenizer) -> mx.array:
    """[V] mask of the tokens whose text starts with a letter."""
    texts = tokenizer.hf.decode_batch([[i] for i in range(tokenizer.vocab_size)], skip_special_tokens=False)
    return mx.array([float(text[:1].isalpha()) for text in texts])


def build_batch(pairs: Sequence[tuple[list[int], list[int]]], max_len: int, letters: mx.array,
                pad_id: int) -> ClozeBatch | None:
    """The batch of (prompt, answer) pairs, each cropped from the left to max_len tokens; None when empty."""
    pairs = [(p, a) for p, a in pairs if p and a]
    if not pairs:
        return None
    rows, positions, answers, mask, boundary = [], [], [], [], []
    width = max(len(a) for _, a in pairs)
    for prompt, answer in pairs:
        ids = [*prompt, *answer][-max_len:]
        first = len(ids) - len(answer) - 1  # position whose logits predict the answer's first token
        rows.append(ids)
        pos = [first + j for j in range(len(answer) + 1)]
        positions.append(pos + [pos[-1]] * (width - len(answer)))
        answers.append([*answer, *[0] * (width - len(answer))])
        mask.append([1.0] * len(answer) + [0.0] * (width - len(answer)))
        boundary.append(pos[-1])
    length = max(len(r) for r in rows)
    # Right padding: causal attention keeps the real positions blind to it.
    padded = [[*r, *[pad_id] * (length - len(r))] for r in rows]
    return ClozeBatch(mx.array(padded), mx.array(positions), mx.array(answers), mx.array(mask),
                      mx.array(boundary), letters)


def correct(model: nn.Module, batch: ClozeBatch) -> list[bool]:
    """Per item: does greedy decoding write exactly the answer word?"""
    top = mx.argmax(model(batch.ids), axis=-1)  # [n, T]
    picked = mx.take_along_axis(top, batch.positions, axis=1)  # [n, A + 1]
    width = batch.answers.shape[1]
    tokens_right = ((picked[:, :width] == batch.answers) | (batch.mask == 0)).all(axis=1)
    after = mx.take_along_axis(top, batch.boundary[:, None], axis=1)[:, 0]
    word_ends = batch.letter_tokens[after] == 0
    return (tokens_right & word_ends).tolist()


def accuracy(model: nn.Module, batch: ClozeBatch | None) -> float | None:
    """Share of the batch's items answered right (None without items)."""
    if batch is None:
        return None
    right = correct(model, batch)
    return sum(right) / len(right)
