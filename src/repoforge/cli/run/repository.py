"""What `import` run: the implementations, imported only when a command runs (declared, with their options
and help, in repoforge/cli/repository.py, which `--help` and usage errors import alone)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from repoforge.cli.common import fail
from repoforge.contract import Device
from repoforge.errors import RepoforgeError
from repoforge.importer import import_repository


def import_(
    repository: Path,
    output: Path,
    copy_models: bool,
    device: Device | None,
    force: bool,
    server: str | None,
    as_json: bool,
) -> None:
    """`repoforge import` once its arguments are parsed."""
    result = import_repository(repository, output, copy_models=copy_models, force=force, device=device, server=server)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        click.echo(
            f"wrote {result.spec_path}: {len(result.models)} model(s); build it with "
            f"repoforge build {result.spec_path} -o OUT --device {result.device}"
        )
        for model, fields in result.kept_raw.items():
            click.echo(f"  {model}: kept verbatim in raw_config: {', '.join(fields)}")
        for folder, why in result.skipped.items():
            click.echo(f"  skipped {folder}: {why}")
        for w in result.warnings:
            click.echo(f"  warning: {w}", err=True)
    if result.client_visible:  # the spec is written (to fix by hand), but clients of the rebuilt repository break
        lost = [f"{model}: {d}" for model, diffs in result.client_visible.items() for d in diffs]
        fail(
            RepoforgeError(
                f"the rebuilt repository changes what clients see ({len(lost)} difference(s)); "
                "fix the spec before you serve it:\n  " + "\n  ".join(lost)
            ),
            1,
        )
