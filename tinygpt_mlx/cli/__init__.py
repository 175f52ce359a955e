"""The `tinygpt` command: a thin Typer layer over the library. User errors exit with code 2.

Importing this package registers every command on `app` (cli/common.py), so `from tinygpt_mlx.cli import app`
is the whole command, e.g. for typer's CliRunner.
"""

from __future__ import annotations

from tinygpt_mlx.cli.common import app


def _register() -> None:
    # Each command group lives in its own module so commands stay small and independent.
    from tinygpt_mlx.cli import (  # noqa: F401
        bench_cmd,
        config_cmd,
        data_cmd,
        env_cmd,
        eval_cmd,
        interop_cmd,
        sample_cmd,
        scaling_cmd,
        seal_cmd,
        train_cmd,
    )


_register()


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
