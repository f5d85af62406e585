"""`validate` and `serve`: a build in a real server."""

from __future__ import annotations

from pathlib import Path

import click

from repoforge.cli.common import command, json_option, tritonserver_option


@command(kept="nothing was written; the server it started was stopped", run="repoforge.cli.run.serving:validate")
@click.argument("repository", type=click.Path(path_type=Path))
@click.option(
    "--url",
    default=None,
    help="Validate against a running Triton (host:port of its HTTP endpoint) instead of starting one.",
)
@click.option(
    "--grpc-url", default=None, help="With --url: the server's gRPC host:port, needed for decoupled (streaming) models."
)
@tritonserver_option()
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds each model gets to answer (a streaming model: all its responses together); one that does not fails its row.",
)
@json_option("Print the report as JSON on stdout.")
def validate(**_: object) -> None:
    """Load REPOSITORY in a real Triton and smoke-infer every model.

    Checks that every model version is READY, sends each one request made from the config the server
    serves (auto-completed fields included; a spec's `smoke: {inputs: file.npz}` where given), and
    compares ONNX models with in-process onnxruntime and onnx.reference. Exits 1 naming what failed.
    """


@command(kept="the server was stopped before it was ready", run="repoforge.cli.run.serving:serve")
@click.argument("repository", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0 to expose it).")
@click.option(
    "--http-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Default 8000 (Triton) / 8080 (TorchServe; management on the next port). 0: any free port.",
)
@click.option(
    "--grpc-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Default 8001 (Triton) / 7070 (TorchServe; gRPC management on the next port). 0: any free port.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Default 8002 (Triton) / 8082 (TorchServe). 0: any free port.",
)
@click.option(
    "--ports",
    "ports",
    type=click.Choice(["default", "auto"]),
    default="default",
    show_default=True,
    help="auto: free ports for every port not given with a flag (printed once the server is ready).",
)
@tritonserver_option()
@click.option(
    "--cache-size",
    type=int,
    default=None,
    help="Response cache bytes (default 256 MiB when a model enables response_cache).",
)
@click.option(
    "--model-control",
    type=click.Choice(["none", "explicit", "poll"]),
    default="none",
    show_default=True,
    help="Triton's model control: explicit takes load/unload requests (blue-green `rollout` unloads blue); "
    "none loads every model at start and refuses them.",
)
@click.option(
    "--load",
    "load_models",
    multiple=True,
    metavar="MODEL",
    help="With --model-control explicit: a model to load at start (repeatable; default: every model).",
)
@click.option(
    "--print-command",
    is_flag=True,
    help="Print the docker lines for the build's stock image (NGC Triton, or TorchServe's for a TorchServe build) "
    "and exit: `repoforge image` and a docker build of its context first when the build declares Python packages "
    "beyond the stock image.",
)
def serve(**_: object) -> None:
    """Serve REPOSITORY with a real tritonserver until Ctrl-C.

    A `build --target torchserve` output is served with real TorchServe instead (inference on
    --http-port, default 8080 there; management on the next port; token auth on, and the printed
    curl lines carry the key). Every port is checked first: all that are taken are named at once.
    """
