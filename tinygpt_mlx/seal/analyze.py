"""The SEAL table: one row per method on the held-out contexts, each compared context by context.

Rows: no adaptation, training on the passage, the base model's self-edits (with the passage and alone),
the frozen-policy control, every SEAL round, and the in-context upper bound. Δ loss is in nats/token of
the no-context target loss (positive is better), reward = Δ loss - λ x forgetting (what ReST selects
on), cloze accuracy is the share of knowledge items answered without the context. Differences are
paired bootstrap means over contexts with 95% intervals (stats.py), against training on the passage
and, for SEAL rounds and the control, against the base model's self-edits. Under the table, one line per
SEAL round and baseline says whether the difference is outside the 95% interval.

`analyze` reads adapt.jsonl when the run folder has it (and writes seal_contexts.csv / seal_rounds.csv
from it, plus the plots), else the two CSV files alone: a committed result rebuilds its table.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from tinygpt_mlx.errors import UserError
from tinygpt_mlx.seal.plots import grid_means, plot_budget, plot_pareto
from tinygpt_mlx.seal.records import ADAPT_LOG, read_records
from tinygpt_mlx.seal.stats import Difference, paired_difference
from tinygpt_mlx.seal.summary import (
    CONTEXT_COLUMNS,
    CONTEXTS_CSV,
    CONTROL,
    IN_CONTEXT,
    NO_ADAPTATION,
    PASSAGE,
    ROUND_COLUMNS,
    ROUNDS_CSV,
    base_edits_label,
    context_rows,
    read_contexts,
    round_rows,
    write_csv,
)

NUMBER_FIELDS = ("delta_loss", "target_loss", "forgetting", "reward")  # of an `edit` record
COMPARISONS = (("passage", PASSAGE), ("base_edits", None))  # column prefix, row compared with (None: base edits)
TABLE_COLUMNS = ("method", "round", "contexts", "samples", "target_loss", "delta_loss", "forgetting", "reward",
                 *(f"{m}_vs_{c}{end}" for c, _ in COMPARISONS for m in ("reward", "acc")
                   for end in ("", "_low", "_high")),
                 "wins_vs_passage", "cloze_acc", "train_reward", "kept")


def check_fields(records: list[dict[str, Any]], path: Path) -> None:
    """Refuse records that lack what the table and plots read (a file not written by `seal adapt`)."""
    for number, record in enumerate(records, 1):
        if record["type"] != "edit":
            fields: tuple[str, ...] = ("round",)
        else:
            fields = ("round", "split", "method", "context_id", *NUMBER_FIELDS)
        missing = [f for f in fields if f not in record]
        wrong = [f for f in NUMBER_FIELDS if f in record and record["type"] == "edit"
                 and not isinstance(record[f], (int, float))]
        if record["type"] == "edit" and not isinstance(record.get("cloze_acc", 0.0), (int, float, type(None))):
            wrong.append("cloze_acc")
        grid = record.get("grid", [])
        if not isinstance(grid, list) or not all(isinstance(g, dict) and all(
                isinstance(g.get(k), (int, float)) for k in ("steps", "rank", "delta_loss", "forgetting"))
                for g in grid):
            wrong.append("grid")
        if missing or wrong or not isinstance(record["round"], int):
            what = f"lacks {', '.join(missing)}" if missing else f"has a non-number in {', '.join(wrong) or 'round'}"
            raise UserError(f"{path}: record {number} {what}; the file was not written by `seal adapt`")


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _order(labels: set[str]) -> list[str]:
    seal = sorted((k for k in labels if k.startswith("SEAL round")), key=lambda k: int(k.split()[-1]))
    order = [NO_ADAPTATION, PASSAGE, base_edits_label("passage+edit"), base_edits_label("edit"), CONTROL,
             *seal, IN_CONTEXT]
    return [k for k in order if k in labels]


def _by_context(rows: list[dict[str, Any]], key: str) -> dict[str, float | None]:
    return {r["context_id"]: r[key] for r in rows}


def table_rows(contexts: list[dict[str, Any]], rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method, in table order, with its paired differences."""
    by_label: dict[str, list[dict]] = defaultdict(list)
    for row in contexts:
        by_label[row["label"]].append(row)
    seal_text = next((r["inner_text"] for r in contexts if r["label"].startswith("SEAL")), "passage+edit")
    reference = {"passage": PASSAGE, "base_edits": base_edits_label(seal_text)}
    summary = {r["round"]: r for r in rounds}
    table = []
    for label in _order(set(by_label)):
        rows = by_label[label]
        seal = label.startswith("SEAL")
        out: dict[str, Any] = {
            "method": label, "round": rows[0]["round"], "contexts": len(rows), "samples": sum(r["samples"] for r in rows),
            **{k: _mean([r[k] for r in rows]) for k in ("target_loss", "delta_loss", "forgetting", "reward",
                                                         "cloze_acc")},
            "train_reward": summary.get(rows[0]["round"], {}).get("train_reward") if seal else None,
            "kept": summary.get(rows[0]["round"], {}).get("kept") if seal else None,
        }
        for prefix, other in reference.items():
            if label == other or (prefix == "base_edits" and not (seal or label == CONTROL)):
                continue
            for metric, key in (("reward", "reward"), ("acc", "cloze_acc")):
                diff = paired_difference(_by_context(rows, key), _by_context(by_label.get(other, []), key))
                if diff is not None:
                    out.update({f"{metric}_vs_{prefix}": diff.mean, f"{metric}_vs_{prefix}_low": diff.low,
                                f"{metric}_vs_{prefix}_high": diff.high})
        passage = _by_context(by_label.get(PASSAGE, []), "reward")
        wins = [r["reward"] > passage[r["context_id"]] for r in rows if r["context_id"] in passage]
        out["wins_vs_passage"] = _mean([float(w) for w in wins]) if label not in (PASSAGE, NO_ADAPTATION) else None
        table.append(out)
    return table


def verdicts(contexts: list[dict[str, Any]]) -> list[str]:
    """One line per (SEAL round, baseline): reward and accuracy differences and whether 95% excludes 0."""
    by_label: dict[str, list[dict]] = defaultdict(list)
    for row in contexts:
        by_label[row["label"]].append(row)
    seal_rows = [k for k in _order(set(by_label)) if k.startswith("SEAL")]
    seal_text = next((r["inner_text"] for r in contexts if r["label"].startswith("SEAL")), "passage+edit")
    lines = []
    for label in seal_rows:
        for other in (NO_ADAPTATION, PASSAGE, base_edits_label(seal_text), CONTROL):
            if other not in by_label:
                continue
            parts = []
            for metric, key, unit in (("reward", "reward", " nats/token"), ("cloze accuracy", "cloze_acc", "")):
                diff = paired_difference(_by_context(by_label[label], key), _by_context(by_label[other], key))
                if diff is not None:
                    parts.append(f"{metric} {_interval(diff)}{unit} ({_words(diff)})")
            lines.append(f"- {label} - {other}: {'; '.join(parts)}")
    return lines


def _words(diff: Difference) -> str:
    return "no difference at 95%" if diff.verdict == "no difference" else f"{diff.verdict} at 95%"


def _interval(diff: Difference) -> str:
    return f"{diff.mean:+.4f} [{diff.low:+.4f}, {diff.high:+.4f}]"


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _ci(row: dict[str, Any], name: str) -> str:
    if row.get(name) is None:
        return ""
    return f"{row[name]:+.4f} [{row[name + '_low']:+.4f}, {row[name + '_high']:+.4f}]"


MD_COLUMNS = ("method", "contexts", "samples", "target loss", "Δ loss", "forgetting", "reward",
              "reward − passage (95% CI)", "wins vs passage", "cloze acc", "acc − passage (95% CI)",
              "reward − base self-edits (95% CI)", "kept")


def _md_row(row: dict[str, Any]) -> list[str]:
    return [row["method"], *(_cell(row[k]) for k in ("contexts", "samples", "target_loss", "delta_loss",
                                                       "forgetting", "reward")),
            _ci(row, "reward_vs_passage"), _cell(row["wins_vs_passage"]), _cell(row["cloze_acc"]),
            _ci(row, "acc_vs_passage"), _ci(row, "reward_vs_base_edits"), _cell(row["kept"])]


def write_table(rows: list[dict[str, Any]], lines: list[str], out_dir: Path) -> tuple[Path, Path]:
    """seal_table.csv and seal_table.md (the table, then the verdict lines)."""
    csv_path, md_path = out_dir / "seal_table.csv", out_dir / "seal_table.md"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        writer.writerows([{k: _cell(row.get(k)) for k in TABLE_COLUMNS} for row in rows])
    md = ["| " + " | ".join(MD_COLUMNS) + " |", "|" + "---|" * len(MD_COLUMNS)]
    md += ["| " + " | ".join(_md_row(row)) + " |" for row in rows]
    if lines:
        md += ["", "Paired differences over held-out contexts, 95% bootstrap intervals:", "", *lines]
    md_path.write_text("\n".join(md) + "\n")
    return csv_path, md_path


def analyze(run_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Write the table (CSV + markdown) and, from adapt.jsonl, the summary CSVs and both plots; rows and paths."""
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir else run_dir
    log = run_dir / ADAPT_LOG
    paths: list[Path] = []
    if log.is_file() or not (run_dir / CONTEXTS_CSV).is_file():
        records = read_records(log)
        if not any(r["type"] == "round" for r in records):
            raise UserError(f"{log} has no finished round yet; run `tinygpt seal adapt` first")
        check_fields(records, log)
        contexts, rounds = context_rows(records), round_rows(records)
        out.mkdir(parents=True, exist_ok=True)
        paths += [write_csv(contexts, CONTEXT_COLUMNS, out / CONTEXTS_CSV),
                  write_csv(rounds, ROUND_COLUMNS, out / ROUNDS_CSV)]
        means = grid_means(records)
        paths += [*plot_budget(means, out), *plot_pareto(means, out)]
    else:
        contexts, rounds = read_contexts(run_dir)
        out.mkdir(parents=True, exist_ok=True)
    rows = table_rows(contexts, rounds)
    paths = [*write_table(rows, verdicts(contexts), out), *paths]
    return {"rows": rows, "paths": paths}
