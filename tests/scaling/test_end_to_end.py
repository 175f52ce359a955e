"""A 3 x 3 grid of tiny runs, end to end: `tinygpt sweep` -> `tinygpt scaling fit --holdout` -> prediction table,
diagnostics and fits.md. Three sizes and three budgets are the fewest that determine the joint law."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from tinygpt_mlx.cli import app
from tinygpt_mlx.config import dump_config
from tinygpt_mlx.scaling.fit import LAWS, predict
from tinygpt_mlx.scaling.runs import read_summary


def test_tiny_grid_sweep_then_fit_with_a_held_out_run(tmp_path, make_config):
    base = make_config(tmp_path, model={"d_model": 16, "n_layers": 1}, eval={"eval_every": 1000},
                       checkpoint={"save_every": 1000, "keep_last_k": 1})
    dump_config(base, tmp_path / "base.yaml")
    sweep_file = tmp_path / "grid.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "base_config": "base.yaml",
        "grid": {"size": {"model.d_model": [16, 24, 32], "optim.lr": [0.004, 0.003, 0.002]},
                 "schedule.max_steps": [4, 8, 16]}}, sort_keys=False))
    runner = CliRunner()
    out = tmp_path / "sweep"
    swept = runner.invoke(app, ["sweep", "-c", str(sweep_file), "--output_dir", str(out), "--in-process"])
    assert swept.exit_code == 0, swept.output
    rows = read_summary(out / "sweep_summary.csv")
    assert len(rows) == 9 and {r["status"] for r in rows} == {"done"}
    assert sorted({r["tokens_seen"] for r in rows}) == [4 * 128, 8 * 128, 16 * 128]

    fits = tmp_path / "fits"
    fitted = runner.invoke(app, ["scaling", "fit", "--results", str(out), "--output_dir", str(fits),
                                 "--holdout", "d_model-32_max_steps-16", "--bootstrap", "20"])
    assert fitted.exit_code == 0, fitted.output
    assert "held-out runs: L(N, D) fitted to the rest" in fitted.output
    assert "d_model-32_max_steps-16" in fitted.output and "leave-one-out" in fitted.output
    report = json.loads((fits / "fits.json").read_text())
    joint = report["laws"]["ND"]
    assert joint["n_points"] == 8 and "d_model-32_max_steps-16" not in joint["selection"]["runs"]
    (held,) = report["holdout"]["predictions"]
    run = next(r for r in rows if r["name"] == "d_model-32_max_steps-16")
    assert held["measured"] == pytest.approx(run["final_val_loss"])
    x = np.array([[run["non_embedding_params"], run["tokens_seen"]]], dtype=float)
    assert held["predicted"] == pytest.approx(predict(LAWS["ND"], joint["params"], x)[0])
    assert held["error_pct"] == pytest.approx(100 * (held["predicted"] / held["measured"] - 1))
    assert [r["name"] for r in joint["residuals"]] == joint["selection"]["runs"]
    assert len(joint["leave_one_out"]["refits"]) + len(joint["leave_one_out"]["essential"]) == 8
    md = (fits / "fits.md").read_text()
    for heading in ("## Runs", "## Laws", "## Joint fit beside Chinchilla", "## Prediction of held-out runs",
                    "## Leave-one-out"):
        assert heading in md
    for name in ("fit_ND.png", "residuals_ND.png", "residuals_ND.svg", "fits.yaml"):
        assert (fits / name).is_file()
