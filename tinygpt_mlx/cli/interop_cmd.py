"""`tinygpt export` (to mlx-lm or Hugging Face) and `tinygpt import gpt2` (from Hugging Face)."""

from __future__ import annotations

import typer

from tinygpt_mlx.cli.common import app, console
from tinygpt_mlx.paths import output_dir

import_app = typer.Typer(help="Bring models from other ecosystems in as TinyGPT checkpoints.", no_args_is_help=True)
app.add_typer(import_app, name="import")


@app.command("export")
def export(
    checkpoint: str = typer.Option(..., "--checkpoint", help="Step folder, last/best link, or run folder (its last)."),
    fmt: str = typer.Option(..., "--format", help="'mlx-lm' (mlx_lm.load) or 'hf' (transformers GPT2LMHeadModel or LlamaForCausalLM)."),
    output: str = typer.Option(..., "--output", "-o", help="New (or empty) folder to write."),
) -> None:
    """Export a checkpoint as a model folder that mlx-lm or transformers loads as it is."""
    from tinygpt_mlx.interop import export_checkpoint

    with output_dir(output, "--output"):
        folder = export_checkpoint(checkpoint, fmt, output)
    console.print(f"wrote {fmt} model to [bold]{folder}[/]", soft_wrap=True)


@import_app.command("gpt2")
def import_gpt2(
    hf_dir: str = typer.Option(..., "--hf-dir", "--hf_dir",
                               help="Hugging Face GPT-2 folder: config.json, model.safetensors or "
                                    "pytorch_model.bin, tokenizer.json or vocab.json + merges.txt."),
    output: str = typer.Option(..., "--output", "-o", help="Run folder to create; the checkpoint is step 0."),
) -> None:
    """Import Hugging Face GPT-2 weights as a TinyGPT checkpoint (for sample, eval, train --init-from, seal)."""
    from tinygpt_mlx.interop.hf_gpt2 import import_gpt2 as run_import

    with output_dir(output, "--output"):
        folder = run_import(hf_dir, output)
    console.print(f"wrote checkpoint [bold]{folder}[/]; try: tinygpt sample --checkpoint {output}", soft_wrap=True)
