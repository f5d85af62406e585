"""What `build` run: the implementations, imported only when a command runs (declared, with their options
and help, in repoforge/cli/build.py, which `--help` and usage errors import alone)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from repoforge.build import build as do_build
from repoforge.cli.common import progress
from repoforge.contract import Device, Target


def build(
    spec: Path,
    output: Path,
    target: Target,
    device: Device | None,
    pack_env: bool,
    force: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """`repoforge build` once its arguments are parsed."""
    result = do_build(
        spec,
        output,
        target=target,
        device=device,
        force=force,
        progress=progress(quiet or as_json),
        pack_env=pack_env,
    )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "output": str(result.output),
                    "device": result.plan.device,
                    "models": result.model_names,
                    "files": result.files,
                    "warnings": result.warnings,
                },
                indent=2,
            )
        )
    else:
        if quiet:  # without -q the progress lines carry the warnings already
            for w in result.warnings:
                click.echo(f"  warning: {w}", err=True)
        click.echo(f"built {len(result.model_names)} model(s) for {result.plan.device} into {result.output}")
