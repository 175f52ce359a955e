"""`tinygpt data prepare`: tokenize a corpus once into memory-mapped token files."""

from __future__ import annotations

import json

import typer

from tinygpt_mlx.cli.common import app, build_config, console

data_app = typer.Typer(help="Prepare datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("prepare")
def prepare(
    config: str = typer.Option(None, "--config", "-c", help="YAML/JSON run config."),
    override: list[str] = typer.Option(None, "--override", "-o", help="section.key=value (repeatable)."),
    data_dir: str = typer.Option(None, "--data-dir", "--data_dir", help="Local corpus file or folder."),
    tokenizer: str = typer.Option(None, "--tokenizer", help="char, bpe or gpt2."),
) -> None:
    """Tokenize the train and validation splits into `train.bin` / `val.bin` + `meta.json`."""
    cfg = build_config(config, override, data__data_dir=data_dir, data__tokenizer=tokenizer)
    from tinygpt_mlx.data.prepare import prepare_data

    prepared = prepare_data(cfg, progress=True)
    meta = prepared.meta
    console.print(f"prepared data in [bold]{prepared.directory}[/]")
    console.print(json.dumps({k: meta[k] for k in meta if k in ("tokenizer", "splits", "dtype")}, indent=2))
