"""The `repoforge` command line: one module per command group. It only parses and prints: every command is a
function in the package, known errors become one clean line (cli/common.py) and Ctrl-C exits 130."""

from __future__ import annotations

import click

from repoforge import __version__
from repoforge.cli import batch, build, drift, gateway, measure, optimize, release, repository, serving
from repoforge.cli.common import Group

__all__ = ["main"]


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="repoforge")
def main() -> None:
    """Build NVIDIA Triton model repositories from one declarative spec, and prove them in a real server.

    \b
    Typical flow:
      repoforge init my-project            # starter spec.yaml + a small ONNX model
      repoforge build my-project/spec.yaml -o repo
      repoforge validate repo              # load in a real Triton, smoke-infer every model
      repoforge lint any_triton_repo       # Triton's load-time rules, checked statically
      repoforge import any_triton_repo -o spec.yaml   # bring a hand-written repository under a spec
      repoforge serve repo                 # HTTP :8000, gRPC :8001, metrics :8002
    """


for _command in (
    build.init, build.build, build.schema,
    repository.lint, repository.import_,
    serving.validate, serving.serve, serving.doctor,
    measure.perf, measure.tune,
    optimize.optimize,
    batch.batch,
    release.deploy, release.image, release.rollout,
    drift.drift,
    gateway.gateway_command, gateway.worker_command,
):  # fmt: skip
    main.add_command(_command)
