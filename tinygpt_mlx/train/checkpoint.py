"""Checkpoint folders that are either complete or invisible: atomic writes, a manifest written last.

A run folder holds one folder per save, `step-0000500/`, with `model.safetensors`, `optimizer.safetensors`,
`state.json`, `config.yaml`, `tokenizer/` and, written last, `manifest.json` (sha256 and size of every
other file). A save is written into `.tmp-*` inside the run folder, every file fsynced, then renamed into
place, so a crash at any moment leaves either the old set of checkpoints or the new one. `last` and `best`
are relative symlinks swapped with os.replace, so they always point at a complete folder.
Readers trust a folder only when its manifest exists and every file matches it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import yaml
from mlx.utils import tree_flatten, tree_unflatten

from tinygpt_mlx.config import Config, ConfigError, from_dict, to_yaml
from tinygpt_mlx.errors import UserError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
CONFIG_FILE = "config.yaml"
TOKENIZER_DIR = "tokenizer"
REQUIRED = (MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, CONFIG_FILE, f"{TOKENIZER_DIR}/tokenizer.json")
LINKS = ("last", "best")
TMP_PREFIX = ".tmp-"
_STEP_RE = re.compile(r"^step-(\d+)$")


def step_dir_name(step: int) -> str:
    """Folder name of the checkpoint at `step` (zero-padded so names sort by step)."""
    return f"step-{step:07d}"


def step_of(path: Path) -> int | None:
    """The step encoded in a checkpoint folder name, or None for any other name."""
    match = _STEP_RE.match(path.name)
    return int(match.group(1)) if match else None


# ---------------------------------------------------------------- writing

def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _save_arrays(path: Path, arrays: dict[str, mx.array]) -> None:
    mx.save_safetensors(str(path), arrays, metadata={"format": "mlx"})
    _fsync_path(path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def clean_stale(run_dir: Path) -> None:
    """Remove `.tmp-*` leftovers of a save or delete that crashed."""
    for path in run_dir.glob(f"{TMP_PREFIX}*"):
        if path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: nn.Module,
    optimizer: optim.Optimizer,
    cfg: Config,
    tokenizer: Any,
    state: dict[str, Any],
) -> Path:
    """Write `step-NNNNNNN/` atomically and point `last` at it; returns the folder."""
    return save_checkpoint_arrays(run_dir, step, dict(tree_flatten(model.parameters())),
                                  dict(tree_flatten(optimizer.state)), cfg, tokenizer, state)


def save_checkpoint_arrays(
    run_dir: str | Path,
    step: int,
    weights: dict[str, mx.array],
    optimizer_state: dict[str, mx.array],
    cfg: Config,
    tokenizer: Any,
    state: dict[str, Any],
) -> Path:
    """save_checkpoint from flat name -> array dicts, the form every backend hands over (MLX's names)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    clean_stale(run_dir)
    final = run_dir / step_dir_name(step)
    tmp = run_dir / f"{TMP_PREFIX}{final.name}-{os.getpid()}"
    try:
        tmp.mkdir()
        _save_arrays(tmp / MODEL_FILE, weights)
        _save_arrays(tmp / OPTIMIZER_FILE, optimizer_state)
        _write_text(tmp / STATE_FILE, json.dumps(state, indent=1) + "\n")
        _write_text(tmp / CONFIG_FILE, to_yaml(cfg))
        tokenizer.save(tmp / TOKENIZER_DIR)
        for path in (tmp / TOKENIZER_DIR).iterdir():
            _fsync_path(path)
        _fsync_path(tmp / TOKENIZER_DIR)
        files = {p.relative_to(tmp).as_posix(): {"sha256": _sha256(p), "bytes": p.stat().st_size}
                 for p in _files(tmp)}
        # The manifest is the commit record: a folder without it is never read.
        manifest = {"format_version": FORMAT_VERSION, "step": step, "files": files}
        _write_text(tmp / MANIFEST, json.dumps(manifest, indent=1) + "\n")
        _fsync_path(tmp)
        if final.exists():  # saving the same step twice (e.g. interrupted right after a resume)
            os.rename(final, run_dir / f"{TMP_PREFIX}old-{final.name}")
        os.rename(tmp, final)
        _fsync_path(run_dir)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(err, OSError):
            raise
        reason = os.strerror(err.errno) if err.errno else str(err)
        hint = " (disk full)" if err.errno == errno.ENOSPC else ""
        raise UserError(f"could not write checkpoint {final}: {reason}{hint}; earlier checkpoints are intact") from err
    clean_stale(run_dir)
    update_link(run_dir, "last", final)
    return final


def update_link(run_dir: str | Path, name: str, target: Path) -> None:
    """Point the symlink run_dir/name (`last` or `best`) at target, atomically."""
    run_dir = Path(run_dir)
    tmp_link = run_dir / f"{TMP_PREFIX}link-{name}-{os.getpid()}"
    tmp_link.unlink(missing_ok=True)
    os.symlink(target.name, tmp_link)  # relative, so a run folder can be moved or copied
    os.replace(tmp_link, run_dir / name)
    _fsync_path(run_dir)


def rotate_checkpoints(run_dir: str | Path, keep_last_k: int) -> list[Path]:
    """Delete all but the newest keep_last_k checkpoints, never the newest or what a link points at."""
    run_dir = Path(run_dir)
    folders = [p for p in step_folders(run_dir) if (p / MANIFEST).is_file()]
    protected = {p.resolve() for p in folders[-max(keep_last_k, 1):]}
    protected |= {(run_dir / name).resolve() for name in LINKS if (run_dir / name).is_symlink()}
    deleted = []
    for folder in folders:
        if folder.resolve() in protected:
            continue
        try:
            # Rename first so a half-deleted folder is never mistaken for a checkpoint.
            doomed = run_dir / f"{TMP_PREFIX}delete-{folder.name}"
            os.rename(folder, doomed)
            shutil.rmtree(doomed)
            deleted.append(folder)
        except OSError as err:
            log.warning("could not delete old checkpoint %s (%s); training continues", folder, err)
    return deleted


# ---------------------------------------------------------------- reading

def step_folders(run_dir: Path) -> list[Path]:
    """Folders named like checkpoints (complete or not), oldest first."""
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.is_dir() and not p.is_symlink() and step_of(p) is not None]
    return sorted(found, key=lambda p: step_of(p) or 0)


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check the manifest and every file's size and sha256; returns the manifest or raises UserError."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise UserError(f"checkpoint {path} is incomplete: {MANIFEST} is missing")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        well_formed = isinstance(files, dict) and all(
            isinstance(v, dict) and isinstance(v.get("bytes"), int) and isinstance(v.get("sha256"), str)
            for v in files.values())
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        well_formed = False
    if not well_formed:
        raise UserError(f"checkpoint {path} has an unreadable {MANIFEST}")
    for name in REQUIRED:
        if name not in files:
            raise UserError(f"checkpoint {path} is incomplete: {name} is not in its manifest")
    for name, expected in files.items():
        file = path / name
        if not file.is_file():
            raise UserError(f"checkpoint {path} is incomplete: {name} is missing")
        size = file.stat().st_size
        if size != expected["bytes"]:
            raise UserError(f"checkpoint file {file} is corrupt: {size} bytes, manifest says {expected['bytes']} "
                            "(truncated?)")
        if _sha256(file) != expected["sha256"]:
            raise UserError(f"checkpoint file {file} is corrupt: sha256 does not match the manifest")
    return manifest


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete, verified checkpoint folders of a run, oldest first; others are skipped with a warning."""
    good = []
    for folder in step_folders(Path(run_dir)):
        try:
            verify_checkpoint(folder)
            good.append(folder)
        except UserError as err:
            log.warning("skipping %s", err)
    return good


def find_resume(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint in run_dir (what `--resume auto` picks), or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A step folder from a step folder, a `last`/`best` link, or a run folder (meaning its `last`)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise UserError(f"checkpoint not found: {path}")
    if path.is_symlink() and not path.exists():
        raise UserError(f"checkpoint link {path} points at a missing folder")
    if not path.is_dir():
        raise UserError(f"{path} is a file, not a checkpoint: give a step-NNNNNNN folder, a last/best link "
                        "or a run folder")
    if (path / MANIFEST).exists() or step_of(path.resolve()) is not None:
        return path.resolve()
    last = path / "last"
    if last.is_symlink() and last.exists():
        return last.resolve()
    newest = find_resume(path)
    if newest is None:
        raise UserError(f"no complete checkpoint in {path}")
    return newest


@dataclass
class Checkpoint:
    """A verified checkpoint in memory: arrays, training state, config and where the tokenizer lives."""

    path: Path
    step: int
    state: dict[str, Any]
    cfg: Config
    weights: dict[str, mx.array]
    optimizer_state: dict[str, mx.array]

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / TOKENIZER_DIR

    @property
    def tokenizer_fingerprint(self) -> str | None:
        """The saved tokenizer's fingerprint (vocabulary + merges), without building it."""
        meta = self.tokenizer_dir / "tinygpt_tokenizer.json"
        try:
            return json.loads(meta.read_text()).get("fingerprint") if meta.is_file() else None
        except (ValueError, AttributeError):
            raise UserError(f"checkpoint {self.path} has an unreadable {meta}") from None

    @property
    def vocab_size(self) -> int:
        """Rows of the saved embedding: the model's vocabulary."""
        return int(self.weights["embed_tokens.weight" if self.cfg.model.arch == "llama" else "wte.weight"].shape[0])

    def restore_optimizer(self, optimizer: optim.Optimizer) -> None:
        """Give optimizer the saved state (before the compiled step captures it)."""
        optimizer.state = tree_unflatten(list(self.optimizer_state.items()))


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Verify and load a checkpoint (step folder, `last`/`best` link, or run folder)."""
    folder = resolve_checkpoint(path)
    verify_checkpoint(folder)
    try:
        state = json.loads((folder / STATE_FILE).read_text())
        step = int(state["step"])
        cfg = from_dict(yaml.safe_load((folder / CONFIG_FILE).read_text()))
    except ConfigError as err:
        raise UserError(f"checkpoint {folder} has an invalid {CONFIG_FILE}: {'; '.join(err.problems)}") from None
    except (ValueError, KeyError, TypeError, yaml.YAMLError) as err:
        raise UserError(f"checkpoint {folder} has an unreadable {STATE_FILE} or {CONFIG_FILE} ({err})") from None
    ckpt = Checkpoint(path=folder, step=step, state=state, cfg=cfg, weights=mx.load(str(folder / MODEL_FILE)),
                      optimizer_state=mx.load(str(folder / OPTIMIZER_FILE)))
    check_weights(ckpt)
    return ckpt


def check_weights(ckpt: Checkpoint) -> None:
    """Refuse a checkpoint whose weights are not the model its config.yaml describes (names and shapes)."""
    from tinygpt_mlx.model import TinyGPT

    arch = ckpt.cfg.model.arch
    table = "embed_tokens.weight" if arch == "llama" else "wte.weight"
    where = f"checkpoint {ckpt.path}: its {MODEL_FILE} does not hold the model its {CONFIG_FILE} describes"
    if table not in ckpt.weights:
        raise UserError(f"{where} (no {table} for model.arch {arch})")
    # The model is built lazily (no weight is computed); keep its init draws off the global generator.
    hi, lo = (int(v) for v in mx.random.state[0].tolist())
    model = TinyGPT(ckpt.cfg.model, ckpt.vocab_size)
    mx.random.seed((hi << 32) | lo)
    expected = {name: tuple(v.shape) for name, v in tree_flatten(model.parameters())}
    found = {name: tuple(v.shape) for name, v in ckpt.weights.items()}
    if found == expected:
        return
    detail = [f"{name} is {list(found[name])}, the config makes {list(shape)}"
              for name, shape in expected.items() if name in found and found[name] != shape]
    if expected.keys() - found.keys():
        detail.append(f"missing {', '.join(sorted(expected.keys() - found.keys())[:3])}")
    if found.keys() - expected.keys():
        detail.append(f"unexpected {', '.join(sorted(found.keys() - expected.keys())[:3])}")
    raise UserError(f"{where} ({'; '.join(detail[:3])})")


def load_for_inference(path: str | Path) -> tuple[Any, Any, Config, dict[str, Any]]:
    """(model in eval mode, tokenizer, config, state) from a step folder, link or run folder."""
    from tinygpt_mlx.model import TinyGPT
    from tinygpt_mlx.tokenizers import load_tokenizer

    ckpt = load_checkpoint(path)
    # The embedding's rows are the model's vocabulary (it may exceed the tokenizer's).
    model = TinyGPT(ckpt.cfg.model, ckpt.vocab_size)
    model.load_weights(list(ckpt.weights.items()), strict=True)
    model.eval()
    mx.eval(model.parameters())
    return model, load_tokenizer(ckpt.tokenizer_dir), ckpt.cfg, ckpt.state
