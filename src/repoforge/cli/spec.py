"""`init` and `schema`: a starter spec, and the spec's JSON Schema (declared here; run by repoforge/cli/run/spec.py)."""

from __future__ import annotations

from pathlib import Path

import click

from repoforge.cli.common import command, force_option


@command(
    kept="the files written so far are kept in {directory}; rerun with --force to write them all",
    run="repoforge.cli.run.spec:init",
)
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@force_option("Overwrite an existing spec.yaml / model.")
def init(**_: object) -> None:
    """Write a starter spec.yaml and a small example ONNX model into DIRECTORY."""


@command(run="repoforge.cli.run.spec:schema")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), default=None, help="Write to a file instead of stdout."
)
def schema(**_: object) -> None:
    """Print the JSON Schema of spec.yaml (for editor completion and validation)."""
