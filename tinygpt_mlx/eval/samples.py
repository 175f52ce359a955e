"""Generations from a checkpoint: streamed text for `tinygpt sample`, seeded records for samples.jsonl."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from tinygpt_mlx.config import EvalConfig
from tinygpt_mlx.generate import Generator, TextTokenizer, generate_tokens

REPLACEMENT = "\ufffd"  # what a decoder shows for an incomplete UTF-8 sequence


@dataclass
class SampleRecord:
    """One line of samples.jsonl."""

    checkpoint: str
    step: int
    prompt: str
    completion: str
    temperature: float
    top_k: int | None
    top_p: float | None
    seed: int | None
    max_new_tokens: int
    new_tokens: int


def prompt_ids(tokenizer: TextTokenizer, prompt: str) -> list[int]:
    """Token ids of the prompt; an empty prompt starts from EOS (the GPT-2 convention)."""
    ids = tokenizer.encode(prompt)
    if not ids and tokenizer.eos_id is not None:
        ids = [tokenizer.eos_id]
    return ids


def stream_text(tokenizer: TextTokenizer, tokens: Iterable[int]) -> Iterator[str]:
    """Text pieces as tokens arrive; a byte-level token that ends mid-character waits for the next one."""
    ids: list[int] = []
    shown = 0
    for token in tokens:
        ids.append(token)
        # Decoding the whole tail, not the single token, keeps multi-byte characters split across
        # byte-level BPE tokens intact; a trailing replacement char means the character is unfinished.
        text = tokenizer.decode(ids)
        if text.endswith(REPLACEMENT):
            continue
        if len(text) > shown:
            yield text[shown:]
            shown = len(text)
    text = tokenizer.decode(ids) if ids else ""
    if len(text) > shown:
        yield text[shown:]


def start_generation(model: Any, tokenizer: TextTokenizer, prompt: str, max_new_tokens: int,
                     temperature: float, top_k: int | None, top_p: float | None,
                     seed: int | None) -> Generator:
    """A token stream for prompt that stops at the tokenizer's EOS; `.stats` holds the timings."""
    return generate_tokens(model, prompt_ids(tokenizer, prompt), max_new_tokens, temperature, top_k, top_p,
                           seed, tokenizer.eos_id)


def sample_records(model: Any, tokenizer: TextTokenizer, eval_cfg: EvalConfig, seed: int,
                   checkpoint: str, step: int) -> list[dict[str, Any]]:
    """eval_cfg.sample_n generations with seeds seed, seed+1, ...: the same seeds for every checkpoint."""
    records = []
    for i in range(eval_cfg.sample_n):
        gen = start_generation(model, tokenizer, eval_cfg.sample_prompt, eval_cfg.sample_max_new_tokens,
                               eval_cfg.sample_temperature, eval_cfg.sample_top_k, eval_cfg.sample_top_p,
                               seed + i)
        ids = list(gen)
        records.append(asdict(SampleRecord(
            checkpoint=checkpoint, step=step, prompt=eval_cfg.sample_prompt, completion=tokenizer.decode(ids),
            temperature=eval_cfg.sample_temperature, top_k=eval_cfg.sample_top_k, top_p=eval_cfg.sample_top_p,
            seed=seed + i, max_new_tokens=eval_cfg.sample_max_new_tokens, new_tokens=len(ids))))
    return records
