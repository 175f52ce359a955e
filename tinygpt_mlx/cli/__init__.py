"""The `tinygpt` command: a thin Typer layer over the library. User errors exit with code 2."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from tinygpt_mlx.config import ConfigError
from tinygpt_mlx.errors import UserError

app = typer.Typer(
    name="tinygpt",
    help="A small-language-model lab native to Apple MLX.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)


def _register() -> None:
    # Each command group lives in its own module so commands stay small and independent.
    from tinygpt_mlx.cli import data_cmd, env_cmd  # noqa: F401
    from tinygpt_mlx.cli import eval_cmd  # noqa: F401
    from tinygpt_mlx.cli import sample_cmd  # noqa: F401
    from tinygpt_mlx.cli import train_cmd  # noqa: F401
    from tinygpt_mlx.cli import scaling_cmd  # noqa: F401
    from tinygpt_mlx.cli import bench_cmd  # noqa: F401
    from tinygpt_mlx.cli import seal_cmd  # noqa: F401
    from tinygpt_mlx.cli import interop_cmd  # noqa: F401


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
