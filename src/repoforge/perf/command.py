"""`repoforge perf` as one function: serve (or reach) the model, measure it per protocol, write the
report, and gate it against a baseline. The CLI only parses flags and prints what this returns."""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from repoforge.errors import ArgumentError, Interrupted
from repoforge.perf.analyzer import (
    MeasurementInterrupted,
    PerfError,
    PerfOptions,
    parse_concurrency,
    required_inputs_data,
    run,
    run_calibrated,
)
from repoforge.perf.baseline import Baseline, GateResult, compare, update_baseline
from repoforge.perf.report import PerfReport, host_load, write_report
from repoforge.targets import target_at, target_of
from repoforge.targets.types import PerfEndpoints, TargetArgumentError

Progress = Callable[[str], None]


class PerfArgumentError(ArgumentError, PerfError):
    """A wrong perf argument found before anything is started: the one ArgumentError, and a PerfError."""


_HOST_PORT = re.compile(r"^(https?://)?[A-Za-z0-9.\-]+:\d+/?$|^(https?://)?\[[0-9A-Fa-f:]+\]:\d+/?$")


def check_arguments(
    target: str | Path,
    *,
    concurrency: str | list[int] = "1:16:2",
    request_rate: list[float] | None = None,
    baseline: str | Path | None = None,
    update: bool = False,
) -> None:
    """Fail at once, before a server starts or perf_analyzer runs, on what would only fail later: a
    TARGET that is neither a repository folder nor host:port (e.g. the spec file), a malformed
    concurrency, or a baseline file that does not exist when the run is to be compared with it."""
    path = Path(target)
    if path.is_file():
        hint = (
            f"build it first (repoforge build {path} -o repo) and measure the folder, or give a running server's host:port"
            if path.suffix in (".yaml", ".yml")
            else "give a repository folder or a running server's host:port"
        )
        raise PerfArgumentError(
            "TARGET", f"{path} is a file, but perf measures a built repository folder or a server URL; {hint}"
        )
    if not path.is_dir() and not _HOST_PORT.match(str(target).strip()):
        raise PerfArgumentError(
            "TARGET", f"{target!r} is neither a repository folder nor a server's host:port (e.g. 127.0.0.1:8000)"
        )
    try:
        parse_concurrency(concurrency)
    except PerfError as exc:
        raise PerfArgumentError("--concurrency", str(exc)) from None
    if request_rate is not None and (not request_rate or any(r <= 0 for r in request_rate)):
        raise PerfArgumentError("--request-rate", f"bad request rate {request_rate!r}: values must be > 0")
    if baseline is not None and not update and not Path(baseline).is_file():
        raise PerfArgumentError(
            "--baseline",
            f"baseline {baseline} does not exist; record it first with --update-baseline "
            "(or pass the path of the committed baseline)",
        )


@dataclass
class PerfResult:
    report: PerfReport
    files: list[Path]
    gate: GateResult | None = None


@contextlib.contextmanager
def _target(
    target: str | Path, models: list[str], grpc_url: str | None, say: Progress, need_grpc: bool = True
) -> Iterator[PerfEndpoints]:
    """A built folder is served for the run by its target; anything else is the HTTP host:port of a running server,
    whose target is the one that answers there (Triton's where none does)."""
    path = Path(target)
    if path.is_dir():
        with target_of(path).perf_endpoint(path, models, say) as ep:
            yield ep
        return
    http_url = str(target).removeprefix("http://").rstrip("/")
    try:
        ep = target_at(http_url).running_perf_endpoint(http_url, models, grpc_url=grpc_url, need_grpc=need_grpc)
    except TargetArgumentError as exc:
        raise PerfArgumentError(exc.param, str(exc)) from None
    yield ep


def perf(
    target: str | Path,
    model: str,
    *,
    protocol: Literal["grpc", "http", "both"] = "grpc",
    concurrency: str | list[int] = "1:16:2",
    request_rate: list[float] | None = None,
    batch_size: int = 1,
    shapes: dict[str, list[int]] | None = None,
    input_data: Path | None = None,
    measurement_interval_ms: int = 3000,
    stability_percentage: float | None = None,
    max_trials: int | None = None,
    calibration_model: str | None = None,
    output: str | Path = "perf-report",
    baseline: str | Path | None = None,
    tolerance: float = 0.15,
    update: bool = False,
    allow_missing: bool = False,
    grpc_url: str | None = None,
    plots: bool = True,
    progress: Progress | None = None,
) -> PerfResult:
    """Measure `model` with perf_analyzer and write report.json/report.md/plots into `output`.

    With `baseline`, the run is compared against it (GateResult.passed tells the CI gate; baseline points this run
    did not measure fail it unless `allow_missing`); with `update`, the baseline file is (re)written from this run
    instead.
    """
    check_arguments(target, concurrency=concurrency, request_rate=request_rate, baseline=baseline, update=update)
    say = progress or (lambda _m: None)
    protocols: list[Literal["grpc", "http"]] = ["http", "grpc"] if protocol == "both" else [protocol]
    wanted = [model] + ([calibration_model] if calibration_model else [])
    with contextlib.ExitStack() as stack:
        ep = stack.enter_context(_target(target, wanted, grpc_url, say, need_grpc=protocol != "http"))
        start = host_load()
        options, points, calib_points = [], [], []
        if ep.http_only:
            if protocol == "both":
                raise PerfError(ep.http_only)
            protocols = ["http"]
        data_text = None
        if input_data is None:  # optional inputs stay out unless the user maps them
            probe = PerfOptions(model=model, url=ep.http, shapes=shapes or {}, service_kind=ep.service_kind)
            data_text = required_inputs_data(probe, ep.configs.get(model))
        if data_text is not None:
            data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="repoforge-perf-data-"))
            input_data = Path(data_dir) / f"{model}.perf-data.json"
            input_data.write_text(data_text)
            optional = [t.name for t in ep.configs[model].input if t.optional]  # type: ignore[union-attr]
            say(f"optional input(s) {', '.join(optional)} left out (random data only for the required ones)")
        interrupted = False
        try:
            for proto in protocols:
                opts = PerfOptions(
                    model=model,
                    url=ep.http if proto == "http" else ep.grpc,
                    protocol=proto,
                    concurrency=concurrency,
                    request_rate=request_rate,
                    batch_size=batch_size,
                    shapes=shapes or {},
                    measurement_interval_ms=measurement_interval_ms,
                    input_data=input_data or (ep.input_data or {}).get(model),
                    stability_percentage=stability_percentage,
                    max_trials=max_trials,
                    service_kind=ep.service_kind,
                    metrics_url=ep.metrics_url,
                )
                say(
                    f"perf_analyzer {proto} → {opts.url}, {model}, {'request rate' if request_rate else 'concurrency'} "
                    f"{', '.join(str(x) for x in opts.loads)}"
                )
                options.append(opts)
                try:
                    if calibration_model:
                        pts, cal = run_calibrated(
                            opts, ep.configs[model], calibration_model, ep.configs[calibration_model], say
                        )
                        calib_points += cal
                    else:
                        pts = run(opts, ep.configs[model], say)
                except MeasurementInterrupted as stop:  # Ctrl-C: keep what was measured
                    pts, interrupted = stop.points[0], True
                    calib_points += stop.points[1] if len(stop.points) > 1 else []
                    if not pts:
                        options.pop()
                points += pts
                if interrupted:
                    break
        except KeyboardInterrupt:  # between two runs
            interrupted = True
        if interrupted and not points:
            raise Interrupted(f"no point was measured; nothing was written to {output}")
        report = PerfReport.from_runs(
            options,
            points,
            ep.configs[model],
            calibration_model=calibration_model,
            calibration_points=calib_points,
            host_start=start,
            batching=(ep.batching or {}).get(model),
        )
    extra: dict[str, str] = {}
    if ep.requests and ep.request_data and model in ep.requests and input_data is None:  # made for this run: kept
        body = Path(output).absolute() / f"{model}.request.json"
        extra = {body.name: ep.requests[model], f"{model}.perf-data.json": ep.request_data(body)}
        report.settings["input_data"] = str(body.with_name(f"{model}.perf-data.json"))
        report.settings["request_file"] = str(body)
    if data_text is not None:  # the required-inputs data made for this run: kept with the report, like a request
        extra[f"{model}.perf-data.json"] = data_text
        report.settings["input_data"] = str(Path(output).absolute() / f"{model}.perf-data.json")
    files = write_report(report, output, plots=plots, extra_files=extra)
    if interrupted:
        raise Interrupted(
            f"the {len(points)} point(s) measured so far are in {Path(output) / 'report.json'} "
            "(not compared with any baseline)"
        )
    gate = None
    if baseline is not None:
        if update:
            update_baseline(baseline, report)
            say(f"baseline written to {baseline}")
        else:
            gate = compare(report, Baseline.load(baseline), tolerance, allow_missing=allow_missing)
    return PerfResult(report, files, gate)
