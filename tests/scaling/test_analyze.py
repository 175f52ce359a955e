"""From a sweep summary to fits.json / fits.yaml / plots, in the library and through both commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tinygpt_mlx.analyze_scaling import main as analyze_scaling
from tinygpt_mlx.errors import UserError
from tinygpt_mlx.scaling.analyze import fit_results
from tinygpt_mlx.scaling.runs import collect, write_summary

REPO = Path(__file__).resolve().parents[2]
TRUE = {"E": 1.3, "A": 25.0, "alpha": 0.3}
TOKENS = 2_000_000


def _width_sweep(tmp_path: Path) -> Path:
    """A sweep_summary.csv like a width sweep's: 6 sizes at one token budget, plus one failed run."""
    rng = np.random.default_rng(0)
    rows = []
    for d_model in (32, 48, 64, 96, 128, 192):
        n = 12 * 2 * d_model**2  # 2 layers
        loss = (TRUE["E"] + TRUE["A"] * n ** -TRUE["alpha"]) * np.exp(rng.normal(0, 0.005))
        rows.append({"name": f"d_model-{d_model}", "status": "done", "model.d_model": d_model,
                     "params": n + 1000, "non_embedding_params": n, "tokens_seen": TOKENS,
                     "compute_flops": 6 * n * TOKENS, "final_val_loss": loss, "best_val_loss": loss})
    rows.append({"name": "d_model-256", "status": "failed", "model.d_model": 256})
    sweep = tmp_path / "sweep"
    write_summary(rows, sweep / "sweep_summary.csv", ["model.d_model"])
    return sweep


def test_fit_results_writes_fits_and_plots_and_skips_laws_the_data_cannot_determine(tmp_path):
    sweep = _width_sweep(tmp_path)
    out = tmp_path / "fits"
    notes: list[str] = []
    report = fit_results(collect([sweep]), out, n_bootstrap=20, seed=1, say=notes.append)

    laws = report["laws"]
    assert laws["D"] == {"skipped": "law D: all runs share a single D = 2e+06; a power law in D needs at "
                                    "least two distinct values"}
    assert "skipped" in laws["ND"]
    n_law = laws["N"]
    assert n_law["n_points"] == 6 and n_law["variables"] == {"N": "non_embedding_params"}
    assert n_law["params"]["alpha"] == pytest.approx(TRUE["alpha"], abs=0.05)
    lo, hi = n_law["ci95"]["alpha"]
    assert lo <= TRUE["alpha"] <= hi
    # At one token budget C = 6 N D is N times a constant: the same exponent, K = A (6 D)^alpha.
    c_law = laws["C"]["params"]
    assert c_law["gamma"] == pytest.approx(n_law["params"]["alpha"], rel=1e-3)
    assert c_law["K"] == pytest.approx(n_law["params"]["A"] * (6 * TOKENS) ** n_law["params"]["alpha"], rel=1e-2)
    assert report["left_out"] == [{"name": "d_model-256", "status": "failed"}]
    assert [r["name"] for r in report["runs"]][0] == "d_model-32"

    assert json.loads((out / "fits.json").read_text()) == report
    assert yaml.safe_load((out / "fits.yaml").read_text()) == report
    for name in ("fit_N.png", "fit_N.svg", "fit_C.png", "fit_C.svg"):
        assert (out / name).stat().st_size > 1000
    assert not (out / "fit_D.png").exists()
    assert any(note.startswith("law D skipped, no plot") for note in notes)


def test_joint_fit_reports_the_compute_optimal_allocation(tmp_path):
    true = {"E": 1.0, "A": 30.0, "alpha": 0.35, "B": 50.0, "beta": 0.3}
    rows = []
    for n in np.geomspace(1e4, 1e6, 4):
        for d in np.geomspace(1e6, 1e8, 4):
            loss = true["E"] + true["A"] * n ** -true["alpha"] + true["B"] * d ** -true["beta"]
            rows.append({"name": f"{n:.0f}-{d:.0f}", "status": "done", "non_embedding_params": n,
                         "tokens_seen": d, "final_val_loss": loss})
    report = fit_results(rows, tmp_path, law="ND", n_bootstrap=5, say=lambda _: None)
    opt = report["laws"]["ND"]["compute_optimal"]
    assert opt["a"] == pytest.approx(0.3 / 0.65, abs=1e-3)
    assert opt["b"] == pytest.approx(0.35 / 0.65, abs=1e-3)
    for entry in opt["table"]:
        assert 6 * entry["N_opt"] * entry["D_opt"] == pytest.approx(entry["compute_flops"], rel=1e-6)
    assert (tmp_path / "fit_ND.svg").is_file()


def test_a_law_asked_for_by_name_is_refused_when_the_data_cannot_determine_it(tmp_path):
    with pytest.raises(UserError, match="all runs share a single D"):
        fit_results(collect([_width_sweep(tmp_path)]), tmp_path / "out", law="D", n_bootstrap=0)
    with pytest.raises(UserError, match="no finished runs to fit"):
        fit_results([{"name": "a", "status": "failed"}], tmp_path / "out")
    with pytest.raises(UserError, match="results not found"):
        collect([tmp_path / "missing"])


def test_scaling_fit_command_and_the_seed_alias(tmp_path, capsys):
    sweep = _width_sweep(tmp_path)
    done = subprocess.run([sys.executable, "-m", "tinygpt_mlx", "scaling", "fit", "--results", str(sweep),
                           str(sweep / "sweep_summary.csv"), "--output_dir", str(tmp_path / "cli"),
                           "--law", "N", "--bootstrap", "10"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    fits = json.loads((tmp_path / "cli" / "fits.json").read_text())
    assert fits["laws"]["N"]["n_points"] == 12  # the folder and its CSV, both given
    assert "L(N): E = " in done.stdout

    refused = subprocess.run([sys.executable, "-m", "tinygpt_mlx", "scaling", "fit", "--results", str(sweep),
                              "--output_dir", str(tmp_path / "cli"), "--law", "ND"],
                             cwd=REPO, capture_output=True, text=True)
    assert refused.returncode == 2
    assert "law ND: all runs share a single D" in refused.stderr
    assert "Traceback" not in refused.stderr

    assert analyze_scaling(["--checkpoint_dirs", str(sweep), "--output_dir", str(tmp_path / "alias"),
                            "--law", "N", "--bootstrap", "10"]) == 0
    alias = json.loads((tmp_path / "alias" / "fits.json").read_text())
    assert alias["laws"]["N"]["params"] == pytest.approx(fits["laws"]["N"]["params"], rel=1e-3)
    assert analyze_scaling(["--checkpoint_dirs", str(tmp_path / "nope"), "--output_dir", str(tmp_path)]) == 2
    assert "results not found" in capsys.readouterr().err


JOINT = {"E": 1.8, "A": 113.0, "alpha": 0.35, "B": 81.0, "beta": 0.3}


def _joint_grid(sigma: float = 0.003) -> list[dict]:
    """A 5 x 5 grid of configs/scaling_joint.yaml's sizes, losses from JOINT with noise."""
    rng = np.random.default_rng(2)
    rows = []
    for n in (100_096, 335_712, 793_344, 1_546_720, 2_669_568):
        for steps in (90, 180, 360, 720, 1440):
            d = steps * 4096
            loss = (JOINT["E"] + JOINT["A"] * n ** -JOINT["alpha"] + JOINT["B"] * d ** -JOINT["beta"]) \
                * np.exp(rng.normal(0, sigma))
            rows.append({"name": f"n{n}_s{steps}", "status": "done", "non_embedding_params": n,
                         "tokens_seen": d, "final_val_loss": loss})
    return rows


def test_held_out_largest_runs_are_predicted_by_the_fit_to_the_rest(tmp_path):
    rows = _joint_grid()
    notes: list[str] = []
    report = fit_results(rows, tmp_path, law="ND", n_bootstrap=40, holdout=["n100096_s1440"], holdout_largest=2,
                         say=notes.append)
    held = report["holdout"]
    assert held["runs"] == ["n100096_s1440", "n1546720_s1440", "n2669568_s1440"]  # named, then most compute
    assert report["laws"]["ND"]["n_points"] == 22
    assert not set(held["runs"]) & set(report["laws"]["ND"]["selection"]["runs"])
    measured = {r["name"]: r["final_val_loss"] for r in rows}
    for p in held["predictions"]:
        assert p["measured"] == measured[p["name"]]
        truth = JOINT["E"] + JOINT["A"] * p["N"] ** -JOINT["alpha"] + JOINT["B"] * p["D"] ** -JOINT["beta"]
        assert p["predicted"] == pytest.approx(truth, rel=0.01)
        assert p["inside_pi95"] == (p["pi95"][0] <= p["measured"] <= p["pi95"][1])
    # The two largest runs fall inside their intervals; the named small run, 1.8 sigma of noise above the law,
    # lies just outside its own (30 noisy grids: 59 of 60 largest runs inside).
    assert [p["inside_pi95"] for p in held["predictions"]] == [False, True, True]
    assert held["max_abs_error_pct"] == max(abs(p["error_pct"]) for p in held["predictions"]) < 1.5
    fits_md = (tmp_path / "fits.md").read_text()
    assert "## Prediction of held-out runs" in fits_md
    assert "| n2669568_s1440 | 2,669,568 | 5,898,240 |" in fits_md
    assert (tmp_path / "residuals_ND.png").stat().st_size > 1000
    assert any(line.startswith("  leave-one-out: E ") for line in notes)


def test_holdout_refusals(tmp_path):
    rows = _joint_grid()
    with pytest.raises(UserError, match="--holdout nope: no finished run has that name"):
        fit_results(rows, tmp_path, n_bootstrap=0, holdout=["nope"])
    with pytest.raises(UserError, match="--holdout predicts with the joint law L"):
        fit_results(rows, tmp_path, law="N", n_bootstrap=0, holdout_largest=1)
    with pytest.raises(UserError, match="--holdout leaves no run to fit: all 25 finished runs are held out"):
        fit_results(rows, tmp_path, n_bootstrap=0, holdout_largest=25)
    with pytest.raises(UserError, match="--holdout needs the joint law L"):
        fit_results(collect([_width_sweep(tmp_path)]), tmp_path / "w", n_bootstrap=0, holdout_largest=1,
                    say=lambda _: None)


def test_fits_md_sets_the_joint_fit_beside_chinchilla(tmp_path):
    report = fit_results(_joint_grid(), tmp_path, law="ND", n_bootstrap=30, say=lambda _: None)
    joint = report["laws"]["ND"]
    assert joint["at_bound"] == [] and joint["notes"] == []
    for name in ("alpha", "beta"):
        lo, hi = joint["ci95"][name]
        assert lo <= JOINT[name] <= hi
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in
            (tmp_path / "fits.md").read_text().splitlines() if line.startswith("| ")}
    assert rows["alpha (N exponent)"][1] == f"{joint['params']['alpha']:.3f}"
    assert rows["alpha (N exponent)"][3] == "0.340"
    assert rows["a: N_opt ∝ C^a"][3] == f"{0.28 / 0.62:.3f}"
    assert rows["E"][3] == "1.69" and rows["E"][4].startswith("not comparable")
    # Tokens per parameter at the grid's most compute: this fit's D_opt / N_opt, and Chinchilla's fit there.
    top = joint["compute_optimal"]["at_run_compute"][1]
    assert top["compute_flops"] == pytest.approx(6 * 2_669_568 * 1440 * 4096)
    label = f"tokens per parameter at C = {top['compute_flops']:.1e}"
    assert float(rows[label][1]) == pytest.approx(top["tokens_per_param"], rel=2e-3)
    g = (0.34 * 406.4 / (0.28 * 410.7)) ** (1 / 0.62)
    chinchilla = (top["compute_flops"] / 6) ** ((0.34 - 0.28) / 0.62) / g**2
    assert rows[label][3] == f"{chinchilla:.3g} (fit); about 20 (rule)"
