"""Self-edits: the text a model writes about a context, from a template, to be trained on by the inner loop.

SEAL's self-edits for knowledge incorporation are "implications" of a passage written by an instruction
model. A TinyStories model follows no instructions, so the templates are story-shaped: it continues the
context, retells it as a new story right after it (a small model reuses the names and things it has just
seen), or goes on from "This means that". Any text with `{context}` is a template too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tinygpt_mlx.generate import Generator

if TYPE_CHECKING:
    from tinygpt_mlx.model import TinyGPT
    from tinygpt_mlx.tokenizers import Tokenizer

TEMPLATES: dict[str, str] = {
    "continuation": "{context}",
    "restatement": "{context}<|endoftext|>Once upon a time",
    "implications": "{context} This means that",
}


def template_text(template: str) -> str:
    """The template's text: a named template, or the given text itself."""
    return TEMPLATES.get(template, template)


def prompt_ids(tokenizer: Tokenizer, template: str, context: str) -> list[int]:
    """Token ids of the self-edit prompt: EOS (a story boundary) then the filled template."""
    # str.replace, not str.format: stories may contain braces.
    return [tokenizer.eos_id, *tokenizer.encode(template_text(template).replace("{context}", context))]


@dataclass(frozen=True)
class SelfEdit:
    """One sampled self-edit: its template, the prompt ids, the sampled ids (no EOS) and their text."""

    template: str
    prompt: list[int]
    ids: list[int]
    text: str


def sample_edit(policy: TinyGPT, tokenizer: Tokenizer, context: str, template: str, max_tokens: int,
                temperature: float, top_p: float | None, seed: int) -> SelfEdit:
    """Sample one self-edit for context from policy (seeded: the same seed gives the same ids)."""
    ids = prompt_ids(tokenizer, template, context)
    new = list(Generator(policy, ids, max_tokens, temperature=temperature, top_p=top_p, seed=seed,
                         eos_id=tokenizer.eos_id))  # EOS ends the stream and is not among the ids
    # The ids are kept as sampled: decoding and re-encoding would merge or split tokens at the prompt's
    # edge (byte-level BPE's " He" becomes "He" once stripped), and the policy must learn what it wrote.
    return SelfEdit(template, ids, new, tokenizer.decode(new).strip())


def inner_ids(edit: SelfEdit, tokenizer: Tokenizer, include_context: bool) -> list[int]:
    """What the inner loop trains on: the sampled sequence (passage, template, self-edit), or the self-edit alone."""
    if include_context:
        return [*edit.prompt, *edit.ids]
    # Alone, the self-edit is a document of its own: EOS, then its text as a story would start.
    return [tokenizer.eos_id, *tokenizer.encode(edit.text)]
