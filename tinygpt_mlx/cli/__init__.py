"""The `tinygpt` command: a thin Typer layer over the library. User errors exit with code 2."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape

from tinygpt_mlx.cli.common import app
from tinygpt_mlx.config import ConfigError
from tinygpt_mlx.errors import UserError

err_console = Console(stderr=True)


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


def main() -> None:
    """Console-script entry point."""
    _register()
    try:
        app()
    except (ConfigError, UserError) as err:
        # escape: a message may hold brackets (e.g. ".[torch]") that rich would read as markup
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
