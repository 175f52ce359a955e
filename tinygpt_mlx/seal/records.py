"""adapt.jsonl: one JSON record per line, appended and fsynced; a round counts once its `round` record exists.

Record types: `edit` (one scored adaptation: a self-edit, the passage, the context in the prompt, or
none), and `round` (a finished round: its summary, written after the round's policy weights). An edit
record is named by its key (round, split, method, inner text, context, sample); a resumed run replays
the records it finds under their keys and computes only the others, in the order a straight run would.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tinygpt_mlx.errors import UserError

ADAPT_LOG = "adapt.jsonl"
RECORD_TYPES = ("edit", "round")


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every complete record of a jsonl file (a torn last line from a crash is ignored)."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text, so not a `seal adapt` record file") from None
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break  # only the last line can be torn: appends are sequential
            raise UserError(f"{path}:{number} is not JSON, so the file is not a `seal adapt` record file") from None
        if not isinstance(record, dict) or record.get("type") not in RECORD_TYPES:
            raise UserError(f"{path}:{number} is not a `seal adapt` record (type {' or '.join(RECORD_TYPES)})")
        records.append(record)
    return records


def record_key(record: dict[str, Any]) -> tuple:
    """What names an edit record: (round, split, method, inner_text, context_id, sample)."""
    return (record["round"], record["split"], record["method"], record.get("inner_text"), record["context_id"],
            record.get("sample", 0))


class RecordLog:
    """Append-only adapt.jsonl in a run folder."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / ADAPT_LOG

    def records(self) -> list[dict[str, Any]]:
        """Every complete record in the file."""
        return read_records(self.path)

    def resume(self) -> list[dict[str, Any]]:
        """Every complete record; a torn last line (the process killed mid-write) is cut off the file first."""
        records = self.records()
        if self.path.is_file() and self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n"):
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
            os.replace(tmp, self.path)  # atomic: a kill here leaves the old or the new file, never half
        return records

    def append(self, record: dict[str, Any]) -> None:
        """Append one record and fsync it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
