"""Two training recipes at equal wall time on this machine, scored in bits per byte on the full validation split.

    TINYGPT_DATA_DIR=../shared/data/tinystories-15mb python benchmarks/compare_recipes.py \
        [--budget 300] [--output results/compare_recipes] [CONFIG_OR_SWEEP ...]

Default: the demo candidates of docs/recipe.md: configs/recipe/baseline_demo_bpe2048.yaml (the demo recipe before
the recipe search, with a 2,048-token BPE), configs/recipe/demo_d256_bpe4096.yaml and configs/recipe/demo_small.yaml;
configs/demo.yaml is the first one given the whole budget. A sweep file (e.g. configs/ablation_architecture.yaml)
stands for each of its runs. Each recipe is first timed for a few steps (after compilation); its step count is
then set so that its training fits the budget, its schedule annealing within it, and it trains from scratch in
its own `tinygpt train` process. `tinygpt eval --full` scores the last checkpoint. Writes comparison.json and prints a
table with the CPU model, each recipe's steps, training seconds and val bits/byte.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = ("configs/recipe/baseline_demo_bpe2048.yaml", "configs/recipe/demo_d256_bpe4096.yaml",
                   "configs/recipe/demo_small.yaml")
CALIBRATION_STEPS = 30


def tinygpt(*args: str) -> None:
    """Run one tinygpt command with this interpreter; stop the comparison if it fails."""
    subprocess.run([sys.executable, "-m", "tinygpt_mlx", *args], cwd=REPO, check=True)


def metrics(run_dir: Path) -> list[dict]:
    """The train records of a run's metrics.jsonl."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("type") == "train"]


def seconds_per_step(config: str, work: Path) -> float:
    """Median step time of a short run, past the compile steps, with evaluation and checkpoints off."""
    run = work / "calibration"
    shutil.rmtree(run, ignore_errors=True)
    tinygpt("train", "--config", config, "--save_dir", str(run), "--max-steps", str(CALIBRATION_STEPS),
            "-o", "eval.eval_every=100000", "-o", "checkpoint.save_every=100000", "-o", "eval.sample_n=0",
            "-o", "runtime.log_interval=1")
    steps = metrics(run)[CALIBRATION_STEPS // 3:]
    shutil.rmtree(run, ignore_errors=True)
    return statistics.median(r["step_ms"] for r in steps) / 1000


def run_recipe(config: str, budget: float, work: Path) -> dict:
    """Train config from scratch for as many steps as fit the budget, then score it on the full validation split."""
    per_step = seconds_per_step(config, work)
    steps = max(1, int(budget * 0.95 / per_step))  # evaluation and checkpoint writes take the rest
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    start = time.perf_counter()
    tinygpt("train", "--config", config, "--save_dir", str(run), "--max-steps", str(steps))
    train_seconds = time.perf_counter() - start
    tinygpt("eval", "--checkpoint", str(run / "last"), "--full", "--output_dir", str(work / "eval"))
    rows = (work / "eval" / "evaluation_results.csv").read_text().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    scored = dict(zip(header, last, strict=True))
    return {"config": config, "seconds_per_step": round(per_step, 4), "steps": steps,
            "train_seconds": round(train_seconds, 1), "val_bpb_full": float(scored["val_bpb"]),
            "tokens_seen": int(float(scored["tokens_seen"]))}


def recipes(paths: list[str], output: Path) -> list[tuple[str, str]]:
    """(label, config file) per recipe; a sweep file is expanded into one config file per run."""
    from tinygpt_mlx.config import dump_config, read_file
    from tinygpt_mlx.scaling.sweep import expand, load_sweep

    found = []
    for path in paths:
        if "grid" not in read_file(REPO / path, migrate=False):
            found.append((path, path))
            continue
        for run in expand(load_sweep(REPO / path), output / Path(path).stem):
            config = output / "configs" / f"{run.name}.yaml"
            config.parent.mkdir(parents=True, exist_ok=True)
            dump_config(run.config, config)
            found.append((f"{Path(path).stem}/{run.name}", str(config)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", default=list(DEFAULT_CONFIGS))
    parser.add_argument("--budget", type=float, default=300.0, help="training seconds per recipe")
    parser.add_argument("--output", default="results/compare_recipes")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from tinygpt_mlx.envinfo import blas_record, cpu_model

    output = REPO / args.output
    results = [{"recipe": label, **run_recipe(config, args.budget, output / label.replace("/", "_"))}
               for label, config in recipes(args.configs, output)]
    record = {"cpu": cpu_model(), "blas": blas_record().get("blas", ""), "budget_s": args.budget, "recipes": results}
    (output / "comparison.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"\n{record['cpu']}; budget {args.budget:.0f} s of training per recipe")
    print(f"{'recipe':50} {'steps':>6} {'train s':>8} {'tokens':>11} {'val bpb (full)':>15}")
    for r in results:
        print(f"{r['recipe']:50} {r['steps']:6d} {r['train_seconds']:8.1f} {r['tokens_seen']:11,d} {r['val_bpb_full']:15.3f}")
    if len(results) == 2:
        print(f"difference (first - second): {results[0]['val_bpb_full'] - results[1]['val_bpb_full']:+.3f} bits/byte")


if __name__ == "__main__":
    main()
