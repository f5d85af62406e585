"""`perf` and `tune`: measure a served model, and search its batching and instances."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import click
import yaml

from repoforge.cli.common import command, fail, json_option, progress
from repoforge.errors import RepoforgeError
from repoforge.perf import command as perf_command
from repoforge.perf import tune as perf_tune
from repoforge.perf import tune_multi as perf_tune_multi
from repoforge.perf.analyzer import PerfError, parse_concurrency
from repoforge.perf.mix import perf_models
from repoforge.perf.protocols import DEFAULT_CONCURRENCY, DEFAULT_DURATION_S, perf_protocols
from repoforge.spec.edit import apply_patch


def _shape_option(values: tuple[str, ...]) -> dict[str, list[int]]:
    shapes = {}
    for v in values:
        name, _, dims = v.partition(":")
        try:
            shapes[name] = [int(d) for d in dims.split(",") if d]
        except ValueError:
            raise click.BadParameter(f"{v!r}: expected NAME:dim,dim (e.g. INPUT0:16 or IMAGE:3,224,224)") from None
        if not name or not shapes[name]:
            raise click.BadParameter(f"{v!r}: expected NAME:dim,dim (e.g. INPUT0:16)")
    return shapes


@command(kept="no point was measured; nothing was written to {output}")
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
def perf(
    target: str,
    model: str,
    protocol: Literal["grpc", "http", "both", "sse", "ws", "async", "all"],
    concurrency: str,
    request_rate: str | None,
    batch_size: int,
    shape: tuple[str, ...],
    input_data: Path | None,
    measurement_interval: int,
    stability_percentage: float | None,
    max_trials: int | None,
    calibration_model: str | None,
    output: Path,
    baseline: Path | None,
    tolerance: float,
    update_baseline: bool,
    allow_missing: bool,
    grpc_url: str | None,
    as_json: bool,
    models: str | None = None,
    distribution: str = "zipf",
    duration: float = 30.0,
    api_key_env: str | None = None,
    request_file: Path | None = None,
    redis_url: str | None = None,
) -> None:
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
    if (model is None) == (models is None):
        raise click.UsageError("give one of -m MODEL (perf_analyzer on one model) or --models A,B,C (a mix)")
    if models is not None:
        if protocol != "grpc" or redis_url is not None:
            raise click.UsageError("--protocol and --redis go with -m MODEL; --models measures HTTP /infer through "
                                   "the gateway")  # fmt: skip
        _perf_models(target, models, distribution, duration, api_key_env, request_file, concurrency, output, as_json,
                     refused={"--baseline": baseline, "--calibration-model": calibration_model,
                              "--request-rate": request_rate})  # fmt: skip
        return
    assert model is not None
    if protocol in ("sse", "ws", "async", "all"):
        _perf_protocols(target, model, protocol, concurrency, duration, request_file, redis_url, grpc_url, output,
                        as_json,
                        refused={"--request-rate": request_rate, "--baseline": baseline,
                                 "--update-baseline": update_baseline, "--calibration-model": calibration_model,
                                 "--input-data": input_data, "--shape": shape,
                                 "--batch-size": batch_size if batch_size != 1 else None})  # fmt: skip
        return
    for flag, value in (("--redis", redis_url), ("--request", request_file)):
        if value is not None:
            raise click.UsageError(
                f"{flag} goes with --protocol sse|ws|async|all (or --models), not --protocol {protocol}"
            )
    if update_baseline and baseline is None:
        raise click.UsageError("--update-baseline needs --baseline FILE")
    try:
        rates = [float(r) for r in parse_concurrency(request_rate)] if request_rate else None
    except PerfError as exc:
        raise click.BadParameter(
            str(exc).replace("concurrency", "request rate"), param_hint="'--request-rate'"
        ) from None
    perf_command.check_arguments(
        target, concurrency=concurrency, request_rate=rates, baseline=baseline, update=update_baseline
    )
    assert protocol in ("grpc", "http", "both")
    result = perf_command.perf(
        target,
        model,
        protocol=protocol,
        concurrency=concurrency,
        request_rate=rates,
        batch_size=batch_size,
        shapes=_shape_option(shape),
        input_data=input_data,
        measurement_interval_ms=measurement_interval,
        stability_percentage=stability_percentage,
        max_trials=max_trials,
        calibration_model=calibration_model,
        output=output,
        baseline=baseline,
        tolerance=tolerance,
        update=update_baseline,
        allow_missing=allow_missing,
        grpc_url=grpc_url,
        progress=progress(as_json),
    )
    if as_json:
        data = result.report.to_dict()
        if result.gate is not None:
            data["gate"] = result.gate.to_dict()
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(f"{'protocol':<9}{'load':>6}{'infer/s':>11}{'p50 ms':>9}{'p99 ms':>9}")
        for p in result.report.points:
            click.echo(f"{p.protocol:<9}{p.load:>6g}{p.throughput:>11,.0f}{p.p50_ms:>9.2f}{p.p99_ms:>9.2f}")
        click.echo(f"report: {output / 'report.md'} (+ report.json, plots)")
    if result.gate is not None:  # the table, then the verdict once (on stderr, where CI logs look for it)
        if not as_json:
            click.echo(result.gate.format_table(verdict=False))
        if not result.gate.passed:
            fail(RepoforgeError(result.gate.summary()), 1)
        click.echo(result.gate.summary(), err=True)


def _perf_protocols(target: str, model: str, protocol: str, concurrency: str, duration: float, request: Path | None,
                    redis_url: str | None, grpc_url: str | None, output: Path, as_json: bool,
                    refused: dict[str, object]) -> None:  # fmt: skip
    """`perf --protocol sse|ws|async|all`: the protocols side by side (repoforge.perf.protocols)."""
    ctx = click.get_current_context()
    default = click.core.ParameterSource.DEFAULT
    report = perf_protocols(target, model, protocol,
                            concurrency=DEFAULT_CONCURRENCY if ctx.get_parameter_source("concurrency") == default
                            else concurrency,
                            duration_s=DEFAULT_DURATION_S if ctx.get_parameter_source("duration") == default
                            else duration,
                            request=request, redis_url=redis_url, grpc_url=grpc_url, output=output,
                            progress=progress(as_json),
                            refused=refused)  # fmt: skip
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    click.echo(f"{'protocol':<9}{'clients':>8}{'req/s':>10}{'first p50':>10}{'gap p50':>9}{'p50 ms':>9}{'p99 ms':>9}"
               f"{'errors':>7}")  # fmt: skip
    for p in report.points:
        click.echo(f"{p.protocol:<9}{p.concurrency:>8}{p.throughput:>10,.1f}{ms(p.first_response_p50_ms):>10}"
                   f"{ms(p.event_gap_p50_ms):>9}{ms(p.p50_ms):>9}{ms(p.p99_ms):>9}{p.errors:>7}")  # fmt: skip
    for note in report.notes:
        click.echo(f"note: {note}")
    click.echo(f"report: {output / 'report.md'} (+ report.json, plots)")


def _perf_models(target: str, models: str, distribution: str, duration: float, api_key_env: str | None,
                 request: Path | None, concurrency: str, output: Path, as_json: bool,
                 refused: dict[str, object]) -> None:  # fmt: skip
    """`perf --models`: the many-model mix through the gateway (repoforge.perf.mix)."""
    for flag, value in refused.items():
        if value is not None:
            raise click.UsageError(f"{flag} measures one model with perf_analyzer; it does not go with --models")
    source = click.get_current_context().get_parameter_source("concurrency")
    report = perf_models(target, models.split(","), distribution=distribution,
                         concurrency="16" if source == click.core.ParameterSource.DEFAULT else concurrency,
                         duration_s=duration, api_key_env=api_key_env, request=request, output=output,
                         progress=progress(as_json))  # fmt: skip
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(f"{'clients':>7}{'req/s':>9}{'hits':>7}{'cold':>6}{'errors':>7}{'p50 ms':>9}{'p99 ms':>9}"
               f"{'warm p99':>10}{'cold p50':>10}{'cold p99':>10}")  # fmt: skip
    for p in report.points:
        lat = p.latency_ms

        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"

        click.echo(f"{p.concurrency:>7}{p.throughput:>9.1f}{p.hits:>7}{p.loads + p.joins:>6}{sum(p.errors.values()):>7}"
                   f"{ms(lat['all']['p50']):>9}{ms(lat['all']['p99']):>9}{ms(lat['warm']['p99']):>10}"
                   f"{ms(lat['cold']['p50']):>10}{ms(lat['cold']['p99']):>10}")  # fmt: skip
    click.echo(f"report: {output / 'report.md'} (+ report.json)")


@command(kept="no candidate was measured; nothing was written to {output}")
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
def tune(
    spec: Path,
    models: tuple[str, ...],
    latency_budget_ms: float | None,
    concurrency: int,
    search: Literal["coordinate", "grid"],
    measurement_interval: int,
    stability_percentage: float | None,
    max_trials: int,
    output: Path,
    apply_to_spec: bool,
    start_from: tuple[str, ...],
    restart: bool,
    as_json: bool,
) -> None:
    """Find MODEL's max_batch_size, preferred batch sizes, queue delay and instance count with the best
    throughput whose p99 stays within the budget (what Model Analyzer sweeps).

    One tritonserver is started; each candidate is reloaded through explicit model control and
    measured with perf_analyzer. Prints the best config and writes it as a spec patch (--apply: into SPEC).
    Exit 1 when no config meets the budget, naming the one that came closest. Ctrl-C (exit 130) keeps what was
    measured; the same command again continues from there.

    With several -m (e.g. -m a:p99<=20ms -m b:p99<=50ms), the models are tuned together in one server: each
    candidate is a combination of their configs, measured by one perf_analyzer per model at the same time.
    """
    try:
        goals = [perf_tune_multi.ModelGoal.parse(m, latency_budget_ms) for m in models]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'-m' / '--model'") from None
    start = _start_from(start_from, [g.name for g in goals])
    if len(goals) > 1:
        _tune_many(spec, goals, concurrency=concurrency, search=search, measurement_interval=measurement_interval,
                   stability_percentage=stability_percentage, max_trials=max_trials, output=output,
                   apply_to_spec=apply_to_spec, restart=restart, as_json=as_json, start=start)  # fmt: skip
        return
    result = perf_tune.tune(
        spec,
        goals[0].name,
        latency_budget_ms=goals[0].budget_ms,
        search=search,
        concurrency=goals[0].concurrency or concurrency,
        measurement_interval_ms=measurement_interval,
        stability_percentage=stability_percentage,
        max_trials=max_trials,
        output=output,
        progress=progress(as_json),
        restart=restart,
    )
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(result.summary())
        if result.patch_yaml:
            click.echo(f"spec patch ({output / 'spec-patch.yaml'}):\n{result.patch_yaml}")
    if result.best is None:
        fail(RepoforgeError(result.shortfall()), 1)
    if apply_to_spec:
        changed = apply_patch(spec, yaml.safe_load(result.patch_yaml))
        click.echo(f"applied to {spec}: {', '.join(changed) or 'nothing changed (it has these settings)'}", err=as_json)


def _start_from(values: tuple[str, ...], models: list[str]) -> dict[str, perf_tune.Candidate]:
    """--start-from MODEL=DIR, checked before anything starts: a usage error (exit 2) for a bad one."""
    hint = "'--start-from'"
    if values and len(models) < 2:
        raise click.BadParameter("it starts a multi-model climb; give two or more -m models with it", param_hint=hint)
    start: dict[str, perf_tune.Candidate] = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(f"{v!r} is not MODEL=DIR (e.g. a=tune-a)", param_hint=hint)
        if name not in models:
            raise click.BadParameter(f"{name!r} is not one of the -m models ({', '.join(models)})", param_hint=hint)
        if name in start:
            raise click.BadParameter(f"{name!r} is given twice", param_hint=hint)
        try:
            start[name] = perf_tune_multi.single_pick(path)
        except ValueError as exc:
            raise click.BadParameter(f"{name}: {exc}", param_hint=hint) from None
    return start


def _tune_many(
    spec: Path,
    goals: list[perf_tune_multi.ModelGoal],
    *,
    concurrency: int,
    search: Literal["coordinate", "grid"],
    measurement_interval: int,
    stability_percentage: float | None,
    max_trials: int,
    output: Path,
    apply_to_spec: bool,
    restart: bool,
    as_json: bool,
    start: dict[str, perf_tune.Candidate],
) -> None:
    """`tune` with several models: one server, every model measured at once, a patch per model."""
    result = perf_tune_multi.tune_models(spec, goals, search=search, concurrency=concurrency,
                         measurement_interval_ms=measurement_interval, stability_percentage=stability_percentage,
                         max_trials=max_trials, output=output, progress=progress(as_json), restart=restart,
                         start=start or None)  # fmt: skip
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(result.summary())
        if result.patch_yaml:
            click.echo(f"spec patch ({output / 'spec-patch.yaml'}; per model: {output}/<model>/spec-patch.yaml):\n"
                       f"{result.patch_yaml}")  # fmt: skip
    if result.best is None:
        fail(RepoforgeError(result.shortfall()), 1)
    if apply_to_spec:
        changed = apply_patch(spec, yaml.safe_load(result.patch_yaml))
        click.echo(f"applied to {spec}: {', '.join(changed) or 'nothing changed (it has these settings)'}", err=as_json)
