"""`tinygpt train`: build the config from the file and flags, then call trainer.train."""

from __future__ import annotations

import typer

from tinygpt_mlx.cli.common import app, build_config

EPILOG = (
    "Exit codes: 0 done; 2 user error (bad config, corrupt or incompatible checkpoint, non-finite loss); "
    "130 stopped by SIGINT (Ctrl-C) and 143 by SIGTERM, each after finishing the current step and "
    "writing a checkpoint that `--resume auto` continues exactly. A second Ctrl-C aborts without saving; "
    "75 under mlx.launch when another rank died or stopped answering for TINYGPT_DIST_TIMEOUT seconds "
    "(default 300); the last checkpoint is intact. Data-parallel: `mlx.launch -n 2 -- tinygpt train -c CFG` "
    "(or --hostfile hosts.json); data.batch_size is the global batch, split evenly over the ranks."
)


@app.command("train", epilog=EPILOG)
def train(
    config: str = typer.Option(None, "--config", "-c", help="YAML/JSON run config."),
    override: list[str] = typer.Option(None, "--override", "-o", help="section.key=value (repeatable)."),
    save_dir: str = typer.Option(None, "--save_dir", "--save-dir", help="Run folder (checkpoint.save_dir)."),
    seed: int = typer.Option(None, "--seed", help="runtime.seed."),
    max_steps: int = typer.Option(None, "--max-steps", "--max_steps", help="schedule.max_steps."),
    data_dir: str = typer.Option(None, "--data-dir", "--data_dir", help="Local corpus file or folder."),
    resume: str = typer.Option(None, "--resume", help="'auto' (newest complete checkpoint in the run "
                               "folder, or a fresh start) or a checkpoint path."),
    init_from: str = typer.Option(None, "--init-from", "--init_from",
                                  help="Start from this checkpoint's weights (fine-tuning); fresh optimizer."),
    backend: str = typer.Option(None, "--backend", help="runtime.backend: 'mlx' or 'torch' (PyTorch, CUDA "
                                "when present; needs pip install -e '.[torch]'). Checkpoints are the same."),
) -> None:
    """Train TinyGPT; writes checkpoints, metrics.jsonl, run_config.yaml and env.json into the run folder."""
    cfg = build_config(config, override, checkpoint__save_dir=save_dir, runtime__seed=seed,
                       schedule__max_steps=max_steps, data__data_dir=data_dir,
                       runtime__backend=backend)
    from tinygpt_mlx.train.trainer import train as run_training

    result = run_training(cfg, resume=resume, init_from=init_from)
    if result.exit_code:
        raise typer.Exit(result.exit_code)
