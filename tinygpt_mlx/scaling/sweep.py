"""Sweep files: a base config plus a grid of config keys, expanded into named, validated runs.

A sweep file (YAML):
    base_config: base_config.yaml        # relative to the sweep file
    mode: cross                          # cross (every combination) or zip (i-th values together)
    grid: {model.d_model: [64, 128], model.n_layers: [2, 4]}
    overrides: {schedule.max_steps: 300} # applied to every run (dotted keys or nested sections)
    token_budget: 1000000                # optional: schedule.max_steps = ceil(budget / tokens per step)

A grid entry whose name has no dot is a group: a mapping of config keys to equal-length lists whose i-th
values go together (zipped), while the group as a whole is one axis of the grid. It ties values that depend
on each other, e.g. a model size and its learning rate, crossed with token budgets:
    grid:
      size: {model.d_model: [64, 128], model.n_layers: [2, 4], optim.lr: [4.0e-3, 2.8e-3]}
      schedule.max_steps: [100, 200]
A run is named after the first key of each group (`d_model-64_max_steps-100`).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinygpt_mlx.config import Config, ConfigError, deep_merge, from_dict, read_file
from tinygpt_mlx.errors import UserError
from tinygpt_mlx.interop.migrate import sweep_if_old

MODES = ("cross", "zip")
SWEEP_KEYS = ("base_config", "mode", "grid", "overrides", "token_budget", "description")


@dataclass
class SweepRun:
    """One run of a sweep: its readable name, the swept values and the full validated config."""

    name: str
    values: dict[str, Any]
    config: Config


@dataclass
class Sweep:
    """A parsed sweep file."""

    path: Path
    base_config: Path
    mode: str
    grid: dict[str, Any]  # config key -> values, or group name -> {config key: values} (zipped)
    overrides: dict[str, Any] = field(default_factory=dict)
    token_budget: int | None = None
    description: str = ""

    @property
    def keys(self) -> list[str]:
        return grid_keys(self.grid)


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file (the run configs are checked by `expand`)."""
    path = Path(path)
    raw = sweep_if_old(read_file(path, migrate=False), path)  # an original `sweep:` block -> this format
    problems = [f"unknown sweep key '{k}' (expected {', '.join(SWEEP_KEYS)})" for k in raw if k not in SWEEP_KEYS]
    if "base_config" not in raw:
        problems.append("a sweep file needs base_config: the config every run starts from")
    mode = raw.get("mode", "cross")
    if mode not in MODES:
        problems.append(f"mode = {mode!r} is not one of {', '.join(MODES)}")
    grid = raw.get("grid") or {}
    if not isinstance(grid, dict):
        problems.append("grid must map config keys (section.key) to lists of values")
        grid = {}
    elif not grid:
        problems.append("grid is empty: name at least one config key with a list of values, "
                        "e.g. grid: {model.d_model: [64, 128]}")
    problems += _grid_problems(grid, mode)
    budget = raw.get("token_budget")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                               or not math.isfinite(budget) or budget <= 0):
        problems.append(f"token_budget must be a positive number of tokens, got {budget!r}")
    overrides = raw.get("overrides") or {}
    if not isinstance(overrides, dict):
        problems.append("overrides must be a mapping of config keys to values")
        overrides = {}
    if problems:
        raise ConfigError([f"{path}: {p}" for p in problems])
    base = (path.parent / str(raw["base_config"])).resolve()
    return Sweep(path, base, mode, dict(grid), overrides, int(budget) if budget else None,
                 str(raw.get("description", "")))


def _grid_problems(grid: dict[Any, Any], mode: str) -> list[str]:
    problems, seen = [], set()
    for name, axis in grid.items():
        if isinstance(name, str) and "." not in name and isinstance(axis, dict):
            keys = list(axis.items())
            where = f"grid.{name}"
            if not keys:
                problems.append(f"{where} is an empty group: map config keys to lists of values")
            lengths = {len(v) for _, v in keys if isinstance(v, list)}
            if len(lengths) > 1:
                got = ", ".join(f"{k}: {len(v)}" for k, v in keys if isinstance(v, list))
                problems.append(f"{where} zips its lists, so they need equal lengths, got {got}")
        else:
            keys, where = [(name, axis)], "grid"
        for key, values in keys:
            if not isinstance(key, str) or len(key.split(".")) != 2:
                problems.append(f"{where} key {key!r} must look like section.key, e.g. model.d_model")
            if not isinstance(values, list) or not values:
                problems.append(f"{where}.{key} must be a non-empty list of values")
            if key in seen:
                problems.append(f"grid sets {key} twice")
            seen.add(key)
    if not problems and mode == "zip" and len({len(_axis(v)) for v in grid.values()}) > 1:
        lengths = ", ".join(f"{k}: {len(_axis(v))}" for k, v in grid.items())
        problems.append(f"mode zip needs lists of equal length, got {lengths}")
    return problems


def _axis(value: Any) -> list[dict[str, Any]]:
    """A grid entry as its list of points: [{key: v}, ...] for a key, zipped {key: v, ...} for a group."""
    if isinstance(value, dict):
        return [dict(zip(value, row, strict=True)) for row in zip(*value.values(), strict=True)]
    return list(value)


def grid_keys(grid: dict[str, Any]) -> list[str]:
    """Every config key a grid sets, groups flattened, in file order."""
    return [k for name, axis in grid.items() for k in (axis if isinstance(axis, dict) else [name])]


def expand_grid(grid: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    """Grid -> one {key: value} per run: every combination (cross) or the i-th values together (zip)."""
    if not grid:
        return [{}]
    axes = [[p if isinstance(axis, dict) else {name: p} for p in _axis(axis)] for name, axis in grid.items()]
    rows = zip(*axes, strict=True) if mode == "zip" else itertools.product(*axes)
    return [{k: v for point in row for k, v in point.items()} for row in rows]


def _format(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "none"


def run_name(values: dict[str, Any]) -> str:
    """Readable run name: `d_model-64_n_layers-2` (the full key only where last parts collide)."""
    if not values:
        return "base"
    short = [k.split(".")[-1] for k in values]
    labels = [k.replace(".", "-") if short.count(s) > 1 else s for k, s in zip(values, short, strict=True)]
    return "_".join(f"{label}-{_format(v)}" for label, v in zip(labels, values.values(), strict=True))


def _nest(dotted: dict[str, Any]) -> dict[str, Any]:
    """{'model.d_model': 64} -> {'model': {'d_model': 64}}; nested mappings pass through."""
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        if isinstance(value, dict) and "." not in key:
            out = deep_merge(out, {key: value})
        else:
            section, _, name = str(key).partition(".")
            out = deep_merge(out, {section: {name: value}})
    return out


def expand(sweep: Sweep, out_dir: str | Path) -> list[SweepRun]:
    """Every run of the sweep with its config (save_dir = OUT/runs/<name>); all config problems at once."""
    base = read_file(sweep.base_config)
    runs, problems = [], []
    naming = [name if not isinstance(axis, dict) else next(iter(axis)) for name, axis in sweep.grid.items()]
    for values in expand_grid(sweep.grid, sweep.mode):
        name = run_name({k: values[k] for k in naming})
        raw = deep_merge(deep_merge(base, _nest(sweep.overrides)), _nest(values))
        raw = deep_merge(raw, {"checkpoint": {"save_dir": str(Path(out_dir) / "runs" / name)}})
        try:
            cfg = from_dict(raw)
        except ConfigError as err:
            problems += [f"run {name}: {p}" for p in err.problems]
            continue
        if sweep.token_budget:
            _apply_budget(cfg, sweep.token_budget)
        runs.append(SweepRun(name, values, cfg))
    if problems:
        raise ConfigError(_dedupe_unknown_keys(problems))
    names = [r.name for r in runs]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise UserError(f"the grid gives several runs the same name ({', '.join(clashes)}); "
                        "make the grid values distinct (a group is named after its first key)")
    return runs


def _apply_budget(cfg: Config, budget: int) -> None:
    """Set schedule.max_steps so that every run sees about `budget` training tokens."""
    per_step = cfg.data.batch_size * cfg.data.block_size * cfg.runtime.grad_accum_steps
    cfg.schedule.max_steps = max(1, math.ceil(budget / per_step))
    cfg.schedule.epochs = None
    if cfg.schedule.warmup_steps > cfg.schedule.max_steps:
        raise UserError(f"token_budget {budget} gives {cfg.schedule.max_steps} steps, fewer than "
                        f"schedule.warmup_steps ({cfg.schedule.warmup_steps}); raise the budget or lower warmup")


def _dedupe_unknown_keys(problems: list[str]) -> list[str]:
    # An unknown grid key fails in every run; say it once rather than once per run.
    seen, out = set(), []
    for p in problems:
        core = p.split(": ", 1)[1]
        if "unknown" in core:
            if core in seen:
                continue
            seen.add(core)
            p = core
        out.append(p)
    return out
