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

ADAPT_LOG = "adapt.jsonl"


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every complete record of a jsonl file (a torn last line from a crash is ignored)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # only the last line can be torn: appends are sequential
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
