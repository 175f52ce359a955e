"""Tokenize a corpus once into `train.bin` / `val.bin` token memmaps plus `meta.json` and the tokenizer.

Folder layout (one per source x tokenizer x max_stories, under data.cache_dir):
    train.bin, val.bin   flat token ids, EOS after every story; uint16 if vocab_size <= 65536 else uint32
    tokenizer/           tokenizer.json + tokenizer_config.json + tinygpt_tokenizer.json
    meta.json            written last and atomically: a folder without it is incomplete and gets rebuilt
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from tinygpt_mlx.config import Config, DataConfig
from tinygpt_mlx.data.sources import Source, load_split, resolve_source, split_rule
from tinygpt_mlx.errors import UserError
from tinygpt_mlx.paths import check_output_dir, output_dir
from tinygpt_mlx.tokenizers import Tokenizer, build_tokenizer, load_tokenizer

FORMAT_VERSION = 1
SPLIT_FILES = {"train": "train.bin", "val": "val.bin"}
# Chunks bound memory and drive the progress bar; the parallelism is inside each chunk (see encoder).
CHUNK_STORIES = 2048
PARALLELISM_ENV = "TOKENIZERS_PARALLELISM"
TMP_PREFIX = ".tmp-"  # a folder being written; renamed into place when complete  # HF tokenizers reads it at every batch call

Encode = Callable[[Tokenizer, list[str]], list[list[int]]]


@dataclass
class PreparedData:
    """A prepared folder: token files, their meta.json contents, and the tokenizer that made them."""

    directory: Path
    train_path: Path
    val_path: Path
    meta: dict[str, Any]
    tokenizer: Tokenizer

    @property
    def dtype(self) -> np.dtype:
        """numpy dtype of the token files."""
        return np.dtype(self.meta["dtype"])


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest unsigned dtype holding every id."""
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


def _source_signature(data_cfg: DataConfig, source: Source) -> list[list[Any]]:
    """Local corpus files (and GPT-2 vocab files) by path and size, so changed inputs never reuse a cache."""
    files = list(source.train + source.validation + source.pool)
    if data_cfg.tokenizer == "gpt2" and data_cfg.tokenizer_dir:
        files += sorted(p for p in Path(data_cfg.tokenizer_dir).iterdir() if p.suffix in (".json", ".txt"))
    return [[str(p.resolve()), p.stat().st_size] for p in files]


def cache_name(data_cfg: DataConfig, source: Source) -> str:
    """Readable folder name: source, tokenizer (+ BPE size), story cap, and a short hash of the details."""
    base = Path(source.root).stem if source.kind == "local" else source.root.split("/")[-1]
    tok = data_cfg.tokenizer + (str(data_cfg.bpe_vocab_size) if data_cfg.tokenizer == "bpe" else "")
    cap = f"n{data_cfg.max_stories}" if data_cfg.max_stories else "all"
    # the hash keeps two different folders called "data" (or split settings) from sharing a cache
    details = json.dumps([source.kind, source.root, data_cfg.val_frac, data_cfg.split_seed,
                          data_cfg.tokenizer_dir if data_cfg.tokenizer == "gpt2" else None])
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{base}-{tok}-{cap}").lower()
    return f"{slug}-{hashlib.sha256(details.encode()).hexdigest()[:8]}"


def check_fingerprint(meta: dict[str, Any], tokenizer: Tokenizer) -> None:
    """Refuse token files that were made with a different tokenizer than the one in use."""
    expected = meta.get("tokenizer", {}).get("fingerprint")
    if expected != tokenizer.fingerprint:
        raise UserError(
            f"prepared data was tokenized with a different tokenizer (fingerprint {str(expected)[:12]}, "
            f"in use {tokenizer.fingerprint[:12]}, kind {tokenizer.kind}); re-run `tinygpt data prepare` "
            "or use the tokenizer saved next to the data")


def read_meta(directory: str | Path) -> dict[str, Any] | None:
    """meta.json of a prepared folder, or None when the folder is missing or incomplete."""
    path = Path(directory) / "meta.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def _complete(directory: Path, meta: dict[str, Any]) -> bool:
    """Every token file exists with exactly the size meta.json promises."""
    itemsize = np.dtype(meta["dtype"]).itemsize
    for split, name in SPLIT_FILES.items():
        path = directory / name
        if not path.is_file() or path.stat().st_size != meta["splits"][split]["tokens"] * itemsize:
            return False
    return (directory / "tokenizer" / "tokenizer.json").is_file()


@contextmanager
def encoder(workers: int) -> Iterator[Encode]:
    """encode(tokenizer, stories) on HF's Rust pool over every core (workers 0) or on exactly `workers` threads.

    Threads use no processes: HF's batch call releases the GIL, and spawning workers plus pickling the
    stories costs more than tokenizing them. With a count given, HF's own pool is off while it runs, so
    the count is what actually runs (one thread on a shared machine, say).
    """
    if workers == 0:
        yield lambda tokenizer, stories: tokenizer.encode_batch(stories)
        return
    saved = os.environ.get(PARALLELISM_ENV)
    os.environ[PARALLELISM_ENV] = "false"
    try:
        with ThreadPoolExecutor(workers) as pool:

            def encode(tokenizer: Tokenizer, stories: list[str]) -> list[list[int]]:
                size = max(1, -(-len(stories) // workers))
                parts = pool.map(tokenizer.encode_batch, [stories[i:i + size] for i in range(0, len(stories), size)])
                return [ids for part in parts for ids in part]

            yield encode
    finally:
        if saved is None:
            os.environ.pop(PARALLELISM_ENV, None)
        else:
            os.environ[PARALLELISM_ENV] = saved


def _write_tokens(path: Path, tokenizer: Tokenizer, stories: list[str], dtype: np.dtype, encode: Encode,
                  advance: Any = None) -> int:
    """Tokenize stories in chunks, append EOS after each, and stream the ids to `path`; returns token count."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    count = 0
    eos = tokenizer.eos_id
    with tmp.open("wb") as fh:
        for start in range(0, len(stories), CHUNK_STORIES):
            chunk = stories[start:start + CHUNK_STORIES]
            encoded = encode(tokenizer, chunk)
            total = sum(map(len, encoded)) + len(encoded)
            arr = np.fromiter(itertools.chain.from_iterable(ids + [eos] for ids in encoded), dtype, count=total)
            fh.write(arr.tobytes())
            count += arr.size
            if advance is not None:
                advance(len(chunk))
    os.replace(tmp, path)
    return count


def _write_json_atomic(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def _progress(enabled: bool, total: int):
    """A rich progress bar over stories, or a no-op."""
    if not enabled:
        return None, None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    task = bar.add_task("tokenizing stories", total=total)
    return bar, (lambda n: bar.advance(task, n))


def _reuse(directory: Path, data_cfg: DataConfig, source: Source) -> PreparedData | None:
    meta = read_meta(directory)
    if meta is None or meta.get("format_version") != FORMAT_VERSION or not _complete(directory, meta):
        return None
    if meta["source"].get("files") != _source_signature(data_cfg, source):
        return None  # the corpus changed since this folder was written
    tokenizer = load_tokenizer(directory / "tokenizer")
    check_fingerprint(meta, tokenizer)  # the saved tokenizer must be the one that made the token files
    return PreparedData(directory, directory / SPLIT_FILES["train"], directory / SPLIT_FILES["val"], meta,
                        tokenizer)


def prepare_data(cfg: Config, progress: bool = False) -> PreparedData:
    """Build (or reuse) the prepared token folder for cfg.data and return where everything is."""
    data_cfg = cfg.data
    check_output_dir(data_cfg.cache_dir, "data.cache_dir")
    source = resolve_source(data_cfg)
    directory = Path(data_cfg.cache_dir) / cache_name(data_cfg, source)
    reused = _reuse(directory, data_cfg, source)
    if reused is not None:
        return reused

    t0 = time.perf_counter()
    stories = {"train": load_split(data_cfg, "train"), "val": load_split(data_cfg, "validation")}
    t_read = time.perf_counter()
    tokenizer = build_tokenizer(data_cfg, stories["train"])  # char/bpe learn from train only
    t_tok = time.perf_counter()
    dtype = token_dtype(tokenizer.vocab_size)

    # Written into a temporary folder and renamed into place: an interrupted prepare leaves the cache as it was.
    with output_dir(data_cfg.cache_dir, "data.cache_dir"):
        tmp = directory.with_name(f"{TMP_PREFIX}{directory.name}-{os.getpid()}")
        try:
            splits = _write_folder(tmp, tokenizer, stories, dtype, data_cfg.num_workers, progress)
            t_end = time.perf_counter()
            meta = _meta(tokenizer, dtype, splits, source, data_cfg, [t0, t_read, t_tok, t_end])
            _write_json_atomic(tmp / "meta.json", meta)
            _replace_folder(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return PreparedData(directory, directory / SPLIT_FILES["train"], directory / SPLIT_FILES["val"], meta,
                        tokenizer)


def _write_folder(folder: Path, tokenizer: Tokenizer, stories: dict[str, list[str]], dtype: np.dtype,
                  workers: int, progress: bool) -> dict[str, dict[str, Any]]:
    """The tokenizer and one token file per split in `folder`; returns meta.json's `splits`."""
    folder.mkdir()
    tokenizer.save(folder / "tokenizer")
    bar, advance = _progress(progress, sum(len(s) for s in stories.values()))
    splits: dict[str, dict[str, Any]] = {}
    try:
        if bar is not None:
            bar.start()
        with encoder(workers) as encode:
            for split, name in SPLIT_FILES.items():
                n_tokens = _write_tokens(folder / name, tokenizer, stories[split], dtype, encode, advance)
                splits[split] = {"file": name, "tokens": n_tokens, "stories": len(stories[split]),
                                 "bytes": sum(len(s.encode("utf-8")) for s in stories[split])}
    finally:
        if bar is not None:
            bar.stop()
    return splits


def _replace_folder(new: Path, final: Path) -> None:
    """Put `new` where `final` is, replacing an older folder of that name."""
    old = final.with_name(f"{TMP_PREFIX}old-{final.name}-{os.getpid()}")
    if final.exists():
        os.rename(final, old)
    os.rename(new, final)
    shutil.rmtree(old, ignore_errors=True)


def _meta(tokenizer: Tokenizer, dtype: np.dtype, splits: dict[str, dict[str, Any]], source: Source,
          data_cfg: DataConfig, times: list[float]) -> dict[str, Any]:
    """meta.json of a prepared folder; `times` are the read, tokenizer and tokenize-and-write boundaries."""
    t0, t_read, t_tok, t_end = times
    return {
        "format_version": FORMAT_VERSION,
        "tokenizer": {"kind": tokenizer.kind, "fingerprint": tokenizer.fingerprint,
                      "vocab_size": tokenizer.vocab_size, "eos_id": tokenizer.eos_id, "path": "tokenizer"},
        "dtype": dtype.name,
        "eos_after_every_story": True,
        "splits": splits,
        "source": {"description": source.describe(), "dataset": data_cfg.dataset,
                   "max_stories": data_cfg.max_stories, "files": _source_signature(data_cfg, source)},
        "split_rule": split_rule(source, data_cfg),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": {"read": round(t_read - t0, 3), "tokenizer": round(t_tok - t_read, 3),
                    "tokenize_and_write": round(t_end - t_tok, 3)},
    }
