"""`tinygpt sweep` (grid of training runs, resumable) and `tinygpt scaling fit` (laws, intervals, plots)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from tinygpt_mlx import paths
from tinygpt_mlx.cli.common import app, console
from tinygpt_mlx.config import check_seed
from tinygpt_mlx.errors import UserError

scaling_app = typer.Typer(help="Scaling-law analysis.", no_args_is_help=True)
app.add_typer(scaling_app, name="scaling")


def _print(table: Table) -> None:
    # Piped output has no terminal width; 80 columns would cut the run names.
    (console if console.is_terminal else Console(width=200)).print(table)


def _fmt(value: Any, spec: str = "") -> str:
    if value is None or value == "":
        return "-"
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def _plan_table(runs: list[Any], keys: list[str]) -> Table:
    from tinygpt_mlx.model import count_params_closed_form
    from tinygpt_mlx.scaling.runs import summarize_run

    short = [k.split(".")[-1] for k in keys]
    headers = [k if short.count(s) > 1 else s for k, s in zip(keys, short, strict=True)]
    table = Table(box=box.SIMPLE_HEAD)
    for name in ("run", *headers, "non-emb params", "steps", "tokens", "6ND", "status"):
        table.add_column(name, justify="left" if name == "run" else "right", no_wrap=True)
    total_tokens = total_compute = 0
    for run in runs:
        m, cfg = run.config.model, run.config
        # With tied embeddings the non-embedding count does not depend on the vocabulary (unknown until
        # the tokenizer is built); an untied head does, so it shows '?'.
        n = count_params_closed_form(m, m.vocab_size or 0, non_embedding=True) \
            if m.tie_embeddings or m.vocab_size else None
        tokens = (cfg.schedule.max_steps or 0) * cfg.data.batch_size * cfg.data.block_size * cfg.runtime.grad_accum_steps
        compute = 6 * n * tokens if n else None
        total_tokens, total_compute = total_tokens + tokens, total_compute + (compute or 0)
        status = summarize_run(cfg.checkpoint.save_dir)["status"]
        table.add_row(run.name, *[_fmt(run.values[k]) for k in keys], _fmt(n, ","),
                      _fmt(cfg.schedule.max_steps or f"{cfg.schedule.epochs} epochs"), _fmt(tokens, ","),
                      _fmt(compute, ".2g"), status)
    table.title = f"{len(runs)} runs, {total_tokens:,} training tokens, 6ND = {total_compute:.2g} FLOPs"
    return table


def _summary_table(rows: list[dict[str, Any]], keys: list[str]) -> Table:
    table = Table(title="sweep summary", box=box.SIMPLE_HEAD)
    for name in ("run", "status", "non-emb params", "tokens", "final val loss", "best val bpb", "wall s"):
        table.add_column(name, justify="left" if name in ("run", "status") else "right", no_wrap=True)
    for r in rows:
        table.add_row(r["name"], r["status"], _fmt(r["non_embedding_params"], ","), _fmt(r["tokens_seen"], ","),
                      _fmt(r["final_val_loss"], ".4f"), _fmt(r["best_val_bpb"], ".4f"), _fmt(r["wall_time_s"], ".0f"))
    return table


SWEEP_EPILOG = ("Exit codes: 0 every run done; 1 a run failed (its log: OUTPUT_DIR/runs/<name>/train.log); "
                "2 user error; 130/143 stopped by SIGINT/SIGTERM after the running trainer saved (rerun to resume).")


@app.command("sweep", epilog=SWEEP_EPILOG)
def sweep(
    config: str = typer.Option(..., "--config", "-c", help="Sweep file: base_config, grid, mode, overrides."),
    output_dir: str = typer.Option(..., "--output_dir", "--output-dir", help="Sweep folder (runs/, summary)."),
    override: list[str] = typer.Option(None, "--override", "-o",
                                       help="section.key=value for every run (the grid still wins)."),
    token_budget: int = typer.Option(None, "--token_budget", "--token-budget", min=1,
                                     help="Training tokens per run (replaces the file's token_budget)."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Runs trained at once, each in its own process."),
    dry_run: bool = typer.Option(False, "--dry-run", "--dry_run", help="List the runs and stop."),
    in_process: bool = typer.Option(False, "--in-process", help="Train in this process (sequential only)."),
) -> None:
    """Train every run of a grid into OUTPUT_DIR/runs/<name>; complete runs are skipped, so rerunning resumes."""
    from tinygpt_mlx.config import parse_override
    from tinygpt_mlx.scaling.runner import SweepExecution, in_process_runner
    from tinygpt_mlx.scaling.sweep import expand, load_sweep

    spec = load_sweep(config)
    for item in override or []:
        (section, key), value = parse_override(item)
        spec.overrides[f"{section}.{key}"] = value
    if token_budget is not None:
        spec.token_budget = token_budget
    paths.check_output_dir(output_dir, "--output_dir")
    runs = expand(spec, output_dir)
    if dry_run:
        _print(_plan_table(runs, spec.keys))
        return
    if in_process and jobs > 1:
        raise UserError("--in-process trains one run at a time; drop --jobs or --in-process")
    execution = SweepExecution(spec, runs, output_dir, jobs=jobs, runner=in_process_runner if in_process else None,
                               say=lambda text: console.print(text, highlight=False, soft_wrap=True))
    with paths.output_dir(output_dir, "--output_dir"):
        code = execution.execute()
    rows = execution.rows()
    _print(_summary_table(rows, spec.keys))
    console.print(f"wrote {Path(output_dir) / 'sweep_summary.csv'}", highlight=False)
    if code:
        raise typer.Exit(code)
    if any(r["status"] == "failed" for r in rows):
        raise typer.Exit(1)


@scaling_app.command("fit")
def fit(
    results: list[str] = typer.Option(..., "--results", help="Sweep folders (sweep_summary.csv), summary "
                                      "CSVs, run folders or folders of runs; `--results A B` works too."),
    more: list[str] = typer.Argument(None, hidden=True),
    output_dir: str = typer.Option(..., "--output_dir", "--output-dir", help="Where fits and plots go."),
    law: str = typer.Option("all", "--law", help="N, D, C, ND or all (laws the data cannot determine "
                            "are skipped with a note)."),
    x: str = typer.Option("non_embedding_params", "--x", help="N column: non_embedding_params or params."),
    loss: str = typer.Option("final_val_loss", "--loss", help="final_val_loss, best_val_loss, final_val_bpb "
                             "or best_val_bpb."),
    bootstrap: int = typer.Option(200, "--bootstrap", min=0, help="Bootstrap resamples for the 95% intervals."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed (same seed, same intervals)."),
    holdout: list[str] = typer.Option(None, "--holdout", help="Run name(s) to leave out of every fit and "
                                      "predict with L(N, D): repeat the option or separate names by commas."),
    holdout_largest: int = typer.Option(0, "--holdout-largest", "--holdout_largest", min=0,
                                        help="Also hold out this many runs of the most compute."),
) -> None:
    """Fit L(N), L(D), L(C) and L(N, D) with bootstrap intervals, leave-one-out and residuals -> fits.json,
    fits.yaml, fits.md (tables, Chinchilla beside the joint fit), fit_<law> and residuals_<law> plots."""
    from tinygpt_mlx.scaling.analyze import fit_results
    from tinygpt_mlx.scaling.runs import collect

    problems = check_seed("--seed", seed)
    if problems:
        raise UserError(problems[0])
    paths.check_output_dir(output_dir, "--output_dir")
    rows = collect([*results, *(more or [])])
    with paths.output_dir(output_dir, "--output_dir"):
        report = fit_results(rows, output_dir, law=law, x=x, loss=loss, n_bootstrap=bootstrap, seed=seed,
                             holdout=[n.strip() for item in holdout or [] for n in item.split(",") if n.strip()],
                             holdout_largest=holdout_largest,
                             say=lambda text: console.print(text, highlight=False, soft_wrap=True))
    if "holdout" in report:
        _print(_holdout_table(report["holdout"]))
    if report["left_out"]:
        names = ", ".join(f"{r['name']} ({r['status']})" for r in report["left_out"])
        console.print(f"note: left out runs that are not done: {names}", highlight=False)
    console.print(f"wrote {Path(output_dir) / 'fits.json'}, fits.yaml, fits.md and plots", highlight=False)


def _holdout_table(holdout: dict[str, Any]) -> Table:
    table = Table(title="held-out runs: L(N, D) fitted to the rest", box=box.SIMPLE_HEAD)
    for name in ("run", "measured", "predicted", "95% (one run)", "error", "inside"):
        table.add_column(name, justify="left" if name == "run" else "right", no_wrap=True)
    for r in holdout["predictions"]:
        pi = r.get("pi95")
        table.add_row(str(r["name"]), f"{r['measured']:.4f}", f"{r['predicted']:.4f}",
                      f"[{pi[0]:.4f}, {pi[1]:.4f}]" if pi else "-", f"{r['error_pct']:+.2f}%",
                      _fmt({True: "yes", False: "no"}.get(r.get("inside_pi95"))))
    return table
