"""Pieces every command shares: the Typer app, the console and config loading from CLI options.

The app lives here, not in cli/__init__.py, so command modules register on it without importing the
package that imports them.
"""

from __future__ import annotations

import typer
from rich.console import Console

from tinygpt_mlx.config import Config, apply_overrides, from_dict, read_file

app = typer.Typer(
    name="tinygpt",
    help="A small-language-model lab native to Apple MLX.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()


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
