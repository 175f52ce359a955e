"""`tinygpt env`: what this machine offers MLX."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from tinygpt_mlx.cli.common import app, console


@app.command("env")
def env(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    no_hub: bool = typer.Option(False, "--no-hub", help="Skip the hub reachability check."),
) -> None:
    """Device, backend, BLAS, CPU kernels (built if needed), an fp32 GEMM figure, versions, hub reachability."""
    from tinygpt_mlx.envinfo import environment_record

    record = environment_record(gemm=True, hub=not no_hub, load_kernels=True)
    if as_json:
        print(json.dumps(record, indent=2))
        return
    table = Table(title="tinygpt env", show_header=False)
    for key, value in record.items():
        table.add_row(key, str(value))
    console.print(table)
