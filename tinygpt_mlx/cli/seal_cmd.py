"""`tinygpt seal adapt` and `tinygpt seal analyze`: SEAL self-adaptation from any TinyGPT checkpoint."""

from __future__ import annotations

import typer

from tinygpt_mlx import paths
from tinygpt_mlx.cli.common import app, console

seal_app = typer.Typer(help="SEAL: the model writes its own fine-tuning data (self-edits).", no_args_is_help=True)
app.add_typer(seal_app, name="seal")


@seal_app.command("adapt")
def adapt(
    config: str = typer.Option("configs/ablation_seal.yaml", "--config", "-c", help="Config with a `seal` section."),
    override: list[str] = typer.Option(None, "--override", "-o", help="section.key=value, e.g. seal.k_edits=2."),
    init_from: str = typer.Option(None, "--init-from", "--init_from",
                                  help="Checkpoint to adapt (run folder, step folder or link; also an imported "
                                       "GPT-2 checkpoint); overrides seal.init_from."),
    run_dir: str = typer.Option(None, "--run_dir", "--run-dir", help="Output folder; overrides seal.run_dir."),
    data_dir: str = typer.Option(None, "--data-dir", "--data_dir",
                                 help="Stories to draw contexts from (their validation split)."),
) -> None:
    """Run SEAL, or resume it where it stopped; writes RUN_DIR/adapt.jsonl and policy/round-N/."""
    from tinygpt_mlx.config import apply_overrides, read_file
    from tinygpt_mlx.errors import UserError
    from tinygpt_mlx.seal.adapt import DISABLED
    from tinygpt_mlx.seal.config import split_config

    raw = apply_overrides(read_file(config), list(override or []))
    for section, key, value in (("seal", "init_from", init_from), ("seal", "run_dir", run_dir),
                                ("data", "data_dir", data_dir)):
        if value is not None:
            raw.setdefault(section, {})[key] = value
    cfg, seal = split_config(raw)
    if not seal.enabled:
        raise UserError(DISABLED)
    if not seal.init_from:
        raise UserError("seal adapt needs a model: pass --init-from CKPT (a `tinygpt train` run folder or step "
                        "folder, or an imported GPT-2 checkpoint) or set seal.init_from")

    from tinygpt_mlx.data.sources import load_split
    from tinygpt_mlx.seal.adapt import run_adapt
    from tinygpt_mlx.train.checkpoint import load_for_inference

    paths.check_output_dir(seal.run_dir, "seal.run_dir")
    model, tokenizer, ckpt_cfg, state = load_for_inference(seal.init_from)
    # Contexts come from the stories the config names; with no data section, from the checkpoint's own data.
    data_cfg = cfg.data if "data" in raw else ckpt_cfg.data
    stories = load_split(data_cfg, "validation")
    console.print(f"SEAL on {seal.init_from} (step {state.get('step')}), {len(stories)} validation stories "
                  f"-> {seal.run_dir}")
    with paths.output_dir(seal.run_dir, "seal.run_dir"):
        path = run_adapt(cfg, seal, model, tokenizer, seal.run_dir, stories, log=console.print)
    console.print(f"wrote [bold]{path}[/]; next: tinygpt seal analyze --run_dir {seal.run_dir}", soft_wrap=True)


@seal_app.command("analyze")
def analyze(
    run_dir: str = typer.Option(..., "--run_dir", "--run-dir",
                                help="A `seal adapt` output folder, or a folder holding its seal_contexts.csv."),
    out: str = typer.Option(None, "--out", help="Where to write the table and plots (default: RUN_DIR)."),
) -> None:
    """The SEAL table with paired 95% intervals (seal_table.csv, .md); from adapt.jsonl also seal_contexts.csv,
    seal_rounds.csv and the Δ loss vs budget and Pareto plots (PNG + SVG)."""
    from tinygpt_mlx.seal.analyze import analyze as run_analysis

    with paths.output_dir(out or run_dir, "--out"):
        result = run_analysis(run_dir, out)
    console.print(result["paths"][1].read_text(), highlight=False, soft_wrap=True)  # markdown rows unwrapped
    for path in result["paths"]:
        console.print(f"wrote {path}", soft_wrap=True)
