"""What `drift profile` and `drift report` run: the implementations, imported only when a command runs (declared, with their options
and help, in repoforge/cli/drift.py, which `--help` and usage errors import alone)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from repoforge.drift.profile import make_profile, write_profile
from repoforge.drift.report import drift_report as do_report


def drift_profile(data: Path, model: str, output: Path, bins: int, force: bool) -> None:
    """`repoforge drift profile` once its arguments are parsed."""
    prof = make_profile(data, model, bins)
    write_profile(prof, output, force)
    click.echo(f"wrote {output}: {len(prof['features'])} features of {prof['source']['rows']} rows for {model}")
    for name, why in prof["skipped"].items():
        click.echo(f"warning: skipped {name}: {why}", err=True)


def drift_report(reference: Path, current: Path, output: Path, max_psi: float, force: bool, as_json: bool) -> None:
    """`repoforge drift report` once its arguments are parsed."""
    result = do_report(reference, current, output, max_psi=max_psi, force=force)
    if as_json:
        click.echo(json.dumps(result.data, indent=2))
    else:
        for r in result.data["features"][:10]:
            ks = "-" if r["ks"] is None else f"{r['ks']:.3f}"
            mark = click.style("DRIFT", fg="red") if r["drifted"] else "ok"
            click.echo(f"{r['feature']:<24} PSI {r['psi']:8.4f}  KS {ks:>6}  {mark}")
        n = len(result.data["features"])
        click.echo(f"{len(result.drifted)} of {n} features past PSI {max_psi:g}; wrote {output}")
    if result.drifted:
        sys.exit(1)
