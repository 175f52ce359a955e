"""The knowledge-incorporation task on TinyStories: held-out stories split into a context and a target.

An item's context is the first half of a story's sentences and its target the rest. The model is scored
on the target after only a neutral prompt, so what it knows about the story must come from its weights:
exactly what a self-edit, trained in by the inner loop, can change. Stories are picked with a seeded
shuffle, so a run and its resume (and two runs with one seed) use the same items.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tinygpt_mlx.errors import UserError

if TYPE_CHECKING:
    from tinygpt_mlx.seal.config import SealConfig

# A sentence ends at . ! or ?, possibly inside a closing quote, before whitespace. Two fixed-width
# lookbehinds because Python's re has no variable-width one; the quote stays with its sentence. A
# lowercase word next ("Hi!" said Sue.) continues the sentence.
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"']))\s+(?=[\"'A-Z])")


def derive_seed(base: int, *parts: object) -> int:
    """A 31-bit seed from a base seed and labels, stable across processes (unlike hash())."""
    text = ":".join(str(p) for p in (base, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


def split_sentences(story: str) -> list[str]:
    """The story's sentences, whitespace-trimmed, in order."""
    return [s.strip() for s in _SENTENCE_END.split(story.strip()) if s.strip()]


@dataclass(frozen=True)
class Item:
    """One story of the task: its id (index into the split it came from), context and target text."""

    id: str
    context: str
    target: str


def split_story(story_id: str, story: str) -> Item | None:
    """First half of the sentences as context, the rest as target; None when under two sentences."""
    sentences = split_sentences(story)
    if len(sentences) < 2:
        return None
    half = len(sentences) // 2
    return Item(story_id, " ".join(sentences[:half]), " ".join(sentences[half:]))


@dataclass(frozen=True)
class Task:
    """Training contexts, held-out contexts and the general stories that measure forgetting."""

    train: list[Item]
    heldout: list[Item]
    forget: list[str]


def build_task(stories: Sequence[str], seal: SealConfig, seed: int) -> Task:
    """Pick n_train + n_heldout items and n_forget general stories from stories, seeded, without overlap."""
    order = list(range(len(stories)))
    random.Random(derive_seed(seed, "stories")).shuffle(order)
    need_items = seal.n_train_contexts + seal.n_heldout_contexts
    items: list[Item] = []
    forget: list[str] = []
    for index in order:
        if len(items) < need_items:
            if len(split_sentences(stories[index])) >= seal.min_sentences:
                item = split_story(f"story-{index}", stories[index])
                if item is not None:
                    items.append(item)
        elif len(forget) < seal.n_forget_stories:
            forget.append(stories[index])
        else:
            break
    if len(items) < need_items or len(forget) < seal.n_forget_stories:
        raise UserError(
            f"SEAL needs {need_items} stories with at least {seal.min_sentences} sentences plus "
            f"{seal.n_forget_stories} more for forgetting, but the {len(stories)} validation stories give "
            f"{len(items)} and {len(forget)}; lower seal.n_train_contexts / n_heldout_contexts / "
            "n_forget_stories or point data.data_dir at more stories"
        )
    return Task(items[: seal.n_train_contexts], items[seal.n_train_contexts:], forget)
