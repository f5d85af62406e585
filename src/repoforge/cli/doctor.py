"""`doctor`: what this machine can serve (apart from `serve` and `validate`, whose imports are heavy)."""

from __future__ import annotations

import json

import click

from repoforge.cli.common import command, json_option
from repoforge.doctor import as_dicts
from repoforge.doctor import doctor as do_doctor


@command()
@json_option("Print the checks as JSON.")
def doctor(as_json: bool) -> None:
    """Report what this machine can serve (Triton, tracing, backends, perf_analyzer, GPU) and how to fill each gap,
    then the optional extras (Ray, OpenVINO, torch, TorchServe, promtool, Redis) and the commands each enables."""
    checks = do_doctor()
    if as_json:
        click.echo(json.dumps(as_dicts(checks), indent=2))
        return
    for title, group in (("", [c for c in checks if not c.optional]),
                         ("optional extras (each enables the commands named)", [c for c in checks if c.optional])):  # fmt: skip
        if title:
            click.echo(f"\n{title}:")
        for c in group:
            mark = click.style("ok  ", fg="green") if c.ok else click.style("gap ", fg="yellow")
            click.echo(f"{mark} {c.name:<20} {c.detail}")
            if c.enables:
                click.echo(f"     {'':<20} enables: {c.enables}")
            if c.fix:
                click.echo(f"     {'':<20} → {c.fix}")
