"""Sampling from TinyGPT: temperature, top-k, top-p, greedy at temperature 0, streamed token by token.

The one entry point: `Generator` streams new token ids (with `.stats`), `generate_text` returns the decoded
continuation of a text prompt, and `stream_text` turns a token stream into printable text pieces.

The prompt is prefilled once into a KV cache, then each step runs the model on one new token. Timings
of the two phases are kept apart (`GenerationStats`) because they measure different things: prefill is
a batched matmul over the prompt, decode is latency-bound, one token at a time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import mlx.core as mx

from tinygpt_mlx.model import TinyGPT

# A kept set whose mass reaches top_p up to float32 rounding of the cumulative sum counts as reaching it,
# so probabilities [0.5, 0.3, ...] with p = 0.8 keep two tokens even if 0.5 + 0.3 rounds to 0.79999995.
TOP_P_TOLERANCE = 1e-6
REPLACEMENT = "\ufffd"  # what a decoder shows for an incomplete UTF-8 sequence


class TextTokenizer(Protocol):
    """What generate_text needs from a tokenizer."""

    eos_id: int | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


def filter_logits(logits: mx.array, top_k: int | None = None, top_p: float | None = None) -> mx.array:
    """Set every logit outside the top-k and then the top-p (nucleus) set to -inf; shape [V] or [B, V]."""
    if top_k is None and top_p is None:
        return logits
    # argsort is stable, so among equal logits the lower token id ranks first: ties are deterministic.
    order = mx.argsort(-logits, axis=-1)
    keep = mx.ones(logits.shape, dtype=mx.bool_)
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        ranks = mx.argsort(order, axis=-1)  # inverse permutation: rank of each token id
        keep = ranks < top_k
    if top_p is not None:
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        # Nucleus over the survivors of top-k: renormalise, then keep tokens whose preceding mass is < p.
        # The most likely token has preceding mass 0, so at least one token always survives.
        masked = mx.where(keep, logits, -mx.inf)
        sorted_probs = mx.softmax(mx.take_along_axis(masked, order, axis=-1), axis=-1)
        before = mx.cumsum(sorted_probs, axis=-1, inclusive=False)
        keep_sorted = before < top_p - TOP_P_TOLERANCE
        keep = keep & mx.put_along_axis(mx.zeros(logits.shape, dtype=mx.bool_), order, keep_sorted, axis=-1)
    return mx.where(keep, logits, -mx.inf)


@dataclass
class GenerationStats:
    """Token counts and wall-clock time of the prefill and decode phases of one generation."""

    prompt_tokens: int = 0
    """Tokens run through the prefill (the prompt, cropped to its last max_seq_len tokens)."""
    generated_tokens: int = 0
    """Tokens yielded (an EOS that stopped generation is not counted)."""
    prefill_seconds: float = 0.0
    """Prompt forward pass plus sampling the first new token."""
    decode_seconds: float = 0.0
    """Wall time from the first new token to the last (the consumer's time between tokens included)."""
    decode_steps: int = 0
    """Forward passes after the prefill (one per token after the first)."""

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_steps / self.decode_seconds if self.decode_seconds > 0 else 0.0


class Generator:
    """Iterator over new token ids; `.stats` fills in while it runs and is complete once it stops."""

    def __init__(
        self,
        model: TinyGPT,
        prompt_ids: list[int],
        max_new_tokens: int,
        temperature: float = 0.8,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        eos_id: int | None = None,
    ):
        if not prompt_ids:
            raise ValueError("the prompt must hold at least one token")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.model = model
        self.prompt_ids = list(prompt_ids)
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_k, self.top_p = top_k, top_p
        self.eos_id = eos_id
        # An explicit key, split once per sampled token: the same seed gives the same tokens whatever
        # the global RNG has been through. seed=None draws from the global mx.random state instead.
        self._key = mx.random.key(seed) if seed is not None else None
        self.stats = GenerationStats()
        self._tokens = self._run()

    def __iter__(self) -> Generator:
        return self

    def __next__(self) -> int:
        return next(self._tokens)

    def _sample(self, logits: mx.array) -> mx.array:
        """Pick the next token from last-position logits [1, V], lazily (a [1] array)."""
        logits = logits.astype(mx.float32)
        if self.temperature == 0:
            return mx.argmax(logits, axis=-1)
        logits = filter_logits(logits / self.temperature, self.top_k, self.top_p)
        if self._key is None:
            return mx.random.categorical(logits)
        self._key, sub = mx.random.split(self._key)
        return mx.random.categorical(logits, key=sub)

    def _run(self) -> Iterator[int]:
        if self.max_new_tokens <= 0:
            return
        model, stats = self.model, self.stats
        limit = model.max_seq_len
        ids = list(self.prompt_ids)
        was_training = model.training
        model.eval()  # no dropout while sampling; the previous mode is restored when the stream ends
        try:
            cache = model.make_cache()
            window = ids[-limit:]
            start = time.perf_counter()
            next_token = self._sample(model(mx.array([window]), cache)[:, -1, :])
            mx.async_eval(next_token)
            stats.prompt_tokens = len(window)
            decode_start = None
            while True:
                pending = None
                if stats.generated_tokens + 1 < self.max_new_tokens and cache[0].offset < limit:
                    # Build and queue the following token's forward before waiting for this one, as mlx-lm's
                    # generate_step does: graph construction in Python then overlaps the model's compute.
                    pending = self._sample(model(next_token.reshape(1, 1), cache)[:, -1, :])
                    mx.async_eval(pending)
                token = next_token.item()
                if decode_start is None:
                    stats.prefill_seconds = time.perf_counter() - start
                    # Decode time is wall time from the first token on, the caller's time between tokens
                    # included: with the next forward queued, the two overlap and cannot be told apart.
                    decode_start = time.perf_counter()
                else:
                    stats.decode_seconds = time.perf_counter() - decode_start
                    stats.decode_steps += 1
                if token == self.eos_id:
                    return  # EOS ends the stream and is not yielded: callers get only content tokens
                stats.generated_tokens += 1
                yield token
                ids.append(token)
                if stats.generated_tokens >= self.max_new_tokens:
                    return
                if pending is None:
                    # The learned position table ends at max_seq_len, so once the cache is full we slide
                    # the window: recompute the last max_seq_len tokens without a cache (as nanoGPT does).
                    # Slower per token, but every step still sees a full context.
                    pending = self._sample(model(mx.array([ids[-limit:]]))[:, -1, :])
                next_token = pending
        finally:
            if was_training:
                model.train()


def encode_prompt(tokenizer: TextTokenizer, prompt: str) -> list[int]:
    """Token ids of a text prompt; an empty prompt starts from EOS (the GPT-2 convention)."""
    ids = tokenizer.encode(prompt)
    if not ids and tokenizer.eos_id is not None:
        ids = [tokenizer.eos_id]
    return ids


def prompt_notices(tokenizer: TextTokenizer, prompt: str, context: int) -> list[str]:
    """One line for each way the model will not see the prompt as typed: unknown characters, a cut to the context."""
    notes = []
    ids = tokenizer.encode(prompt)
    if tokenizer.decode(ids) != prompt:
        unknown = sorted(ch for ch in set(prompt) if tokenizer.decode(tokenizer.encode(ch)) != ch)
        if unknown:
            shown = ", ".join(repr(ch) for ch in unknown[:10]) + (", ..." if len(unknown) > 10 else "")
            notes.append(f"the tokenizer does not know {len(unknown)} character(s) of the prompt ({shown}); "
                         "the model sees <unk> in their place")
    if len(ids) > context:
        notes.append(f"the prompt is {len(ids)} tokens; the model sees only the last {context} "
                     "(its model.max_seq_len)")
    return notes


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


def generate_text(
    model: TinyGPT,
    tokenizer: TextTokenizer,
    prompt: str,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
) -> str:
    """Generate a continuation of prompt (the new text only), stopping at the tokenizer's EOS."""
    new = Generator(model, encode_prompt(tokenizer, prompt), max_new_tokens, temperature, top_k, top_p, seed,
                    tokenizer.eos_id)
    return tokenizer.decode(list(new))
