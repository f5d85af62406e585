"""`lint`: any existing Triton repository checked against Triton's load-time rules (declared here; run by
repoforge/cli/run/lint.py)."""

from __future__ import annotations

from pathlib import Path

import click

from repoforge.cli.common import command, json_option, server_option


@command(run="repoforge.cli.run.lint:lint")
@click.argument("repository", type=click.Path(path_type=Path))
@server_option(
    "A tritonserver binary (or 'bundled'): its backends and this host's GPUs become facts, so a missing backend or KIND_GPU without a GPU is an error, not a warning."
)
@json_option("Print the findings as JSON.")
def lint(**_: object) -> None:
    """Check any Triton model repository statically against Triton's load-time rules (no server started).

    Exits 1 when Triton would refuse a model, 0 with warnings only. Messages name the file, line,
    model and field, and say what to do.
    """
