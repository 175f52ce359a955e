"""Typed run configuration: dataclass sections, YAML/JSON loading, overrides, validation, dumping.

Every field carries its documentation in the docstring under it (docs/configuration.md lists them all).
`build_section` turns a raw mapping into any section dataclass (SEAL's too), so every key everywhere is
coerced and misspellings are caught the same way, and all problems of a config are reported at once.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tinygpt_mlx.config_file import FileProblem, parse_yaml, read_mapping_file, show
from tinygpt_mlx.interop.migrate import migrate_if_old

T = TypeVar("T")


class ConfigError(ValueError):
    """One or more user errors in a configuration; `problems` lists every one of them."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        if len(self.problems) == 1:
            super().__init__(f"config error: {self.problems[0]}")
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            super().__init__(f"{len(self.problems)} config errors:\n{lines}")


@dataclass
class ModelConfig:
    name: str = "tiny_gpt"
    """Model family name; only `tiny_gpt` exists (model.arch picks its architecture)."""
    arch: str = "gpt2"
    """`gpt2` (learned positions, LayerNorm, GELU MLP) or `llama` (RoPE, RMSNorm, SwiGLU MLP, no biases)."""
    vocab_size: int | None = None
    """Output vocabulary; null takes the tokenizer's size (it may be larger, never smaller)."""
    d_model: int = 256
    """Residual stream width."""
    n_layers: int = 4
    """Number of transformer blocks."""
    n_heads: int = 4
    """Attention heads per block; must divide d_model."""
    n_kv_heads: int | None = None
    """llama only: key/value heads (grouped-query attention); must divide n_heads; null = n_heads."""
    rope_theta: float = 10000.0
    """llama only: RoPE base frequency."""
    max_seq_len: int = 256
    """The longest context the model can see (gpt2: the learned position table's length)."""
    dropout: float = 0.0
    """Dropout on embeddings, attention output and MLP output (training only)."""
    tie_embeddings: bool = True
    """Share the token embedding with the output head (GPT-2 does)."""
    bias: bool = True
    """Biases in linear layers and layer norms (GPT-2 has them; llama never does)."""
    mlp_ratio: float = 4.0
    """MLP hidden width as a multiple of d_model, used when d_ff is null."""
    d_ff: int | None = None
    """Explicit MLP hidden width; overrides mlp_ratio."""
    layer_norm_eps: float = 1e-5
    """Epsilon of the LayerNorms (gpt2) or RMSNorms (llama)."""

    @property
    def hidden_dim(self) -> int:
        return self.d_ff if self.d_ff else int(round(self.mlp_ratio * self.d_model))


@dataclass
class DataConfig:
    dataset: str = "tinystories"
    """`tinystories` (Hugging Face hub unless data_dir/TINYGPT_DATA_DIR points at local files) or `local`."""
    data_dir: str | None = None
    """A .txt/.jsonl/.parquet file or a folder of them; stories in .txt are separated by <|endoftext|>."""
    tokenizer: str = "char"
    """`char`, `bpe` (byte-level BPE trained on the corpus) or `gpt2` (the GPT-2 vocabulary)."""
    bpe_vocab_size: int = 4096
    """Target vocabulary when training a BPE tokenizer."""
    tokenizer_dir: str | None = None
    """Folder with GPT-2 `vocab.json` + `merges.txt` (or `tokenizer.json`) for tokenizer: gpt2."""
    batch_size: int = 64
    """Global sequences per micro-batch, split over ranks under mlx.launch (x grad_accum_steps per step)."""
    block_size: int = 256
    """Tokens per training window; at most model.max_seq_len."""
    num_workers: int = 0
    """Threads that tokenize the corpus in `data prepare`: 0 = every core (HF's own pool), N = exactly N."""
    val_frac: float = 0.05
    """Validation share when the source has no validation split of its own."""
    split_seed: int = 1234
    """Seed of that split, so it never changes between runs."""
    max_stories: int | None = None
    """Cap on stories read per split (hub streaming reads only this many)."""
    streaming: bool = True
    """Stream from the hub instead of downloading the full dataset."""
    cache_dir: str = "data_cache"
    """Where prepared token files live (one folder per source x tokenizer)."""


@dataclass
class OptimConfig:
    optimizer: str = "adamw"
    """`adamw`, `adam` or `sgd`."""
    lr: float = 3e-4
    """Peak learning rate."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    """Adam betas."""
    weight_decay: float = 0.1
    """Decoupled weight decay (AdamW), applied to matrices only unless decay_all is set."""
    eps: float = 1e-8
    """Adam epsilon."""
    grad_clip: float = 1.0
    """Global gradient-norm clip; 0 disables."""
    momentum: float = 0.9
    """SGD momentum."""
    decay_all: bool = False
    """Also decay embeddings, norms and biases (off, as in GPT-2/nanoGPT)."""


@dataclass
class ScheduleConfig:
    max_steps: int | None = 2000
    """Optimizer steps to run; null means derive from epochs."""
    epochs: float | None = None
    """Passes over the training tokens, used when max_steps is null."""
    warmup_steps: int = 200
    """Linear warmup from 0 to optim.lr."""
    lr_schedule: str = "cosine"
    """After warmup: `cosine`, `linear` (both decay to min_lr) or `constant`."""
    min_lr: float = 3e-5
    """Learning rate at the last step."""


@dataclass
class RuntimeConfig:
    seed: int = 42
    """Seeds python, numpy and mlx, the batch sampler and dropout."""
    device: str = "auto"
    """`auto`, `cpu` or `gpu`."""
    amp: bool = False
    """Mixed precision where it is fast: bfloat16 on Metal and CUDA, float32 on a CPU (with a notice)."""
    precision: str = "float32"
    """Compute dtype: `float32`, `bfloat16` or `float16`; master weights and optimizer state stay float32."""
    grad_accum_steps: int = 1
    """Micro-batches accumulated inside one compiled step."""
    log_interval: int = 10
    """Steps between metric lines."""
    nonfinite: str = "abort"
    """On a non-finite loss or gradient: `abort`, or `skip` the update."""
    max_nonfinite: int = 5
    """With nonfinite: skip, give up after this many bad steps in a row."""
    compile: bool = True
    """Compile the train step with mx.compile."""
    backend: str = "mlx"
    """`mlx`, or `torch` for the PyTorch path (CUDA users)."""
    cpu_threads: int = 0
    """CPU only: split each micro-batch over this many threads (0 = auto, 1 = off); see cpu/lanes.py."""

    def compute_dtype(self, accelerator: bool) -> str:
        """The dtype the step computes in: `precision`, or bfloat16 under `amp` on a GPU."""
        if self.amp and self.precision == "float32":
            return "bfloat16" if accelerator else "float32"
        return self.precision


@dataclass
class CheckpointConfig:
    save_dir: str = "checkpoints/run"
    """Run folder: checkpoints, metrics.jsonl, run_config.yaml."""
    save_every: int = 500
    """Steps between periodic checkpoints (a final one is always written)."""
    keep_last_k: int = 3
    """Periodic checkpoints kept; `best` and the newest are never deleted."""
    best_by: str = "val_loss"
    """Eval metric that picks `best` (lower is better)."""


@dataclass
class EvalConfig:
    eval_every: int = 200
    """Steps between validation evals (and at the last step)."""
    eval_subset: int = 32768
    """Validation tokens per eval: a pinned set of windows, identical across runs and resumes."""
    sample_n: int = 2
    """Generations printed and logged at each eval."""
    sample_temperature: float = 0.8
    """Sampling temperature for those generations (0 = greedy)."""
    sample_max_new_tokens: int = 200
    """Length of each generation."""
    sample_prompt: str = "Once upon a time"
    """Prompt for the generations."""
    sample_top_k: int | None = None
    """Top-k filter for the generations."""
    sample_top_p: float | None = None
    """Nucleus filter for the generations."""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS: dict[str, type] = {f.name: f.type for f in dataclasses.fields(Config)}
_SECTION_TYPES = typing.get_type_hints(Config)

SEED_RANGE = (0, 2**32 - 1)  # what numpy and mlx accept as a seed
SHORT_RUN_STEPS = 100  # a run this short is a smoke test: a longer warmup is clamped to it, not refused
CHOICES: dict[str, tuple[str, ...]] = {
    "model.name": ("tiny_gpt",),
    "model.arch": ("gpt2", "llama"),
    "data.dataset": ("tinystories", "local"),
    "data.tokenizer": ("char", "bpe", "gpt2"),
    "optim.optimizer": ("adamw", "adam", "sgd"),
    "schedule.lr_schedule": ("cosine", "linear", "constant"),
    "runtime.device": ("auto", "cpu", "gpu"),
    "runtime.precision": ("float32", "bfloat16", "float16"),
    "runtime.nonfinite": ("abort", "skip"),
    "runtime.backend": ("mlx", "torch"),
}


def _did_you_mean(word: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_choice(dotted: str, value: Any, allowed: typing.Sequence[str]) -> list[str]:
    """[] when value is one of allowed, else the one problem, with a spelling hint."""
    if value in allowed:
        return []
    return [f"{dotted} = {value!r} is not one of {', '.join(allowed)}{_did_you_mean(str(value), allowed)}"]


def _name(key: Any) -> str:
    text = str(key)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
    """Convert a YAML/override value to the field's declared type, or record a problem."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none")):
            return None
        return _coerce(value, args[0], where, problems)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            problems.append(f"{where} must be a list, got {show(value)}")
            return value
        return [_coerce(v, inner, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
            return value.lower() in ("true", "yes", "on")
        problems.append(f"{where} must be true or false, got {show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            problems.append(f"{where} must be an integer, got {show(value)}")
            return value
        try:
            as_float = float(value)
        except ValueError:
            problems.append(f"{where} must be an integer, got {show(value)}")
            return value
        if not as_float.is_integer():
            problems.append(f"{where} must be an integer, got {show(value)}")
            return value
        return int(as_float)
    if tp is float:
        # YAML 1.1 reads `3e-4` (no dot) as a string, so accept numeric strings here.
        if isinstance(value, bool):
            problems.append(f"{where} must be a number, got {show(value)}")
            return value
        try:
            number = float(value)
        except (TypeError, ValueError):
            problems.append(f"{where} must be a number, got {show(value)}")
            return value
        if not math.isfinite(number):
            problems.append(f"{where} must be a finite number, got {show(value)}")
        return number
    if tp is str:
        if isinstance(value, (dict, list)):
            problems.append(f"{where} must be a string, got {show(value)}")
            return value
        if "\0" in str(value):
            problems.append(f"{where} must not hold a NUL character, got {show(value)}")
            return value
        return str(value)
    return value


def build_section(cls: type[T], raw: Any, prefix: str) -> tuple[T, list[str]]:
    """A `cls` section from its raw mapping, values coerced to the field types, with every problem found.

    Unknown keys get a spelling hint; a wrongly typed value keeps its default so later checks still run.
    Cross-field checks are the caller's (`validate`, `seal.config.validate_seal`).
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return cls(), [f"section '{prefix}' must be a mapping, got {show(raw)}"]
    hints = typing.get_type_hints(cls)
    problems: list[str] = []
    kwargs = {}
    for key, value in raw.items():
        if key not in hints:
            problems.append(f"unknown key '{prefix}.{_name(key)}'{_did_you_mean(str(key), hints)}")
            continue
        before = len(problems)
        coerced = _coerce(value, hints[key], f"{prefix}.{key}", problems)
        if len(problems) == before:
            kwargs[key] = coerced
    return cls(**kwargs), problems


def from_dict(raw: dict[str, Any]) -> Config:
    """Build a validated Config from a nested dict (missing keys take their defaults)."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise ConfigError([f"a config must be a mapping of sections, got {type(raw).__name__}"])
    sections = {}
    for name, values in raw.items():
        if name not in _SECTION_TYPES:
            problems.append(f"unknown section '{_name(name)}'{_did_you_mean(str(name), _SECTION_TYPES)}")
            continue
        sections[name], found = build_section(_SECTION_TYPES[name], values, name)
        problems.extend(found)
    cfg = Config(**sections)
    asked_warmup = cfg.schedule.warmup_steps
    try:
        problems.extend(validate(cfg))
    except TypeError:
        pass  # a wrongly typed value is already reported; cross-field checks need sound types

    if problems:
        raise ConfigError(problems)
    if cfg.schedule.warmup_steps != asked_warmup:  # only an accepted config gets notes
        print(f"note: schedule.warmup_steps {asked_warmup} clamped to this short run's {cfg.schedule.max_steps} "
              "steps", file=sys.stderr)
    return cfg


def validate(cfg: Config) -> list[str]:
    """Return every cross-field problem of a config (empty list when it is sound)."""
    problems: list[str] = []
    for dotted, allowed in CHOICES.items():
        section, key = dotted.split(".")
        problems.extend(check_choice(dotted, getattr(getattr(cfg, section), key), allowed))
    m, d, o, s, r = cfg.model, cfg.data, cfg.optim, cfg.schedule, cfg.runtime
    positive = {
        "model.d_model": m.d_model, "model.n_layers": m.n_layers, "model.n_heads": m.n_heads,
        "model.max_seq_len": m.max_seq_len, "data.batch_size": d.batch_size, "data.block_size": d.block_size,
        "optim.lr": o.lr, "runtime.grad_accum_steps": r.grad_accum_steps,
        "runtime.log_interval": r.log_interval, "checkpoint.save_every": cfg.checkpoint.save_every,
        "eval.eval_every": cfg.eval.eval_every, "eval.eval_subset": cfg.eval.eval_subset,
        "model.layer_norm_eps": m.layer_norm_eps, "model.mlp_ratio": m.mlp_ratio,
        "data.bpe_vocab_size": d.bpe_vocab_size, "runtime.max_nonfinite": r.max_nonfinite,
    }
    for name, optional in (("model.vocab_size", m.vocab_size), ("model.d_ff", m.d_ff),
                           ("schedule.max_steps", s.max_steps), ("schedule.epochs", s.epochs),
                           ("data.max_stories", d.max_stories)):
        if optional is not None:
            positive[name] = optional
    for name, value in positive.items():
        if isinstance(value, (int, float)) and value <= 0:
            problems.append(f"{name} must be positive, got {value}")
    if m.n_heads > 0 and m.d_model % m.n_heads != 0:
        problems.append(f"model.d_model ({m.d_model}) must be divisible by model.n_heads ({m.n_heads})")
    if m.n_kv_heads is not None and m.arch != "llama":
        problems.append(f"model.n_kv_heads is for model.arch llama (grouped-query attention), not {m.arch!r}")
    elif m.n_kv_heads is not None and (m.n_kv_heads <= 0 or m.n_heads % m.n_kv_heads):
        problems.append(f"model.n_kv_heads ({m.n_kv_heads}) must be positive and divide model.n_heads ({m.n_heads})")
    if m.arch == "llama" and m.n_heads > 0 and (m.d_model // m.n_heads) % 2:
        problems.append(f"model.arch llama needs an even head size for RoPE, got d_model / n_heads = "
                        f"{m.d_model // m.n_heads}")
    if m.rope_theta <= 0:
        problems.append(f"model.rope_theta must be positive, got {m.rope_theta}")
    if d.block_size > m.max_seq_len:
        problems.append(f"data.block_size ({d.block_size}) must not exceed model.max_seq_len ({m.max_seq_len})")
    if s.max_steps is None and s.epochs is None:
        problems.append("set schedule.max_steps or schedule.epochs")
    if s.warmup_steps < 0:
        problems.append(f"schedule.warmup_steps must be >= 0, got {s.warmup_steps}")
    if s.max_steps is not None and 0 < s.max_steps < s.warmup_steps and s.max_steps <= SHORT_RUN_STEPS:
        s.warmup_steps = s.max_steps  # from_dict says so
    elif s.max_steps is not None and 0 < s.max_steps < s.warmup_steps:
        problems.append(f"schedule.warmup_steps ({s.warmup_steps}) must not exceed schedule.max_steps ({s.max_steps})")
    if s.min_lr < 0 or (o.lr > 0 and s.min_lr > o.lr):
        problems.append(f"schedule.min_lr ({s.min_lr}) must be between 0 and optim.lr ({o.lr})")
    if not 0.0 <= m.dropout < 1.0:
        problems.append(f"model.dropout must be in [0, 1), got {m.dropout}")
    if not 0.0 < d.val_frac < 1.0:
        problems.append(f"data.val_frac must be in (0, 1), got {d.val_frac}")
    if len(o.betas) != 2 or not all(0.0 <= b < 1.0 for b in o.betas if isinstance(b, float)):
        problems.append(f"optim.betas must be two numbers in [0, 1), got {o.betas}")
    for name, value in (("optim.weight_decay", o.weight_decay), ("optim.grad_clip", o.grad_clip),
                        ("optim.eps", o.eps), ("eval.sample_n", cfg.eval.sample_n),
                        ("eval.sample_temperature", cfg.eval.sample_temperature),
                        ("eval.sample_max_new_tokens", cfg.eval.sample_max_new_tokens),
                        ("checkpoint.keep_last_k", cfg.checkpoint.keep_last_k)):
        if value < 0:
            problems.append(f"{name} must be >= 0, got {value}")
    for name, folder in (("checkpoint.save_dir", cfg.checkpoint.save_dir), ("data.cache_dir", d.cache_dir)):
        if not folder.strip():
            problems.append(f"{name} must name a folder, got an empty string")
    if d.dataset == "local" and not d.data_dir:
        problems.append("data.dataset = 'local' needs data.data_dir")
    for name, seed in (("runtime.seed", r.seed), ("data.split_seed", d.split_seed)):
        problems.extend(check_seed(name, seed))
    e = cfg.eval
    if e.sample_top_k is not None and e.sample_top_k < 1:
        problems.append(f"eval.sample_top_k must be at least 1 (or null), got {e.sample_top_k}")
    if e.sample_top_p is not None and not 0.0 < e.sample_top_p <= 1.0:
        problems.append(f"eval.sample_top_p must be in (0, 1] (or null), got {e.sample_top_p}")
    if d.num_workers < 0:
        problems.append(f"data.num_workers must be >= 0 (0 = every core), got {d.num_workers}")
    if r.cpu_threads < 0:
        problems.append(f"runtime.cpu_threads must be >= 0 (0 = auto), got {r.cpu_threads}")
    elif r.cpu_threads > 1 and d.batch_size % r.cpu_threads:
        problems.append(f"runtime.cpu_threads ({r.cpu_threads}) must divide data.batch_size ({d.batch_size})")
    return problems


def check_seed(name: str, seed: int | None) -> list[str]:
    """[] when seed is None or in SEED_RANGE, else the one problem."""
    low, high = SEED_RANGE
    if seed is None or low <= seed <= high:
        return []
    return [f"{name} must be between {low} and {high} (2**32 - 1), got {seed}"]


def check_vocab(cfg: Config, tokenizer_vocab_size: int) -> None:
    """Refuse a model vocabulary smaller than the tokenizer's."""
    if cfg.model.vocab_size is not None and cfg.model.vocab_size < tokenizer_vocab_size:
        raise ConfigError([
            f"model.vocab_size ({cfg.model.vocab_size}) is smaller than the tokenizer's vocabulary "
            f"({tokenizer_vocab_size})"
        ])


def read_file(path: str | Path, migrate: bool = True) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict; an original TinyGPT config is translated (migrate)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError([f"config file {path} is a folder; give a .yaml or .json file"])
    if not path.is_file():
        raise ConfigError([f"config file not found: {path}"])
    try:
        raw = read_mapping_file(path)
    except FileProblem as err:
        raise ConfigError([str(err)]) from None
    return migrate_if_old(raw, path) if migrate else raw


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Return base with patch merged in, recursing into nested mappings."""
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split `section.key=value` into a key path and a YAML-typed value."""
    if "=" not in item:
        raise ConfigError([f"override '{item}' must look like section.key=value"])
    key, text = item.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError([f"override key '{key}' must be section.key, e.g. optim.lr=3e-4"])
    try:
        value = parse_yaml(text) if text.strip() else ""
    except (yaml.YAMLError, FileProblem):
        value = text
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: typing.Sequence[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides to a raw config dict."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for item in overrides:
        (section, key), value = parse_override(item)
        sect = out.setdefault(section, {})
        if isinstance(sect, dict):
            sect[key] = value
    return out


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Load a config file (or the defaults), apply overrides, and validate everything at once."""
    raw = read_file(path) if path else {}
    return from_dict(apply_overrides(raw, overrides))


def to_yaml(cfg: Config) -> str:
    """Render a config as YAML in section order."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def dump_config(cfg: Config, path: str | Path) -> None:
    """Write a config as YAML (e.g. `run_config.yaml`)."""
    Path(path).write_text(to_yaml(cfg))
