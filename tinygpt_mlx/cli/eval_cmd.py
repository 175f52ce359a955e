"""`tinygpt eval`: score every checkpoint of a run, write the CSV, samples and plots, print a table."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from tinygpt_mlx import paths
from tinygpt_mlx.cli.common import app, console


@app.command("eval")
def eval_run(
    checkpoint_dir: str = typer.Option(None, "--checkpoint_dir", "--checkpoint-dir",
                                       help="Run folder: every complete step-NNNNNNN checkpoint is scored."),
    checkpoint: str = typer.Option(None, "--checkpoint", help="Evaluate only this checkpoint (step folder, "
                                   "last/best link, or run folder meaning its last)."),
    output_dir: str = typer.Option(None, "--output_dir", "--output-dir",
                                   help="Where results go (default: <run folder>/eval)."),
    config: str = typer.Option(None, "--config", "-c", help="Data and eval settings (default: the "
                               "checkpoint's own config); the model always comes from the checkpoint."),
    override: list[str] = typer.Option(None, "--override", "-o", help="section.key=value (repeatable)."),
    full: bool = typer.Option(False, "--full", help="Score the whole validation split, not the pinned "
                              "eval.eval_subset tokens."),
) -> None:
    """Val loss, perplexity, bits per byte per checkpoint -> evaluation_results.csv, samples.jsonl, plots/."""
    from tinygpt_mlx.eval.evaluate import evaluate_run, find_checkpoints

    if output_dir is None:
        first = find_checkpoints(checkpoint_dir, checkpoint)[0]
        output_dir = str(first.parent / "eval")
    with paths.output_dir(output_dir, "--output_dir"):
        report = evaluate_run(checkpoint_dir, output_dir, config=config, checkpoint=checkpoint, full=full,
                              overrides=list(override or []),
                              say=lambda text: console.print(text, highlight=False))
    table = Table(title="validation" + (" (full split)" if full else " (pinned subset)"), box=box.SIMPLE_HEAD)
    # The step names the checkpoint folder (step-NNNNNNN), so the table leaves the folder name to the CSV.
    for name in ("step", "tokens_seen", "val_loss", "val_ppl", "val_bpb", "params", "non_emb", "eval_s"):
        table.add_column(name, justify="right", no_wrap=True)
    for r in report.rows:
        table.add_row(str(r["step"]), f"{r['tokens_seen']:,}", f"{r['val_loss']:.4f}", f"{r['val_ppl']:.2f}",
                      f"{r['val_bpb']:.4f}", f"{r['params']:,}", f"{r['non_embedding_params']:,}",
                      f"{r['eval_seconds']:.2f}")
    # Piped output has no terminal width; 80 columns would cut large token and parameter counts.
    (console if console.is_terminal else Console(width=120)).print(table)
    for note in report.plots.skipped:
        console.print(f"note: {note}", highlight=False)
    console.print(f"wrote {report.results_path}, {report.samples_path} and "
                  f"{len(report.plots.written)} plot files in {Path(output_dir) / 'plots'}", highlight=False)
