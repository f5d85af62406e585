"""`drift profile` and `drift report`: has the data moved away from what the model was trained on?"""

from __future__ import annotations

from pathlib import Path

import click

from repoforge.cli.common import Group, force_option, json_option


@click.group(cls=Group)
def drift() -> None:
    """Data drift: profile reference data once, then compare current data with it (PSI, Kolmogorov-Smirnov)."""


@drift.command("profile", kept="nothing was written to {output}", run="repoforge.cli.run.drift:drift_profile")
@click.argument("data", type=click.Path(path_type=Path))
@click.option("-m", "--model", required=True, help="The model whose inputs DATA holds (recorded in the profile).")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="The profile (JSON) to write.")
@click.option(
    "--bins", type=click.IntRange(min=2), default=10, show_default=True, help="Quantile bins per numeric feature."
)
@force_option("Replace OUTPUT if it exists.")
def drift_profile(**_: object) -> None:
    """Write a reference profile of DATA (Parquet, CSV or .npz): quantile bins per numeric feature, category
    frequencies (top 50 + other) per string feature. A 2-D .npz array NAME [rows, k] is NAME[0]..NAME[k-1]."""


@drift.command(
    "report",
    kept="nothing was written to {output} (it is renamed into place only when complete)",
    run="repoforge.cli.run.drift:drift_report",
)
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
def drift_report(**_: object) -> None:
    """Compare CURRENT data with the REFERENCE profile: PSI and KS per feature into OUTPUT (drift-report.json,
    drift-report.md worst first, drift-worst.png). Exit 1 when a feature's PSI passes --max-psi, 2 on bad input
    (nothing written)."""
