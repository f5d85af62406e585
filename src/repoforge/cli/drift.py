"""`drift profile` and `drift report`: has the data moved away from what the model was trained on?"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from repoforge.cli.common import Group, force_option, json_option
from repoforge.drift.profile import make_profile, write_profile
from repoforge.drift.report import drift_report as do_report


@click.group(cls=Group)
def drift() -> None:
    """Data drift: profile reference data once, then compare current data with it (PSI, Kolmogorov-Smirnov)."""


@drift.command("profile", kept="nothing was written to {output}")
@click.argument("data", type=click.Path(path_type=Path))
@click.option("-m", "--model", required=True, help="The model whose inputs DATA holds (recorded in the profile).")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="The profile (JSON) to write.")
@click.option(
    "--bins", type=click.IntRange(min=2), default=10, show_default=True, help="Quantile bins per numeric feature."
)
@force_option("Replace OUTPUT if it exists.")
def drift_profile(data: Path, model: str, output: Path, bins: int, force: bool) -> None:
    """Write a reference profile of DATA (Parquet, CSV or .npz): quantile bins per numeric feature, category
    frequencies (top 50 + other) per string feature. A 2-D .npz array NAME [rows, k] is NAME[0]..NAME[k-1]."""
    prof = make_profile(data, model, bins)
    write_profile(prof, output, force)
    click.echo(f"wrote {output}: {len(prof['features'])} features of {prof['source']['rows']} rows for {model}")
    for name, why in prof["skipped"].items():
        click.echo(f"warning: skipped {name}: {why}", err=True)


@drift.command("report", kept="nothing was written to {output} (it is renamed into place only when complete)")
@click.argument("reference", type=click.Path(path_type=Path))
@click.argument("current", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Folder for the report.")
@click.option(
    "--max-psi",
    type=click.FloatRange(min=0, min_open=True),
    default=0.2,
    show_default=True,
    help="A feature past this PSI has drifted (exit 1).",
)
@force_option("Replace OUTPUT if it exists (only if it holds a drift report).")
@json_option("Print the report as JSON on stdout.")
def drift_report(reference: Path, current: Path, output: Path, max_psi: float, force: bool, as_json: bool) -> None:
    """Compare CURRENT data with the REFERENCE profile: PSI and KS per feature into OUTPUT (drift-report.json,
    drift-report.md worst first, drift-worst.png). Exit 1 when a feature's PSI passes --max-psi, 2 on bad input
    (nothing written)."""
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
