"""`build`: a spec in, a repository out."""

from __future__ import annotations

from pathlib import Path

import click

from repoforge.cli.common import command, force_option, json_option, quiet_option
from repoforge.contract import DEVICE_NAMES, TARGET_NAMES


@command(
    kept="nothing was written to {output} (it is renamed into place only when complete)",
    run="repoforge.cli.run.build:build",
)
@click.argument("spec", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Repository directory to write.")
@click.option("--target", type=click.Choice(TARGET_NAMES), default="triton", show_default=True)
@click.option(
    "--device",
    type=click.Choice(DEVICE_NAMES),
    default=None,
    help="Where instances run: cpu (KIND_CPU) or gpu (KIND_GPU, plus GPU-only settings); ONNX/TorchScript use "
    "Triton's native onnxruntime/pytorch backends either way (repoforge's bundled server has Python-based ones). "
    "Default: gpu if one is visible.",
)
@click.option(
    "--pack-env",
    is_flag=True,
    help="Triton: give each Python model that declares packages (python_requirements in repoforge.lock.json) a "
    "custom execution environment, <model>/python_env.tar.gz, named in its config.pbtxt (EXECUTION_ENV_PATH): "
    "a venv of this Python's installed packages, for a server running this Python version. Without it the "
    "packages come from the server image (`repoforge image`).",
)
@force_option()
@json_option("Print the result as JSON on stdout.")
@quiet_option("No progress output (warnings are still printed).")
def build(**_: object) -> None:
    """Build SPEC (spec.yaml) into a model repository at OUTPUT.

    The spec is validated completely first; a wrong spec prints file:line:col, the field and what was
    expected, exits 2 and writes nothing. The repository is written to a temporary directory and
    renamed into place, with a repoforge.lock.json listing the sha256 of every file.
    """
