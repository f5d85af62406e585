"""What `lint` run: the implementations, imported only when a command runs (declared, with their options
and help, in repoforge/cli/lint.py, which `--help` and usage errors import alone)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from repoforge.lint import detect_gpu_count, known_backends_of, lint_repository


def lint(repository: Path, server: str | None, as_json: bool) -> None:
    """`repoforge lint` once its arguments are parsed."""
    known, gpus = (
        (known_backends_of(None if server == "bundled" else server), detect_gpu_count()) if server else (None, None)
    )
    report = lint_repository(repository, known_backends=known, gpu_count=gpus)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(report.format())
    sys.exit(report.exit_code)
