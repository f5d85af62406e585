"""What `perf` and `tune` run: the implementations, imported only when a command runs (declared, with their options
and help, in repoforge/cli/measure.py, which `--help` and usage errors import alone)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import click
import yaml

from repoforge.cli.common import fail, progress
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
    """`measure`: see its declaration in repoforge/cli/measure.py."""
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
    """`measure`: see its declaration in repoforge/cli/measure.py."""
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
    """--start-from MODEL=DIR, checked before anything is built or started: a usage error (exit 2) for a bad one."""
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
