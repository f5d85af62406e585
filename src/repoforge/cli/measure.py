"""`perf` and `tune`: measure a served model, and search its batching and instances."""

from __future__ import annotations

from pathlib import Path

import click

from repoforge.cli.common import command, json_option


@command(kept="no point was measured; nothing was written to {output}", run="repoforge.cli.run.measure:perf")
@click.argument("target")
@click.option("-m", "--model", default=None, help="Model to measure (or --models).")
@click.option(
    "--models",
    default=None,
    help="Many models, comma-separated names or patterns (m0*): a load spread over them through the gateway "
    "(TARGET: a build with serving:, or a running gateway's host:port); reports hits, cold loads, cold/warm latency.",
)
@click.option(
    "--distribution", default="zipf", show_default=True, help="With --models: zipf, zipf:S (e.g. zipf:1.3) or uniform."
)
@click.option(
    "--duration",
    type=float,
    default=30.0,
    show_default=True,
    help="With --models or --protocol sse|ws|async|all: seconds per load level (10 for the protocols unless given).",
)
@click.option("--api-key-env", default=None, help="With --models: the variable holding a tenant's API key.")
@click.option(
    "--request",
    "request_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="With --models or --protocol sse|ws|async|all: the KServe v2 JSON body to send (default: random data "
    "for the model's required inputs, from its config).",
)
@click.option(
    "--protocol",
    type=click.Choice(["grpc", "http", "both", "sse", "ws", "async", "all"]),
    default="grpc",
    show_default=True,
    help="grpc|http|both: perf_analyzer on Triton. sse|ws|async|all: REST, gRPC, SSE, WebSocket and the async "
    "queue (through a gateway started for the run) side by side, measured by one client: time to first response, "
    "per-event latency, throughput, end-to-end latency.",
)
@click.option(
    "--redis",
    "redis_url",
    default=None,
    help="With --protocol async|all: the queue's Redis URL (default: a redis-server started for the run).",
)
@click.option("--concurrency", default="1:16:2", show_default=True, help="start:end:step (end included) or 1,2,4.")
@click.option("--request-rate", default=None, help="Request rates (req/s) instead of concurrency, e.g. 100:400:100.")
@click.option("-b", "--batch-size", type=int, default=1, show_default=True)
@click.option("--shape", "shape", multiple=True, help="NAME:dims for a variable input (default: every -1 becomes 16).")
@click.option(
    "--input-data",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="perf_analyzer JSON input data (default: random).",
)
@click.option("--measurement-interval", type=int, default=3000, show_default=True, help="Window length in ms.")
@click.option(
    "--stability-percentage",
    type=float,
    default=None,
    help="Allowed spread between windows (default 30 on small hosts).",
)
@click.option(
    "--max-trials",
    type=click.IntRange(min=3),
    default=None,
    help="Windows perf_analyzer tries per point for 3 stable ones (default 10).",
)
@click.option(
    "--calibration-model",
    default=None,
    help="A model measured alternately in the same run; the gate then compares ratios (stable on noisy CI).",
)
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("perf-report"), show_default=True)
@click.option(
    "--baseline",
    type=click.Path(path_type=Path),
    default=None,
    help="Compare against this baseline JSON; exit 1 on a regression.",
)
@click.option("--tolerance", type=float, default=0.15, show_default=True, help="Allowed throughput drop / p99 rise.")
@click.option("--update-baseline", is_flag=True, help="Write --baseline from this run instead of comparing.")
@click.option(
    "--allow-missing",
    is_flag=True,
    help="Gate only the points measured: baseline points this run did not measure are named, not failed.",
)
@click.option(
    "--grpc-url",
    default=None,
    help="With a URL TARGET: the gRPC host:port (default: read from the tritonserver process on this machine).",
)
@json_option("Print the report (and gate) as JSON.")
def perf(**_: object) -> None:
    """Measure MODEL with perf_analyzer. TARGET is a repository directory (served for the run) or the
    HTTP host:port of a running Triton.

    \b
    Input shapes come from the model config, so variable dims need no --shape flags.
    Writes report.json, report.md and plots (throughput, latency, server breakdown) into --output.
    CI gate:  repoforge perf repo -m MODEL --baseline perf-baseline.json --update-baseline   (once)
              repoforge perf repo -m MODEL --baseline perf-baseline.json --tolerance 0.15   (exit 1 on regression)
    Many models through the gateway (hit ratio, cold loads, cold vs warm latency):
              repoforge perf repo --models 'm*' --distribution zipf:1.1 --concurrency 16 --duration 60
    REST, gRPC, SSE, WebSocket and the async queue compared on one model (a gateway started for the run):
              repoforge perf repo -m MODEL --protocol all --concurrency 1,16 --duration 10
    """


@command(kept="no candidate was measured; nothing was written to {output}", run="repoforge.cli.run.measure:tune")
@click.argument("spec", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-m",
    "--model",
    "models",
    multiple=True,
    required=True,
    help="Model whose batching and instances to tune, as NAME or NAME:p99<=20ms[,concurrency=N][,weight=W]. Repeat "
    "it to tune several models served together (multi-model mode): every model runs in the one server and is measured "
    "at the same time, and the pick maximises the weighted total throughput with each model within its own budget.",
)
@click.option(
    "--latency-budget-ms",
    type=float,
    default=None,
    help="p99 budget at the target concurrency (of each model given without its own p99<=).",
)
@click.option(
    "--concurrency", type=int, default=16, show_default=True, help="Load the throughput is maximised at (per model)."
)
@click.option(
    "--search",
    type=click.Choice(["coordinate", "grid"]),
    default="coordinate",
    show_default=True,
    help="coordinate: 10% of the grid's perf runs to search (a spread-out screen, then an additive model of the "
    "measurements), plus a confirmation budget stated up front (the finalists raced in rounds); grid: measure every "
    "configuration.",
)
@click.option("--measurement-interval", type=int, default=3000, show_default=True, help="perf_analyzer window in ms.")
@click.option(
    "--stability-percentage",
    type=float,
    default=None,
    help="Allowed spread between windows (default 50 on small hosts).",
)
@click.option(
    "--max-trials",
    type=click.IntRange(min=3),
    default=5,
    show_default=True,
    help="Windows perf_analyzer tries per run.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=Path("tune-report"),
    show_default=True,
    help="Writes tune.json, spec-patch.yaml, config.pbtxt and pareto.png here.",
)
@click.option(
    "--apply",
    "apply_to_spec",
    is_flag=True,
    help="Write the best settings into SPEC itself, keeping its comments and layout (nothing when no config "
    "meets the budget).",
)
@click.option(
    "--start-from",
    "start_from",
    multiple=True,
    metavar="MODEL=DIR",
    help="Multi-model mode: start MODEL's climb from the pick of its own single-model tune, DIR being that tune's "
    "-o folder (or its tune.json), instead of from the spec's config. The workflow: `tune SPEC -m a -o ta`, "
    "`tune SPEC -m b -o tb`, then `tune SPEC -m a -m b --start-from a=ta --start-from b=tb`, so the single picks "
    "served together are in the race and the multi-model pick has to beat them. Repeat it per model.",
)
@click.option(
    "--restart",
    is_flag=True,
    help="Discard the checkpoint an interrupted tune left in OUTPUT and start over (by default the same tune "
    "continues from it, and a different one is refused).",
)
@json_option("Print the result as JSON.")
def tune(**_: object) -> None:
    """Find MODEL's max_batch_size, preferred batch sizes, queue delay and instance count with the best
    throughput whose p99 stays within the budget (what Model Analyzer sweeps).

    One tritonserver is started; each candidate is reloaded through explicit model control and
    measured with perf_analyzer. Prints the best config and writes it as a spec patch (--apply: into SPEC).
    Exit 1 when no config meets the budget, naming the one that came closest. Ctrl-C (exit 130) keeps what was
    measured; the same command again continues from there.

    With several -m (e.g. -m a:p99<=20ms -m b:p99<=50ms), the models are tuned together in one server: each
    candidate is a combination of their configs, measured by one perf_analyzer per model at the same time.
    """
