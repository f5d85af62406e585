"""`optimize`: variants of a spec's models, gated on accuracy and timed side by side."""

from __future__ import annotations

from pathlib import Path

import click

from repoforge.cli.common import command, force_option, json_option, quiet_option
from repoforge.contract import DEVICE_NAMES


@command(
    kept="nothing was written to {output} (it is renamed into place only when complete); the variants made so far stay in the optimize cache",
    run="repoforge.cli.run.optimize:optimize",
)
@click.argument("spec", type=click.Path(path_type=Path))
@click.option(
    "-m",
    "--model",
    "models",
    multiple=True,
    help="Only this model (repeatable); default: every model with `optimize:`.",
)
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Folder for the report.")
@click.option(
    "--device", type=click.Choice(DEVICE_NAMES), default="cpu", show_default=True,
    help="gpu also writes a TensorRT trtexec script and tensorrt_plan config (built for real where trtexec runs).",
)  # fmt: skip
@force_option()
@click.option("--no-cache", is_flag=True, help="Make, gate and time every variant again (reproduce.sh uses it).")
@click.option(
    "--served", is_flag=True, help="Also time the accepted variants served by a real tritonserver (perf_analyzer)."
)
@json_option("Print the report as JSON on stdout.")
@quiet_option()
@click.option(
    "-v", "--verbose", is_flag=True, help="Every converter warning (fp16's clipped values), not one line per variant."
)
def optimize(**_: object) -> None:
    """Make each variant of SPEC's models (fp32, ort_optimized, int8, fp16, ...), gate it on accuracy against the
    original on the validation data, time the variants side by side and select one (the spec's `optimize:`).

    Writes OUTPUT/optimize-report.json, optimize-report.md, a latency-vs-accuracy plot and reproduce.sh.
    `repoforge build` uses the same selection. Exit 1 when a `required:` variant fails its gate.
    """
