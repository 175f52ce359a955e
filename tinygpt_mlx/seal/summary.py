"""adapt.jsonl -> the small files a SEAL result is kept as: one row per (table row, held-out context), one per round.

`seal_contexts.csv` holds, for every table row and held-out context, the means over that context's
samples (each already averaged over the LoRA seeds); `seal_rounds.csv` holds the round records. Both are
small enough to commit, and `seal analyze` rebuilds the table from them alone, bootstrap included.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from tinygpt_mlx.errors import UserError

CONTEXTS_CSV, ROUNDS_CSV = "seal_contexts.csv", "seal_rounds.csv"
CONTEXT_COLUMNS = ("label", "method", "round", "inner_text", "context_id", "samples", "target_loss", "delta_loss",
                   "forgetting", "reward", "cloze_acc", "cloze_items")
ROUND_COLUMNS = ("round", "kept", "train_reward", "heldout_reward", "policy_loss", "wall_s")
MEANS = ("target_loss", "delta_loss", "forgetting", "reward", "cloze_acc")
NO_ADAPTATION, PASSAGE, IN_CONTEXT, CONTROL = ("no adaptation", "train on passage", "in-context (upper bound)",
                                               "frozen policy (control)")


def base_edits_label(inner_text: str | None) -> str:
    """The round-0 row of the base model's self-edits trained with inner_text."""
    return "base-model self-edits alone" if inner_text == "edit" else "passage + base-model self-edits"


def row_label(record: dict[str, Any]) -> str:
    """Table row of a held-out record."""
    method = record["method"]
    fixed = {"none": NO_ADAPTATION, "passage": PASSAGE, "in_context": IN_CONTEXT, "control": CONTROL}
    if method in fixed:
        return fixed[method]
    if record["round"] == 0:
        return base_edits_label(record.get("inner_text"))
    return f"SEAL round {record['round']}"


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def context_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (table row, held-out context): the means over its samples, in record order."""
    groups: dict[tuple[str, Any], list[dict]] = defaultdict(list)
    for r in records:
        if r["type"] == "edit" and r["split"] == "heldout":
            groups[(row_label(r), r["context_id"])].append(r)
    rows = []
    for (label, context_id), rs in groups.items():
        accs = [r["cloze_acc"] for r in rs if r.get("cloze_acc") is not None]
        rows.append({"label": label, "method": rs[0]["method"], "round": rs[0]["round"],
                     "inner_text": rs[0].get("inner_text") or "", "context_id": str(context_id),
                     "samples": len(rs), **{k: _mean([r[k] for r in rs]) for k in MEANS[:-1]},
                     "cloze_acc": _mean(accs), "cloze_items": rs[0].get("cloze_items", 0)})
    return rows


def round_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The round records, one row each."""
    return [{k: r.get(k) for k in ROUND_COLUMNS} for r in records if r["type"] == "round"]


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def write_csv(rows: list[dict[str, Any]], columns: tuple[str, ...], path: Path) -> Path:
    """rows under columns, floats written exactly (repr), empty cells for missing values."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows([{k: _cell(row.get(k)) for k in columns} for row in rows])
    return path


def read_csv(path: Path, columns: tuple[str, ...], numbers: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows of a CSV this module wrote, numbers parsed (empty: None); anything else is refused in one line."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != columns:
                raise UserError(f"{path} does not have the columns `seal analyze` writes ({', '.join(columns)})")
            rows = list(reader)
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text, so not a `seal analyze` file") from None
    for line, row in enumerate(rows, 2):
        for key in numbers:
            text = row[key]
            try:
                row[key] = None if text in ("", None) else float(text)
            except ValueError:
                raise UserError(f"{path}:{line}: {key} is not a number ({text!r})") from None
    return rows


def read_contexts(folder: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(context rows, round rows) from the CSV files in folder (no rounds file: no round rows)."""
    path = folder / CONTEXTS_CSV
    contexts = read_csv(path, CONTEXT_COLUMNS, ("round", *MEANS, "samples", "cloze_items"))
    for line, row in enumerate(contexts, 2):
        missing = [k for k in ("label", "context_id", "round", "samples", "reward") if row[k] in (None, "")]
        if missing:
            raise UserError(f"{path}:{line} lacks {', '.join(missing)}")
        for key in ("round", "samples", "cloze_items"):
            row[key] = int(row[key] or 0)
    rounds_path = folder / ROUNDS_CSV
    rounds = read_csv(rounds_path, ROUND_COLUMNS, ROUND_COLUMNS) if rounds_path.is_file() else []
    for line, row in enumerate(rounds, 2):
        if row["round"] is None:
            raise UserError(f"{rounds_path}:{line} lacks round")
        row["round"] = int(row["round"])
        row["kept"] = None if row["kept"] is None else int(row["kept"])
    return contexts, rounds
