"""What `doctor` run: the implementations, imported only when a command runs (declared, with their options
and help, in repoforge/cli/doctor.py, which `--help` and usage errors import alone)."""

from __future__ import annotations

import json

import click

from repoforge.doctor import as_dicts
from repoforge.doctor import doctor as do_doctor


def doctor(as_json: bool) -> None:
    """`repoforge doctor` once its arguments are parsed."""
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
