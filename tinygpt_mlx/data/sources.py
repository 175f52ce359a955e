"""Where stories come from: the Hugging Face hub (roneneldan/TinyStories) or local .txt/.jsonl/.parquet files.

`load_split` returns plain lists of story strings; tokenization happens in prepare.py. Local files win over
the hub whenever `data.data_dir` or TINYGPT_DATA_DIR names them, so an offline machine never touches the network.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from tinygpt_mlx.config import DataConfig
from tinygpt_mlx.errors import UserError

HUB_DATASET = "roneneldan/TinyStories"
ENV_DATA_DIR = "TINYGPT_DATA_DIR"
SEPARATOR = "<|endoftext|>"
SUFFIXES = (".txt", ".jsonl", ".parquet")
SPLITS = ("train", "validation")
_VALID_NAME = re.compile(r"valid|(?<![a-z])val(?![a-z])|test")


@dataclass(frozen=True)
class Source:
    """A resolved source: the hub, or local files grouped by split (`pool` when no split is named)."""

    kind: str  # "hub" or "local"
    root: str  # the hub dataset id, or the local path given
    train: tuple[Path, ...] = ()
    validation: tuple[Path, ...] = ()
    pool: tuple[Path, ...] = ()  # files to split by hash when there is no validation file

    def describe(self) -> str:
        """One line naming the data, for meta.json and logs."""
        if self.kind == "hub":
            return f"hub:{self.root}"
        return f"local:{self.root}"


def local_dir(data_cfg: DataConfig) -> str | None:
    """The local path in effect: data.data_dir, else $TINYGPT_DATA_DIR (only for dataset tinystories)."""
    if data_cfg.data_dir:
        return data_cfg.data_dir
    if data_cfg.dataset == "tinystories":
        return os.environ.get(ENV_DATA_DIR) or None
    return None


def resolve_source(data_cfg: DataConfig) -> Source:
    """Decide hub vs local and, for local, which files hold which split."""
    path_text = local_dir(data_cfg)
    if path_text is None:
        if data_cfg.dataset == "local":
            raise UserError("data.dataset = 'local' needs data.data_dir (a .txt/.jsonl/.parquet file or folder)")
        return Source("hub", HUB_DATASET)
    path = Path(path_text).expanduser()
    if not path.exists():
        raise UserError(f"data path not found: {path} (set data.data_dir or {ENV_DATA_DIR} to existing files)")
    if path.is_file():
        if path.suffix not in SUFFIXES:
            raise UserError(f"unsupported data file {path}; use one of {', '.join(SUFFIXES)}")
        return Source("local", str(path.resolve()), pool=(path,))
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in SUFFIXES)
    if not files:
        raise UserError(f"no {'/'.join(SUFFIXES)} files in {path}")
    train = tuple(p for p in files if "train" in p.stem.lower())
    valid = tuple(p for p in files if p not in train and _VALID_NAME.search(p.stem.lower()))
    if train and valid:
        return Source("local", str(path.resolve()), train=train, validation=valid)
    # No named validation file: split the train files (or every file, if none is named train) by hash.
    return Source("local", str(path.resolve()), pool=train or tuple(files))


def split_rule(source: Source, data_cfg: DataConfig) -> str:
    """Human-readable rule that produced the train/validation split (recorded in meta.json)."""
    if source.kind == "hub":
        return "hub splits train / validation"
    if not source.pool:
        return "file names: *train* -> train, *valid*/*val*/*test* -> validation"
    return (f"hash split: a story is validation when sha256('{data_cfg.split_seed}:' + story) "
            f"falls below val_frac={data_cfg.val_frac}")


def _read_text(path: Path) -> str:
    """A corpus file's text; one line naming the file and the first bad byte when it is not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise UserError(f"{path} is not UTF-8 text: byte {data[err.start]:#04x} at offset {err.start} (line "
                        f"{line}); convert it, e.g. iconv -f latin1 -t utf-8") from None


def _jsonl_stories(path: Path) -> list[str]:
    stories = []
    for lineno, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            text = json.loads(line)["text"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{path}:{lineno} is not a JSON object with a 'text' field") from None
        if text is not None and not isinstance(text, str):
            raise UserError(f"{path}:{lineno}: 'text' must be a string, got {type(text).__name__}")
        stories.append(text)
    return stories


def _parquet_stories(path: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"{path} is not a readable parquet file: {str(err).splitlines()[0]}") from None
    if "text" not in table.column_names:
        raise UserError(f"{path} has no 'text' column (columns: {', '.join(table.column_names)})")
    column = table.column("text")
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise UserError(f"{path}: column 'text' must hold strings, it holds {column.type}")
    return column.to_pylist()


def read_stories(path: Path) -> list[str]:
    """Stories of one local file: .txt split on <|endoftext|>, .jsonl `text` field, .parquet `text` column."""
    if path.suffix == ".txt":
        stories = _read_text(path).split(SEPARATOR)
    elif path.suffix == ".jsonl":
        stories = _jsonl_stories(path)
    elif path.suffix == ".parquet":
        stories = _parquet_stories(path)
    else:
        raise UserError(f"unsupported data file {path}; use one of {', '.join(SUFFIXES)}")
    return [s.strip() for s in stories if s and s.strip()]


def is_validation(story: str, seed: int, val_frac: float) -> bool:
    """Seeded, content-addressed split: the same story always lands on the same side, on any machine."""
    digest = hashlib.sha256(f"{seed}:{story}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_frac


def _hash_split(stories: list[str], split: str, data_cfg: DataConfig) -> list[str]:
    flags = [is_validation(s, data_cfg.split_seed, data_cfg.val_frac) for s in stories]
    if len(stories) >= 2 and not any(flags):
        flags[0] = True  # a tiny corpus still gets one validation story
    want = split == "validation"
    return [s for s, f in zip(stories, flags, strict=True) if f == want]


def _check_hub_reachable(timeout: float = 3.0) -> None:
    """Fail in seconds, not after minutes of retries, when the hub cannot be reached."""
    hint = (f"point data.data_dir (or the {ENV_DATA_DIR} environment variable) at local TinyStories files, "
            "e.g. a folder with tinystories_train.txt and tinystories_valid.txt")
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or \
            os.environ.get("HF_DATASETS_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise UserError(f"the Hugging Face hub is disabled (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE); {hint}")
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        raise UserError(f"the Hugging Face hub ({host}) is unreachable; {hint}") from None


def _load_hub(split: str, data_cfg: DataConfig) -> list[str]:
    _check_hub_reachable()
    import datasets

    try:
        ds = datasets.load_dataset(HUB_DATASET, split=split, streaming=data_cfg.streaming)
        rows = ds if data_cfg.max_stories is None else itertools.islice(ds, data_cfg.max_stories)
        return [row["text"].strip() for row in rows if row["text"] and row["text"].strip()]
    except ConnectionError as err:
        raise UserError(f"reading {HUB_DATASET} from the hub failed ({err}); set data.data_dir to local files")\
            from None


def load_split(data_cfg: DataConfig, split: str) -> list[str]:
    """Stories of one split ("train" or "validation"), capped at data.max_stories."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    source = resolve_source(data_cfg)
    if source.kind == "hub":
        stories = _load_hub(split, data_cfg)
    elif source.pool:
        pooled = [s for p in source.pool for s in read_stories(p)]
        stories = _hash_split(pooled, split, data_cfg)
    else:
        stories = [s for p in getattr(source, split) for s in read_stories(p)]
    if data_cfg.max_stories is not None:
        stories = stories[: data_cfg.max_stories]
    if not stories:
        raise UserError(f"the {split} split of {source.describe()} has no stories")
    return stories
