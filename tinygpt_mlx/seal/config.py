"""The `seal` section of a config file: every SEAL knob, typed and validated with the base sections.

A SEAL config is a normal run config (model, data, runtime, ... as config.py defines them) plus a `seal`
section. The base sections go through config.from_dict untouched; the `seal` section is built by the same
config.build_section, so its keys read like any other, and problems from both come in one ConfigError.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tinygpt_mlx.config import (
    Config,
    ConfigError,
    apply_overrides,
    build_section,
    check_choice,
    check_seed,
    from_dict,
    read_file,
)
from tinygpt_mlx.lora import check_lora_args
from tinygpt_mlx.seal.edits import TEMPLATES

POLICY_MODES = ("lora", "full")
SELECT_AGAINST = ("none", "passage")


@dataclass
class SealConfig:
    enabled: bool = False
    """Master switch: `tinygpt seal adapt` refuses to run unless this is true (a long job is never started by default)."""
    init_from: str | None = None
    """Checkpoint to adapt (step folder, `last` link or run folder); `--init-from` overrides it."""
    run_dir: str = "results/seal"
    """Output folder: adapt.jsonl, seal_config.yaml, policy/round-N/, tables and plots."""
    seed: int | None = None
    """Seed for story selection, sampling and LoRA init; null takes runtime.seed."""
    rounds: int = 2
    """ReST^EM rounds R (round 0 is the base model and the baselines)."""
    k_edits: int = 3
    """Self-edits sampled per training context per round."""
    n_train_contexts: int = 50
    """Validation stories used as training contexts (the policy learns from these)."""
    n_heldout_contexts: int = 100
    """Further validation stories used only to evaluate every round."""
    n_forget_stories: int = 8
    """Further validation stories whose loss measures forgetting (0 disables forgetting)."""
    min_sentences: int = 4
    """Stories with fewer sentences are skipped (context and target each need at least two)."""
    max_context_tokens: int = 96
    """Context is cropped to this many tokens (it sits inside the self-edit prompt)."""
    max_target_tokens: int = 96
    """Target is cropped to this many tokens."""
    neutral_prompt: str = "<|endoftext|>"
    """What the model sees before the target when it is scored without the context."""
    templates: list[str] = field(default_factory=lambda: ["implications"])
    """Self-edit prompt templates: names from seal/edits.py or any text with {context}; used in turn."""
    include_context: bool = True
    """Inner loop on passage + self-edit (the sampled sequence, as the paper); false: the self-edit alone."""
    other_inner_text_row: bool = True
    """Also score the base model's held-out self-edits with the other inner-loop text, as a table row."""
    edit_max_tokens: int = 64
    """Longest self-edit the policy may write."""
    edit_temperature: float = 1.0
    """Sampling temperature of self-edits."""
    edit_top_p: float | None = 0.95
    """Nucleus filter of self-edits (null: none)."""
    eval_edits: int = 1
    """Self-edits per held-out context when a policy is evaluated (same seeds for every round)."""
    control_round: bool = True
    """Evaluate the frozen base policy once more with fresh sampling seeds: the noise floor between rounds."""
    cloze_items: int = 8
    """Most cloze items per context (words of its second half first stated in its first half); 0: none."""
    cloze_max_doc_freq: float = 0.1
    """A lowercase word found in more than this share of the stories is too common to test (names always count)."""
    inner_steps: list[int] = field(default_factory=lambda: [1, 3, 10])
    """Inner-loop step counts measured along one LoRA run; the largest one gives the reward."""
    inner_lr: float = 1e-3
    """Inner-loop Adam learning rate."""
    ranks: list[int] = field(default_factory=lambda: [4, 8])
    """LoRA ranks of the inner loop (one fresh adapter per rank per self-edit)."""
    reward_rank: int | None = None
    """Rank whose result is the reward; null takes the first of ranks."""
    lora_seeds: int = 3
    """Inner-loop runs per text, each with its own LoRA seed (shared by every method); results are averaged."""
    lora_modules: list[str] = field(default_factory=lambda: ["c_attn", "c_proj", "c_fc"])
    """Adapted layers: c_attn, c_proj, c_fc, attn.c_proj, mlp.c_proj; llama also {q,k,v,o,gate,up,down}_proj."""
    lora_last_k_layers: int | None = None
    """Adapt only the last k blocks; null adapts all."""
    lora_alpha: float = 16.0
    """LoRA alpha; the update is scaled by alpha / rank."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input while training."""
    forget_weight: float = 0.0
    """lambda: reward = delta loss - lambda x forgetting."""
    select_against: str = "none"
    """ReST keeps a context's best edit when its reward is > 0 (`none`, as the paper) or also > the passage's (`passage`)."""
    policy_mode: str = "lora"
    """How the policy is fine-tuned on kept self-edits: `lora` (one adapter grown over rounds) or `full`."""
    policy_rank: int = 8
    """LoRA rank of the policy adapter (policy_mode lora)."""
    policy_lr: float = 1e-4
    """Adam learning rate of the policy fine-tune."""
    policy_epochs: int = 2
    """Passes over the kept (prompt -> self-edit) pairs per round."""

    @property
    def chosen_rank(self) -> int:
        """The rank the reward is read at."""
        return self.reward_rank if self.reward_rank is not None else self.ranks[0]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def validate_seal(s: SealConfig) -> list[str]:
    """Every problem of a seal section (empty when sound)."""
    problems: list[str] = []
    for name in ("rounds", "k_edits", "n_train_contexts", "n_heldout_contexts", "max_context_tokens",
                 "max_target_tokens", "edit_max_tokens", "eval_edits", "policy_epochs", "lora_seeds"):
        if getattr(s, name) <= 0:
            problems.append(f"seal.{name} must be positive, got {getattr(s, name)}")
    for name in ("n_forget_stories", "forget_weight", "edit_temperature", "cloze_items"):
        if getattr(s, name) < 0:
            problems.append(f"seal.{name} must be >= 0, got {getattr(s, name)}")
    for name in ("inner_lr", "policy_lr"):
        if getattr(s, name) <= 0:
            problems.append(f"seal.{name} must be positive, got {getattr(s, name)}")
    problems.extend(check_seed("seal.seed", s.seed))
    if s.min_sentences < 2:
        problems.append(f"seal.min_sentences must be at least 2 (a context and a target), got {s.min_sentences}")
    if s.edit_top_p is not None and not 0.0 < s.edit_top_p <= 1.0:
        problems.append(f"seal.edit_top_p must be in (0, 1], got {s.edit_top_p}")
    if not s.inner_steps or any(n <= 0 for n in s.inner_steps):
        problems.append(f"seal.inner_steps must be a non-empty list of positive integers, got {s.inner_steps}")
    if not s.ranks or any(r <= 0 for r in s.ranks):
        problems.append(f"seal.ranks must be a non-empty list of positive integers (LoRA rank > 0), got {s.ranks}")
    if s.reward_rank is not None and s.reward_rank not in s.ranks:
        problems.append(f"seal.reward_rank ({s.reward_rank}) must be one of seal.ranks {s.ranks}")
    names = {"modules": "seal.lora_modules", "rank": "seal.policy_rank (LoRA rank)", "alpha": "seal.lora_alpha",
             "dropout": "seal.lora_dropout", "last_k_layers": "seal.lora_last_k_layers"}
    problems.extend(check_lora_args(s.lora_modules, s.policy_rank, s.lora_alpha, s.lora_dropout,
                                    s.lora_last_k_layers, names))
    problems.extend(check_choice("seal.policy_mode", s.policy_mode, POLICY_MODES))
    problems.extend(check_choice("seal.select_against", s.select_against, SELECT_AGAINST))
    if not 0.0 < s.cloze_max_doc_freq <= 1.0:
        problems.append(f"seal.cloze_max_doc_freq must be in (0, 1], got {s.cloze_max_doc_freq}")
    if not s.templates:
        problems.append("seal.templates must name at least one template")
    for t in s.templates:
        if t not in TEMPLATES and "{context}" not in t:
            problems.append(f"seal.templates: {t!r} is neither a template name ({', '.join(TEMPLATES)}) "
                            "nor a text containing {context}")
    return problems


def seal_from_dict(values: Any) -> tuple[SealConfig, list[str]]:
    """Build a SealConfig from the raw `seal` mapping; returns it with every problem found."""
    cfg, problems = build_section(SealConfig, values, "seal")
    if not problems:  # cross-field checks need sound types
        problems.extend(validate_seal(cfg))
    return cfg, problems


def split_config(raw: dict[str, Any]) -> tuple[Config, SealConfig]:
    """(base Config, SealConfig) from one raw mapping; all problems of both raise one ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError([f"a config must be a mapping of sections, got {type(raw).__name__}"])
    base_raw = {k: v for k, v in raw.items() if k != "seal"}
    seal, problems = seal_from_dict(raw.get("seal"))
    try:
        base = from_dict(base_raw)
    except ConfigError as err:
        problems = err.problems + problems
        base = None
    if problems:
        raise ConfigError(problems)
    return base, seal


def load_seal_config(path: str | Path | None, overrides: typing.Sequence[str] = ()) -> tuple[Config, SealConfig]:
    """Load a config file with a `seal` section, apply `section.key=value` overrides, validate all at once."""
    raw = read_file(path) if path else {}
    return split_config(apply_overrides(raw, overrides))


def dump_seal_config(cfg: Config, seal: SealConfig) -> str:
    """Both parts as one YAML document (what the run folder keeps as seal_config.yaml)."""
    return yaml.safe_dump({**cfg.to_dict(), "seal": seal.to_dict()}, sort_keys=False)
