"""adapt.jsonl: one JSON record per line, appended and fsynced; a round counts once its `round` record exists.

Record types: `edit` (one inner-loop adaptation: a self-edit, the context itself, or none), and `round`
(a finished round: its summary, written after the round's policy weights). On resume everything after
the last `round` record belongs to an unfinished round and is cut off, so a resumed run writes exactly
the lines a straight run would have.
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


class RecordLog:
    """Append-only adapt.jsonl in a run folder."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / ADAPT_LOG

    def records(self) -> list[dict[str, Any]]:
        return read_records(self.path)

    def finished_rounds(self) -> list[int]:
        """Numbers of the rounds whose `round` record exists."""
        return [r["round"] for r in self.records() if r["type"] == "round"]

    def truncate_unfinished(self) -> int:
        """Drop records after the last `round` record; return the last finished round (-1 if none)."""
        records = self.records()
        ends = [i for i, r in enumerate(records) if r["type"] == "round"]
        keep = records[: ends[-1] + 1] if ends else []
        if len(keep) != len(records) or (self.path.is_file() and not self.path.read_text().endswith("\n")):
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
            os.replace(tmp, self.path)  # atomic: a crash here leaves the old or the new file, never half
        return keep[-1]["round"] if keep else -1

    def append(self, record: dict[str, Any]) -> None:
        """Append one record and fsync it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
