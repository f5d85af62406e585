"""`lint`: any existing Triton repository checked against Triton's load-time rules (apart from `import`, whose
imports are heavier)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from repoforge.cli.common import command, json_option, server_option
from repoforge.lint import detect_gpu_count, known_backends_of, lint_repository


@command()
@click.argument("repository", type=click.Path(path_type=Path))
@server_option(
    "A tritonserver binary (or 'bundled'): its backends and this host's GPUs become facts, so a missing backend or KIND_GPU without a GPU is an error, not a warning."
)
@json_option("Print the findings as JSON.")
def lint(repository: Path, server: str | None, as_json: bool) -> None:
    """Check any Triton model repository statically against Triton's load-time rules (no server started).

    Exits 1 when Triton would refuse a model, 0 with warnings only. Messages name the file, line,
    model and field, and say what to do.
    """
    known, gpus = (
        (known_backends_of(None if server == "bundled" else server), detect_gpu_count()) if server else (None, None)
    )
    report = lint_repository(repository, known_backends=known, gpu_count=gpus)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(report.format())
    sys.exit(report.exit_code)
