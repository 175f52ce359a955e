"""Pieces every command shares: the Typer app, the console and config loading from CLI options.

The app lives here, not in cli/__init__.py, so command modules register on it without importing the
package that imports them. Its group turns every user error into one message and exit code 2, so the
app behaves the same from the console script and from typer's CliRunner.
"""

from __future__ import annotations

import errno
from typing import Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from tinygpt_mlx.config import Config, ConfigError, apply_overrides, from_dict, read_file
from tinygpt_mlx.errors import UserError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention
# The system refused a path or a write for a reason in the user's hands, never a bug of ours: a name too long,
# a symlink loop, no permission, a read-only or full disk. Any other OSError stays a traceback.
USER_OS_ERRORS = {errno.ENAMETOOLONG, errno.ELOOP, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC,
                  errno.EDQUOT}

console = Console()
err_console = Console(stderr=True)


def print_error(message: str) -> None:
    """`error: MESSAGE` on stderr, never wrapped (a config's list of problems keeps its lines)."""
    # escape: a message may hold brackets (e.g. ".[torch]") that rich would read as markup
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


class UserErrorGroup(TyperGroup):
    """The root command group: UserError/ConfigError (and USER_OS_ERRORS) -> `error: ...` and exit 2; Ctrl-C ->
    `interrupted` and exit 130."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ConfigError, UserError) as err:
            print_error(str(err))
            raise typer.Exit(EXIT_USER_ERROR) from None
        except OSError as err:
            if err.errno not in USER_OS_ERRORS:
                raise
            where = f"{err.filename}: " if err.filename else ""
            print_error(f"{where}{err.strerror or err}")
            raise typer.Exit(EXIT_USER_ERROR) from None
        except KeyboardInterrupt:
            err_console.print("interrupted", highlight=False)
            raise typer.Exit(EXIT_INTERRUPTED) from None


app = typer.Typer(
    name="tinygpt",
    help="A small-language-model lab native to Apple MLX.",
    cls=UserErrorGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def build_config(config: str | None, overrides: list[str] | None = None, **direct: object) -> Config:
    """Load CONFIG, apply --override items, then direct CLI options (`section__key=value`, None = unset)."""
    raw = apply_overrides(read_file(config) if config else {}, list(overrides or []))
    for name, value in direct.items():
        if value is None:
            continue
        section, key = name.split("__")
        section_values = raw.setdefault(section, {})
        if isinstance(section_values, dict):
            section_values[key] = value
    return from_dict(raw)
