"""The SEAL table: row order, what `wins` compares, paired intervals, verdict lines, the committed CSVs."""

from __future__ import annotations

import pytest

from tinygpt_mlx.errors import UserError
from tinygpt_mlx.seal.analyze import table_rows, verdicts
from tinygpt_mlx.seal.summary import (
    CONTEXT_COLUMNS,
    CONTEXTS_CSV,
    ROUND_COLUMNS,
    ROUNDS_CSV,
    context_rows,
    read_contexts,
    write_csv,
)

CONTEXTS = [f"story-{i}" for i in range(6)]


def _row(label, method, round_no, context_id, reward, delta=None, acc=None, inner_text="passage+edit"):
    delta = reward if delta is None else delta
    return {"label": label, "method": method, "round": round_no, "inner_text": inner_text, "context_id": context_id,
            "samples": 1, "target_loss": 3.0 - delta, "delta_loss": delta, "forgetting": 0.0, "reward": reward,
            "cloze_acc": acc, "cloze_items": 2}


def _table(seal_offset: float, control_offset: float = 0.0) -> list[dict]:
    rows = []
    for i, c in enumerate(CONTEXTS):
        spread = 0.1 * i  # contexts differ a lot; rows by a steady amount
        rows += [_row("no adaptation", "none", 0, c, 0.0, acc=0.0),
                 _row("train on passage", "passage", 0, c, 0.2 + spread, acc=0.5),
                 _row("passage + base-model self-edits", "self_edit", 0, c, 0.1 + spread, acc=0.5),
                 _row("frozen policy (control)", "control", 0, c, 0.1 + spread + control_offset, acc=0.5),
                 _row("SEAL round 1", "self_edit", 1, c, 0.2 + spread + seal_offset, acc=0.5 + seal_offset),
                 _row("in-context (upper bound)", "in_context", 0, c, 1.0, acc=1.0)]
    return rows


def test_rows_come_in_table_order_with_intervals_against_the_passage_and_the_base_edits():
    rows = table_rows(_table(0.05), [{"round": 1, "kept": 4, "train_reward": 0.1}])
    assert [r["method"] for r in rows] == ["no adaptation", "train on passage", "passage + base-model self-edits",
                                           "frozen policy (control)", "SEAL round 1", "in-context (upper bound)"]
    seal = rows[4]
    assert seal["reward_vs_passage"] == pytest.approx(0.05)
    assert seal["reward_vs_passage_low"] == pytest.approx(0.05) == seal["reward_vs_passage_high"]
    assert seal["reward_vs_base_edits"] == pytest.approx(0.15) and seal["acc_vs_passage"] == pytest.approx(0.05)
    assert (seal["kept"], seal["train_reward"], seal["contexts"]) == (4, 0.1, 6)
    assert rows[1].get("reward_vs_passage") is None and rows[2].get("reward_vs_base_edits") is None
    assert rows[3]["reward_vs_base_edits"] == pytest.approx(0.0)


def test_wins_over_the_passage_compare_rewards_as_the_filter_does():
    # Each SEAL edit lowers the target loss more than the passage (delta) but forgets more (reward).
    rows = [_row("train on passage", "passage", 0, c, reward=0.2, delta=0.2) for c in CONTEXTS]
    rows += [_row("SEAL round 1", "self_edit", 1, c, reward=0.1, delta=0.3) for c in CONTEXTS]
    table = table_rows(rows, [])
    assert table[1]["wins_vs_passage"] == 0.0


def test_verdicts_say_higher_lower_or_no_difference_at_95_percent():
    lines = verdicts(_table(0.05))
    assert lines[1].startswith("- SEAL round 1 - train on passage: reward +0.0500 [+0.0500, +0.0500] nats/token "
                               "(higher at 95%)")
    assert "(lower at 95%)" in verdicts(_table(-0.05))[1]
    noisy = _table(0.0)
    for r, sign in zip([r for r in noisy if r["label"] == "SEAL round 1"], [1, -1] * 3, strict=True):
        r["reward"] += sign * 0.01 * (1 + CONTEXTS.index(r["context_id"]))
    # Differences +0.01, -0.02, ..., -0.06: a mean of -0.005 well inside the noise.
    assert verdicts(noisy)[1].startswith("- SEAL round 1 - train on passage: reward -0.0050 [")
    assert "nats/token (no difference at 95%)" in verdicts(noisy)[1]
    assert [line.split(":")[0] for line in lines] == [
        "- SEAL round 1 - no adaptation", "- SEAL round 1 - train on passage",
        "- SEAL round 1 - passage + base-model self-edits", "- SEAL round 1 - frozen policy (control)"]


def test_the_committed_csvs_rebuild_the_same_table(tmp_path):
    records = []
    for r in _table(0.02):
        method = r["method"]
        for sample in (0, 1):  # two samples per context: the CSV keeps their mean
            records.append({"type": "edit", "round": r["round"], "split": "heldout", "method": method,
                            "inner_text": None if method in ("none", "passage", "in_context") else "passage+edit",
                            "context_id": r["context_id"], "sample": sample, "target_loss": r["target_loss"],
                            "delta_loss": r["delta_loss"], "forgetting": 0.0,
                            "reward": r["reward"] + (0.01 if sample else -0.01), "cloze_acc": r["cloze_acc"],
                            "cloze_items": 2})
    records.append({"type": "round", "round": 1, "kept": 3, "train_reward": 0.25, "heldout_reward": 0.1,
                    "policy_loss": 2.5, "wall_s": 9.0})
    contexts = context_rows(records)
    assert {r["samples"] for r in contexts} == {2}
    seal_rows = [r for r in contexts if r["label"] == "SEAL round 1"]
    assert seal_rows[0]["reward"] == pytest.approx(0.22)
    rounds = [{k: r.get(k) for k in ROUND_COLUMNS} for r in records if r["type"] == "round"]
    write_csv(contexts, CONTEXT_COLUMNS, tmp_path / CONTEXTS_CSV)
    write_csv(rounds, ROUND_COLUMNS, tmp_path / ROUNDS_CSV)
    back, back_rounds = read_contexts(tmp_path)
    assert table_rows(back, back_rounds) == table_rows(contexts, rounds)
    (tmp_path / CONTEXTS_CSV).write_text(",".join(CONTEXT_COLUMNS) + "\nSEAL round 1,self_edit,x,,c,1,,,,,,\n")
    with pytest.raises(UserError, match=r"seal_contexts.csv:2: round is not a number \('x'\)"):
        read_contexts(tmp_path)
