"""What `init` and `schema` run: the implementations, imported only when a command runs (declared, with their options
and help, in repoforge/cli/spec.py, which `--help` and usage errors import alone)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from repoforge.scaffold import init as do_init
from repoforge.schema import spec_schema


def init(directory: Path, force: bool) -> None:
    """`repoforge init` once its arguments are parsed."""
    for p in do_init(directory, force=force):
        click.echo(f"wrote {p}")
    click.echo(f"next: repoforge build {directory / 'spec.yaml'} -o {directory / 'model_repository'}")


def schema(output: Path | None) -> None:
    """`repoforge schema` once its arguments are parsed."""
    text = json.dumps(spec_schema(), indent=2) + "\n"
    if output:
        output.write_text(text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)
