"""Seeded generations from a checkpoint, as the records of samples.jsonl."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tinygpt_mlx.config import EvalConfig
from tinygpt_mlx.generate import Generator, TextTokenizer, encode_prompt


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


def sample_records(model: Any, tokenizer: TextTokenizer, eval_cfg: EvalConfig, seed: int,
                   checkpoint: str, step: int) -> list[dict[str, Any]]:
    """eval_cfg.sample_n generations with seeds seed, seed+1, ...: the same seeds for every checkpoint."""
    records = []
    for i in range(eval_cfg.sample_n):
        gen = Generator(model, encode_prompt(tokenizer, eval_cfg.sample_prompt), eval_cfg.sample_max_new_tokens,
                        eval_cfg.sample_temperature, eval_cfg.sample_top_k, eval_cfg.sample_top_p, seed + i,
                        tokenizer.eos_id)
        ids = list(gen)
        records.append(asdict(SampleRecord(
            checkpoint=checkpoint, step=step, prompt=eval_cfg.sample_prompt, completion=tokenizer.decode(ids),
            temperature=eval_cfg.sample_temperature, top_k=eval_cfg.sample_top_k, top_p=eval_cfg.sample_top_p,
            seed=seed + i, max_new_tokens=eval_cfg.sample_max_new_tokens, new_tokens=len(ids))))
    return records
