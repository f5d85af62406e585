"""`init` and `schema`: a starter spec, and the spec's JSON Schema (apart from `build`, whose imports are heavy)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from repoforge.cli.common import command, force_option
from repoforge.scaffold import init as do_init
from repoforge.schema import spec_schema


@command(kept="the files written so far are kept in {directory}; rerun with --force to write them all")
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@force_option("Overwrite an existing spec.yaml / model.")
def init(directory: Path, force: bool) -> None:
    """Write a starter spec.yaml and a small example ONNX model into DIRECTORY."""
    for p in do_init(directory, force=force):
        click.echo(f"wrote {p}")
    click.echo(f"next: repoforge build {directory / 'spec.yaml'} -o {directory / 'model_repository'}")


@command()
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), default=None, help="Write to a file instead of stdout."
)
def schema(output: Path | None) -> None:
    """Print the JSON Schema of spec.yaml (for editor completion and validation)."""
    text = json.dumps(spec_schema(), indent=2) + "\n"
    if output:
        output.write_text(text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)
