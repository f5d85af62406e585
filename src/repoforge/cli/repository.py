"""`import`: an existing Triton repository brought under a spec."""

from __future__ import annotations

from pathlib import Path

import click

from repoforge.cli.common import command, force_option, json_option, server_option
from repoforge.contract import DEVICE_NAMES


@command("import", kept="nothing was written to {output}", run="repoforge.cli.run.repository:import_")
@click.argument("repository", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="The spec.yaml to write.")
@click.option(
    "--copy-models",
    is_flag=True,
    help="Copy model files next to the spec (models/<model>/) instead of referencing them in place.",
)
@click.option(
    "--device",
    type=click.Choice(DEVICE_NAMES),
    default=None,
    help="Device the repository was built for (default: detected from it).",
)
@force_option("Overwrite an existing spec.")
@server_option(
    "A tritonserver binary (or 'bundled'): model folders without config.pbtxt are loaded in it and "
    "their effective (auto-completed) configs imported."
)
@json_option("Print the result as JSON.")
def import_(**_: object) -> None:
    """Turn an existing Triton model repository into a spec, so `repoforge build` gives it back.

    Every field the spec can express is mapped; what it cannot is kept verbatim under `raw_config`
    and reported, never dropped. The rebuilt configs are compared with the originals and any
    remaining difference is listed; one a client would see (inputs, outputs, their dims, format and
    reshape, max_batch_size, decoupled) makes the command exit 1, naming model and field.
    """
