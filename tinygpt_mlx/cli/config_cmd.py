"""`tinygpt config show` (the resolved config, every default) and `config migrate` (the original layout)."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml

from tinygpt_mlx.cli.common import app, build_config, console

config_app = typer.Typer(help="Inspect configs; translate the original TinyGPT layout.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def show(
    config: str = typer.Argument(None, help="YAML/JSON config (either layout); none: the defaults."),
    override: list[str] = typer.Option(None, "--override", "-o", help="section.key=value (repeatable)."),
) -> None:
    """Print the config a run would use, with every default filled in, as YAML."""
    from tinygpt_mlx.config import to_yaml

    typer.echo(to_yaml(build_config(config, override)), nl=False)


@config_app.command("migrate")
def migrate(
    old: str = typer.Argument(..., help="A config file of the original TinyGPT repository (YAML or JSON)."),
    output: str = typer.Option(..., "--output", "-o", help="Where the translated YAML goes."),
) -> None:
    """Write OLD translated to this schema, each key commented with its origin; a sweep: block goes to
    OUTPUT's stem + `_sweep.yaml` (a sweep file over OUTPUT)."""
    from tinygpt_mlx.config import from_dict, read_file
    from tinygpt_mlx.errors import UserError
    from tinygpt_mlx.interop.migrate import is_old, migrate, migrate_sweep, refused, to_commented_yaml
    from tinygpt_mlx.paths import check_output_file

    out = check_output_file(output, "--output")
    if out.exists() and out.samefile(old):
        raise UserError(f"--output {out} is the file being migrated; write the translation to a new file")
    raw = read_file(old, migrate=False)
    if not is_old(raw):
        raise UserError(f"{old} is not in the original TinyGPT layout (no training: or logging: section, no "
                        "data.dataset_name-style keys); it needs no migration")
    translation = migrate(raw)
    sweep, refusals = migrate_sweep(raw, Path(output).name) if "sweep" in raw else ({}, [])
    refusals = list(dict.fromkeys(translation.refusals + refusals))
    if refusals:
        raise refused(old, refusals)
    from_dict(translation.config)  # refuse to write a file that would not load
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_commented_yaml(translation, old))
    console.print(f"wrote {out} ({len(translation.origins)} settings)", highlight=False)
    if sweep:
        sweep_path = out.with_name(f"{out.stem}_sweep.yaml")
        header = f"# The sweep: block of {old}, translated; run: tinygpt sweep --config {sweep_path}\n"
        sweep_path.write_text(header + yaml.safe_dump(sweep, sort_keys=False, default_flow_style=None))
        console.print(f"wrote {sweep_path} ({len(sweep['grid'])} swept keys)", highlight=False)
