"""Configs of the original TinyGPT repository (Hussain0327/Ai-Research) translated to this schema.

Its files have `model`, `data`, `training` and `logging` sections with other key names and, in places, other
meanings (epochs over strided windows instead of optimizer steps, a data fraction, a subword tokenizer);
its sweep files add a `sweep:` block (`parameter`, `values`, `adjust_heads`). `migrate` and `migrate_sweep`
are pure (old dict -> new dict, notes, refusals): every old key is mapped or refused with its reason, and
docs/migration.md lists the mapping. This module knows the old layout only, never imports config.py
(which calls `migrate_if_old` on every file it reads); `from_dict` checks whatever comes out.
"""

from __future__ import annotations

import copy
import difflib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tinygpt_mlx.errors import UserError

OLD_SECTIONS = ("training", "logging")  # sections only the original layout has
OLD_DATA_KEYS = ("dataset_name", "tokenizer_type", "max_length", "stride", "data_fraction", "max_samples",
                 "train_file", "val_file", "val_split", "vocab_size")
ONLY_AT_END = 1_000_000_000  # an interval no run reaches: the trainer still evaluates and saves at the end
SECTION_ORDER = ("model", "data", "optim", "schedule", "runtime", "checkpoint", "eval")

# Old keys whose value carries over unchanged (apart from the type check from_dict does).
RENAMES = {
    **{f"model.{k}": f"model.{k}" for k in ("name", "vocab_size", "d_model", "n_layers", "n_heads", "d_ff",
                                              "mlp_ratio", "max_seq_len", "dropout", "bias",
                                              "tie_embeddings")},
    "model.tie_weights": "model.tie_embeddings",
    "data.batch_size": "data.batch_size",
    "data.max_samples": "data.max_stories",
    "data.val_split": "data.val_frac",
    "training.batch_size": "data.batch_size",
    "training.learning_rate": "optim.lr",
    "training.lr": "optim.lr",
    "training.weight_decay": "optim.weight_decay",
    "training.betas": "optim.betas",
    "training.eps": "optim.eps",
    "training.momentum": "optim.momentum",
    "training.max_grad_norm": "optim.grad_clip",
    "training.grad_clip": "optim.grad_clip",
    "training.warmup_steps": "schedule.warmup_steps",
    "training.min_lr": "schedule.min_lr",
    "training.gradient_accumulation_steps": "runtime.grad_accum_steps",
    "training.use_amp": "runtime.amp",
    "training.seed": "runtime.seed",
    "training.log_interval": "runtime.log_interval",
    "logging.log_interval": "runtime.log_interval",
    "training.output_dir": "checkpoint.save_dir",
    "training.save_dir": "checkpoint.save_dir",
    "training.checkpoint_dir": "checkpoint.save_dir",
    "logging.output_dir": "checkpoint.save_dir",
    "logging.save_dir": "checkpoint.save_dir",
    "logging.checkpoint_dir": "checkpoint.save_dir",
}

# Old keys whose values are renamed too; a value not listed is refused.
SCHEDULES = {"cosine": "cosine", "linear": "linear", "constant": "constant", "none": "constant"}
VALUE_MAPS: dict[str, tuple[str, dict[Any, Any]]] = {
    "data.tokenizer_type": ("data.tokenizer", {"char": "char", "character": "char", "subword": "bpe",
                                               "bpe": "bpe", "gpt2": "gpt2"}),
    "training.optimizer": ("optim.optimizer", {"adamw": "adamw", "adam": "adam", "sgd": "sgd"}),
    "training.scheduler": ("schedule.lr_schedule", SCHEDULES),
    "training.lr_scheduler": ("schedule.lr_schedule", SCHEDULES),
    "training.device": ("runtime.device", {"auto": "auto", "cpu": "cpu", "cuda": "gpu", "mps": "gpu",
                                           "gpu": "gpu"}),
}

# Old keys translated by code below (their meaning differs, or they interact); docs/migration.md says how.
SPECIAL = ("data.dataset_name", "data.vocab_size", "data.train_file", "data.val_file", "data.max_length",
           "data.stride", "data.data_fraction", "data.num_workers", "training.epochs", "training.max_steps",
           "training.eval_interval", "training.save_interval", "logging.use_wandb")
OLD_KEYS = (*RENAMES, *VALUE_MAPS, *SPECIAL)
SWEEP_KEYS = ("parameter", "values", "adjust_heads", "name", "description")


@dataclass
class Migration:
    """The translated config, where each new key came from, notes on changed meaning, and refusals."""

    config: dict[str, dict[str, Any]] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # new dotted key -> old key(s) and how
    notices: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)

    def set(self, dotted: str, value: Any, origin: str) -> None:
        """Set a new key; two old keys giving it different values is a refusal."""
        section, key = dotted.split(".", 1)
        values = self.config.setdefault(section, {})
        if key in values and values[key] != value:
            self.refusals.append(f"{origin} = {value!r} and {self.origins[dotted]} = {values[key]!r} "
                                 f"both set {dotted}; keep one")
            return
        values[key] = value
        self.origins[dotted] = origin


def is_old(raw: Any) -> bool:
    """True for a dict in the original layout: a `training`/`logging` section, its data keys, or `sweep:`."""
    if not isinstance(raw, dict):
        return False
    data = raw.get("data")
    return (any(s in raw for s in OLD_SECTIONS) or isinstance(raw.get("sweep"), dict)
            or (isinstance(data, dict) and any(k in data for k in OLD_DATA_KEYS)))


def _flatten(raw: dict[str, Any], mig: Migration) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, values in raw.items():
        if section == "sweep" or values is None:
            continue
        if not isinstance(values, dict):
            mig.refusals.append(f"section '{section}' must be a mapping, got {values!r}")
            continue
        flat.update({f"{section}.{key}": value for key, value in values.items()})
    return flat


def _positive(flat: dict[str, Any], key: str, mig: Migration, upper: float | None = None) -> float | None:
    value = flat.pop(key, None)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 \
            or (upper is not None and value > upper):
        bound = f"in (0, {upper}]" if upper is not None else "a positive number"
        mig.refusals.append(f"{key} must be {bound}, got {value!r}")
        return None
    return value


def _source(flat: dict[str, Any], mig: Migration) -> None:
    name = flat.pop("data.dataset_name", None)
    train_file = flat.pop("data.train_file", None)
    val_file = flat.pop("data.val_file", None)
    if val_file is not None:
        mig.refusals.append(f"data.val_file = {val_file!r}: this loader reads one path; put the files in one "
                            "folder, named *train* and *valid*, and give that folder as data.data_dir")
    if train_file is not None:
        given = f"data.dataset_name {name} + " if name is not None else ""
        mig.set("data.dataset", "local", f"{given}data.train_file (a local corpus)")
        mig.set("data.data_dir", str(train_file), "data.train_file")
        if name is not None and str(name).lower() not in ("custom", "local", str(train_file).lower()):
            mig.refusals.append(f"data.dataset_name = {name!r} and data.train_file both given; keep one")
    elif name is not None:
        text = str(name).lower()
        if text in ("roneneldan/tinystories", "tinystories"):
            mig.set("data.dataset", "tinystories", "data.dataset_name")
        elif text in ("custom", "local"):
            mig.refusals.append(f"data.dataset_name = {name!r} needs data.train_file (the corpus path)")
        else:
            mig.refusals.append(f"data.dataset_name = {name!r}: only roneneldan/TinyStories (or local files "
                                "through data.train_file) can be read here")


def _tokenizer(flat: dict[str, Any], mig: Migration) -> None:
    kind, vocab = flat.get("data.tokenizer_type"), flat.pop("data.vocab_size", None)
    subword = kind in ("subword", "bpe")
    if subword:
        mig.notices.append("data.tokenizer_type subword: a byte-level BPE trained on the corpus "
                           "(data.bpe_vocab_size tokens)")
    if vocab is not None:
        mig.set("data.bpe_vocab_size", vocab, "data.vocab_size (the subword vocabulary)")
    elif subword and flat.get("model.vocab_size"):
        mig.set("data.bpe_vocab_size", flat["model.vocab_size"], "model.vocab_size (the subword vocabulary)")


def _length(flat: dict[str, Any], mig: Migration) -> int | None:
    """data.max_length and model.max_seq_len -> block_size and max_seq_len (one follows the other)."""
    length = flat.pop("data.max_length", None)
    seq = flat.get("model.max_seq_len")
    if length is not None:
        mig.set("data.block_size", length, "data.max_length")
        if seq is None:
            mig.set("model.max_seq_len", length, "data.max_length (no model.max_seq_len)")
    elif seq is not None:
        mig.set("data.block_size", seq, "model.max_seq_len (no data.max_length: windows span the context)")
    window = length if length is not None else seq
    return window if isinstance(window, int) and not isinstance(window, bool) and window > 0 else None


def _run_length(flat: dict[str, Any], mig: Migration, window: int | None) -> None:
    """epochs x max_length/stride x data_fraction -> schedule.epochs; or max_steps as given."""
    stride = _positive(flat, "data.stride", mig)
    fraction = _positive(flat, "data.data_fraction", mig, upper=1.0)
    epochs = _positive(flat, "training.epochs", mig)
    steps = flat.pop("training.max_steps", None)
    if stride is not None and window is None:
        mig.refusals.append("data.stride needs data.max_length or model.max_seq_len (the window it slides)")
    elif stride is not None and stride > window:
        mig.refusals.append(f"data.stride ({stride}) is longer than the window ({window}): text would be "
                            "skipped")
    if steps is not None:
        if stride is not None:
            mig.notices.append("data.stride: no effect with training.max_steps (windows start at random "
                               "offsets)")
        mig.set("schedule.max_steps", steps, "training.max_steps")
        if epochs is not None:
            mig.set("schedule.epochs", epochs, "training.epochs (unused: max_steps wins, as in the original)")
        if fraction is not None and fraction < 1:
            mig.refusals.append(f"data.data_fraction = {fraction} with training.max_steps: windows are drawn "
                                "from the whole split here; cap the stories with data.max_samples instead")
        return
    if epochs is None:
        if fraction is not None and fraction < 1:
            mig.refusals.append(f"data.data_fraction = {fraction} needs training.epochs (it scales the "
                                "epochs here); or cap the stories with data.max_samples")
        return
    # An epoch there walks windows of max_length tokens that start every `stride` tokens of the kept
    # fraction, so it trains on max_length/stride x fraction of the corpus's tokens; here an epoch is
    # one pass of random windows over the whole split.
    overlap = window / stride if stride is not None and window is not None else 1.0
    parts = [f"training.epochs ({epochs})"]
    if stride is not None:
        parts.append(f"window/data.stride ({window}/{stride})")
    if fraction is not None:
        parts.append(f"data.data_fraction ({fraction})")
    mig.set("schedule.epochs", float(epochs) * overlap * (fraction or 1.0), " x ".join(parts))
    mig.set("schedule.max_steps", None, "training.epochs (the run length comes from epochs)")


def _intervals(flat: dict[str, Any], mig: Migration) -> None:
    for old, new in (("training.eval_interval", "eval.eval_every"),
                     ("training.save_interval", "checkpoint.save_every")):
        if old not in flat:
            continue
        value = flat.pop(old)
        if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0):
            mig.set(new, ONLY_AT_END, f"{old} ({value}: never periodically; the run's end still does it)")
        else:
            mig.set(new, value, old)


def _wandb(flat: dict[str, Any], mig: Migration) -> None:
    if "logging.use_wandb" not in flat:
        return
    if flat.pop("logging.use_wandb"):
        mig.refusals.append("logging.use_wandb = true: there is no Weights & Biases logging here; metrics go "
                            "to metrics.jsonl in the run folder (set it false)")
    else:
        mig.notices.append("logging.use_wandb false: nothing to turn off")


def migrate(raw: dict[str, Any]) -> Migration:
    """Translate an original-layout config dict (its `sweep:` block aside) to this schema."""
    mig = Migration()
    flat = _flatten(raw, mig)
    _source(flat, mig)
    _tokenizer(flat, mig)
    _run_length(flat, mig, _length(flat, mig))
    _intervals(flat, mig)
    _wandb(flat, mig)
    if flat.get("training.use_amp"):
        mig.notices.append("training.use_amp: bfloat16 compute on a GPU (float16 with a GradScaler there), "
                           "float32 on a CPU")
    workers = flat.pop("data.num_workers", None)
    if workers is not None:
        why = " (0 = the main process alone; here 0 means every core)" if workers == 0 else ""
        mig.set("data.num_workers", 1 if workers == 0 else workers, f"data.num_workers{why}")
    for old, (new, values) in VALUE_MAPS.items():
        if old in flat:
            value = flat.pop(old)
            name = value.lower() if isinstance(value, str) else None
            if name in values:
                mig.set(new, values[name], old)
            else:
                mig.refusals.append(f"{old} = {value!r} is not one of {', '.join(map(str, values))}")
    for old, new in RENAMES.items():
        if old in flat:
            mig.set(new, flat.pop(old), old)
    for old, value in flat.items():
        if old.split(".")[0] in OLD_SECTIONS:
            close = difflib.get_close_matches(old, OLD_KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else " (docs/migration.md lists those it reads)"
            mig.refusals.append(f"{old}: not a key of the original layout{hint}")
        else:  # a key of this schema in a shared section; from_dict checks it
            mig.set(old, value, old)
    return mig


def _adjust_heads(old: dict[str, Any]) -> str | None:
    """Keep d_model divisible by n_heads: the largest head count up to the file's that divides d_model."""
    model = old.get("model") or {}
    d_model, heads = model.get("d_model"), model.get("n_heads")
    if not (isinstance(d_model, int) and isinstance(heads, int)) or d_model <= 0 or heads <= 0:
        return "adjust_heads needs integer model.d_model and model.n_heads in the file"
    model["n_heads"] = max(h for h in range(1, heads + 1) if d_model % h == 0)
    return None


def _parameter(raw: dict[str, Any], name: Any) -> tuple[str, str] | None:
    """`section.key`, or a bare key found in exactly one section of the file."""
    if not isinstance(name, str) or not name:
        return None
    if "." in name:
        section, key = name.split(".", 1)
        return (section, key) if section in raw or section in ("model", "data", "training") else None
    found = [s for s, v in raw.items() if s != "sweep" and isinstance(v, dict) and name in v]
    return (found[0], name) if len(found) == 1 else None


def _flat(config: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {f"{s}.{k}": v for s, values in config.items() for k, v in values.items()}


def migrate_sweep(raw: dict[str, Any], base_config: str) -> tuple[dict[str, Any], list[str]]:
    """An original sweep file -> (a sweep file of this schema over base_config, refusals)."""
    block = raw.get("sweep")
    if not isinstance(block, dict):
        return {}, ["the sweep: block must be a mapping with parameter and values"]
    refusals = [f"sweep.{k}: not a key of the original sweep block ({', '.join(SWEEP_KEYS)})"
                for k in block if k not in SWEEP_KEYS]
    where = _parameter(raw, block.get("parameter"))
    values = block.get("values")
    if where is None:
        refusals.append(f"sweep.parameter = {block.get('parameter')!r} must name a key of the file, "
                        "e.g. model.d_model")
    if not isinstance(values, list) or not values:
        refusals.append("sweep.values must be a non-empty list")
    adjust = block.get("adjust_heads", False)
    if not isinstance(adjust, bool):
        refusals.append(f"sweep.adjust_heads must be true or false, got {adjust!r}")
    base = migrate(raw)
    refusals += base.refusals
    if refusals:
        return {}, refusals
    section, key = where
    base_flat = _flat(base.config)
    runs = []
    for value in values:
        old = copy.deepcopy({s: v for s, v in raw.items() if s != "sweep"})
        old.setdefault(section, {})[key] = value
        if adjust and (problem := _adjust_heads(old)):
            return {}, [problem]
        run = migrate(old)
        refusals += [f"sweep value {value!r}: {r}" for r in run.refusals]
        runs.append(_flat(run.config))
    if refusals:
        return {}, refusals
    keys = [k for k in dict.fromkeys(k for run in runs for k in run)
            if any(run.get(k, base_flat.get(k)) != base_flat.get(k) for run in runs)]
    grid = {k: [run.get(k, base_flat.get(k)) for run in runs] for k in keys}
    text = block.get("description") or block.get("name") or f"original sweep of {section}.{key} over {values}"
    return {"base_config": base_config, "mode": "zip", "grid": grid,
            "description": f"{text}{' (adjust_heads)' if adjust else ''}"}, []


def refused(path: str | Path, refusals: list[str]) -> UserError:
    """One error listing every setting of the original-layout file at path that cannot be translated."""
    lines = "\n".join(f"  - {r}" for r in refusals)
    return UserError(f"{path} is in the original TinyGPT layout and {len(refusals)} of its settings cannot "
                     f"be translated (docs/migration.md):\n{lines}")


def migrate_if_old(raw: Any, path: str | Path) -> Any:
    """raw unchanged, or its translation with one notice line on stderr; UserError lists what cannot carry."""
    if not is_old(raw):
        return raw
    mig = migrate(raw)
    if mig.refusals:
        raise refused(path, mig.refusals)
    sweep = " (its sweep: block is expanded by `tinygpt sweep`)" if "sweep" in raw else ""
    print(f"note: {path} is in the original TinyGPT layout; translated {len(mig.origins)} settings{sweep}. "
          f"`tinygpt config migrate {path} -o NEW.yaml` writes the translation, docs/migration.md the "
          "mapping", file=sys.stderr)
    return mig.config


def sweep_if_old(raw: Any, path: str | Path) -> Any:
    """raw unchanged, or an original sweep file translated to this schema's sweep format (zip grid)."""
    if not (is_old(raw) and "sweep" in raw):
        return raw
    sweep, refusals = migrate_sweep(raw, Path(path).name)
    if refusals:
        raise refused(path, refusals)
    return sweep


def _flow(value: Any) -> str:
    # One line of YAML for any value: dump it inside a list in flow style and take the brackets off.
    return yaml.safe_dump([value], default_flow_style=True, width=1 << 16).strip()[1:-1]


def to_commented_yaml(mig: Migration, source: str | Path) -> str:
    """The translated config as YAML, each key commented with the original key(s) it came from."""
    lines = [f"# Translated from {source} (the original TinyGPT layout) by `tinygpt config migrate`.",
             "# Each key names its origin; missing keys take their defaults (`tinygpt config show` lists "
             "them all)."]
    lines += [f"# note: {notice}" for notice in mig.notices]
    order = [s for s in SECTION_ORDER if s in mig.config] + [s for s in mig.config if s not in SECTION_ORDER]
    for section in order:
        lines += ["", f"{section}:"]
        lines += [f"  {key}: {_flow(value)}  # from {mig.origins[f'{section}.{key}']}"
                  for key, value in mig.config[section].items()]
    return "\n".join(lines) + "\n"
