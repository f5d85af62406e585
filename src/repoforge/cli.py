"""The `repoforge` command line. It only parses and prints: every command is a function in the package."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from repoforge import __version__
from repoforge.contract import DEVICE_NAMES, TARGET_NAMES
from repoforge.errors import RepoforgeError


def _fail(exc: BaseException, code: int) -> NoReturn:
    click.secho(f"error: {exc}", fg="red", err=True)
    sys.exit(code)


def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a command function; known errors become one clean message and a non-zero exit."""
    from repoforge.servers.process import ServerStartError

    try:
        return fn(*args, **kwargs)
    except RepoforgeError as exc:
        _fail(exc, exc.exit_code)
    except ServerStartError as exc:
        _fail(exc, 1)


def _progress(quiet: bool) -> Any:
    return None if quiet else (lambda msg: click.echo(f"  {msg}", err=True))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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


@main.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing spec.yaml / model.")
def init(directory: Path, force: bool) -> None:
    """Write a starter spec.yaml and a small example ONNX model into DIRECTORY."""
    from repoforge.scaffold import init as do_init

    for p in _run(do_init, directory, force=force):
        click.echo(f"wrote {p}")
    click.echo(f"next: repoforge build {directory / 'spec.yaml'} -o {directory / 'model_repository'}")


@main.command()
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
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists (only if repoforge wrote it).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output (warnings are still printed).")
def build(spec: Path, output: Path, target: str, device: str | None, force: bool, as_json: bool, quiet: bool) -> None:
    """Build SPEC (spec.yaml) into a model repository at OUTPUT.

    The spec is validated completely first; a wrong spec prints file:line:col, the field and what was
    expected, exits 2 and writes nothing. The repository is written to a temporary directory and
    renamed into place, with a repoforge.lock.json listing the sha256 of every file.
    """
    from repoforge.build import build as do_build

    result = _run(
        do_build, spec, output, target=target, device=device, force=force, progress=_progress(quiet or as_json)
    )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "output": str(result.output),
                    "device": result.plan.device,
                    "models": result.model_names,
                    "files": result.files,
                    "warnings": result.warnings,
                },
                indent=2,
            )
        )
    else:
        if quiet:  # without -q the progress lines carry the warnings already
            for w in result.warnings:
                click.echo(f"  warning: {w}", err=True)
        click.echo(f"built {len(result.model_names)} model(s) for {result.plan.device} into {result.output}")


@main.command()
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
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists (only if repoforge wrote it).")
@click.option("--no-cache", is_flag=True, help="Make, gate and time every variant again (reproduce.sh uses it).")
@click.option(
    "--served", is_flag=True, help="Also time the accepted variants served by a real tritonserver (perf_analyzer)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.option(
    "-v", "--verbose", is_flag=True, help="Every converter warning (fp16's clipped values), not one line per variant."
)
def optimize(
    spec: Path,
    models: tuple[str, ...],
    output: Path,
    device: str,
    force: bool,
    no_cache: bool,
    served: bool,
    as_json: bool,
    quiet: bool,
    verbose: bool,
) -> None:
    """Make each variant of SPEC's models (fp32, ort_optimized, int8, fp16, ...), gate it on accuracy against the
    original on the validation data, time the variants side by side and select one (the spec's `optimize:`).

    Writes OUTPUT/optimize-report.json, optimize-report.md, a latency-vs-accuracy plot and reproduce.sh.
    `repoforge build` uses the same selection. Exit 1 when a `required:` variant fails its gate.
    """
    from repoforge.optimize import optimize as do_optimize

    run = _run(
        do_optimize,
        spec,
        output,
        models=list(models) or None,
        device=device,
        force=force,
        use_cache=not no_cache,
        served=served,
        progress=_progress(quiet or as_json),
        verbose=verbose,
    )
    if as_json:
        click.echo(json.dumps(run.report, indent=2, sort_keys=True))
        return
    for name, m in run.report["models"].items():
        click.echo(f"{name}: selected {m['selected']} ({m['selection']})")
        for v in m["variants"]:
            acc = v["top1"] if v["top1"] is not None else v["agreement"]
            lat = ", ".join(f"{b}: {ms:.3f} ms" for b, ms in v["latency_ms"].items())
            if v.get("served_latency_ms"):
                lat += "; served " + ", ".join(f"{b}: {ms:.3f} ms" for b, ms in v["served_latency_ms"].items())
            verdict = "accepted" if v["accepted"] else f"rejected: {v['reason']}"
            click.echo(f"  {v['name']:<14} {'top1' if v['top1'] is not None else 'agreement'} "
                       f"{'–' if acc is None else f'{acc:.4f}'}  {lat or '(not timed)'}  {verdict}")  # fmt: skip
    click.echo(f"report: {Path(output) / 'optimize-report.md'}")


@main.command()
@click.argument("repository", type=click.Path(path_type=Path))
@click.option(
    "--url",
    default=None,
    help="Validate against a running Triton (host:port of its HTTP endpoint) instead of starting one.",
)
@click.option(
    "--grpc-url", default=None, help="With --url: the server's gRPC host:port, needed for decoupled (streaming) models."
)
@click.option(
    "--tritonserver",
    type=click.Path(path_type=Path),
    default=None,
    help="tritonserver binary (default: the one nvidia-pytriton bundles).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds each model gets to answer (a streaming model: all its responses together); one that does not fails its row.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def validate(
    repository: Path, url: str | None, grpc_url: str | None, tritonserver: Path | None, timeout: float, as_json: bool
) -> None:
    """Load REPOSITORY in a real Triton and smoke-infer every model.

    Checks that every model version is READY, sends each one request made from the config the server
    serves (auto-completed fields included; a spec's `smoke: {inputs: file.npz}` where given), and
    compares ONNX models with in-process onnxruntime and onnx.reference. Exits 1 naming what failed.
    """
    from repoforge.validate import validate as do_validate

    report = _run(
        do_validate,
        repository,
        url=url,
        grpc_url=grpc_url,
        tritonserver=tritonserver,
        progress=_progress(as_json),
        timeout=timeout,
    )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    if not report.ok:
        failed = ", ".join(sorted({c.name for c in report.failures()}))
        _fail(RepoforgeError(f"{len(report.failures())} check(s) failed: {failed}"), 1)
    if not as_json:
        click.echo(f"all {len(report.checks)} model version(s) READY and answering")


@main.command("import")
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
@click.option("--force", is_flag=True, help="Overwrite an existing spec.")
@click.option(
    "--server",
    "server",
    default=None,
    metavar="TRITONSERVER",
    help="A tritonserver binary (or 'bundled'): model folders without config.pbtxt are loaded in it and "
    "their effective (auto-completed) configs imported.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def import_(
    repository: Path,
    output: Path,
    copy_models: bool,
    device: str | None,
    force: bool,
    server: str | None,
    as_json: bool,
) -> None:
    """Turn an existing Triton model repository into a spec, so `repoforge build` gives it back.

    Every field the spec can express is mapped; what it cannot is kept verbatim under `raw_config`
    and reported, never dropped. The rebuilt configs are compared with the originals and any
    remaining difference is listed; one a client would see (inputs, outputs, their dims, format and
    reshape, max_batch_size, decoupled) makes the command exit 1, naming model and field.
    """
    from repoforge.importer import import_repository

    result = _run(
        import_repository, repository, output, copy_models=copy_models, force=force, device=device, server=server
    )
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        click.echo(
            f"wrote {result.spec_path}: {len(result.models)} model(s); build it with "
            f"repoforge build {result.spec_path} -o OUT --device {result.device}"
        )
        for model, fields in result.kept_raw.items():
            click.echo(f"  {model}: kept verbatim in raw_config: {', '.join(fields)}")
        for folder, why in result.skipped.items():
            click.echo(f"  skipped {folder}: {why}")
        for w in result.warnings:
            click.echo(f"  warning: {w}", err=True)
    if result.client_visible:  # the spec is written (to fix by hand), but clients of the rebuilt repository break
        lost = [f"{model}: {d}" for model, diffs in result.client_visible.items() for d in diffs]
        _fail(
            RepoforgeError(
                f"the rebuilt repository changes what clients see ({len(lost)} difference(s)); "
                "fix the spec before you serve it:\n  " + "\n  ".join(lost)
            ),
            1,
        )


@main.command()
@click.argument("repository", type=click.Path(path_type=Path))
@click.option(
    "--server",
    "server",
    default=None,
    metavar="TRITONSERVER",
    help="A tritonserver binary (or 'bundled'): its backends and this host's GPUs become facts, so a missing backend or KIND_GPU without a GPU is an error, not a warning.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def lint(repository: Path, server: str | None, as_json: bool) -> None:
    """Check any Triton model repository statically against Triton's load-time rules (no server started).

    Exits 1 when Triton would refuse a model, 0 with warnings only. Messages name the file, line,
    model and field, and say what to do.
    """
    from repoforge.lint import detect_gpu_count, known_backends_of, lint_repository

    facts: dict[str, object] = {}
    if server:
        facts = {
            "known_backends": _run(known_backends_of, None if server == "bundled" else server),
            "gpu_count": detect_gpu_count(),
        }
    report = _run(lint_repository, repository, **facts)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(report.format())
    sys.exit(report.exit_code)


@main.command()
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
@click.option(
    "--tritonserver",
    type=click.Path(path_type=Path),
    default=None,
    help="tritonserver binary (default: the one nvidia-pytriton bundles).",
)
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
    help="Print the docker lines for the NGC Triton image (GPU hosts) and exit: `repoforge image` and a docker "
    "build of its context first when the build declares Python packages beyond the stock image.",
)
def serve(
    repository: Path,
    host: str,
    http_port: int | None,
    grpc_port: int | None,
    metrics_port: int | None,
    ports: str,
    tritonserver: Path | None,
    cache_size: int | None,
    model_control: str,
    load_models: tuple[str, ...],
    print_command: bool,
) -> None:
    """Serve REPOSITORY with a real tritonserver until Ctrl-C.

    A `build --target torchserve` output is served with real TorchServe instead (inference on
    --http-port, default 8080 there; management on the next port; token auth on, and the printed
    curl lines carry the key). Every port is checked first: all that are taken are named at once.
    """
    from repoforge.serve import Endpoints, docker_lines
    from repoforge.serve import serve as do_serve
    from repoforge.targets import target_of

    if print_command:
        why = target_of(repository).cannot("print_command", repository)
        if why:
            raise click.UsageError(why)
        click.echo(
            _run(
                docker_lines,
                repository,
                http_port=http_port,
                grpc_port=grpc_port,
                metrics_port=metrics_port,
                cache_size_bytes=cache_size,
            )
        )
        return

    def ready(ep: Endpoints) -> None:
        click.echo(f"{ep.server} is ready (Ctrl-C to stop)")
        for line in ep.lines():
            click.echo(f"  {line}")

    _run(
        do_serve,
        repository,
        on_ready=ready,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        auto_ports=ports == "auto",
        tritonserver=tritonserver,
        cache_size_bytes=cache_size,
        model_control=model_control,
        load_models=list(load_models) or None,
    )
    click.echo("stopped")


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


@main.command()
@click.argument("target")
@click.option("-m", "--model", required=True, help="Model to measure.")
@click.option(
    "--protocol",
    type=click.Choice(["grpc", "http", "both"]),
    default="grpc",
    show_default=True,
    help="both: HTTP and gRPC side by side in one report.",
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
@click.option("--json", "as_json", is_flag=True, help="Print the report (and gate) as JSON.")
def perf(
    target: str,
    model: str,
    protocol: str,
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
) -> None:
    """Measure MODEL with perf_analyzer. TARGET is a repository directory (served for the run) or the
    HTTP host:port of a running Triton.

    \b
    Input shapes come from the model config, so variable dims need no --shape flags.
    Writes report.json, report.md and plots (throughput, latency, server breakdown) into --output.
    CI gate:  repoforge perf repo -m MODEL --baseline perf-baseline.json --update-baseline   (once)
              repoforge perf repo -m MODEL --baseline perf-baseline.json --tolerance 0.15   (exit 1 on regression)
    """
    from repoforge.perf.analyzer import PerfError, parse_concurrency
    from repoforge.perf.command import PerfArgumentError, check_arguments
    from repoforge.perf.command import perf as do_perf

    if update_baseline and baseline is None:
        raise click.UsageError("--update-baseline needs --baseline FILE")
    try:
        rates = [float(r) for r in parse_concurrency(request_rate)] if request_rate else None
    except PerfError as exc:
        raise click.BadParameter(
            str(exc).replace("concurrency", "request rate"), param_hint="'--request-rate'"
        ) from None
    try:
        check_arguments(target, concurrency=concurrency, request_rate=rates, baseline=baseline, update=update_baseline)
    except PerfArgumentError as exc:
        raise click.BadParameter(str(exc), param_hint=f"'{exc.param}'") from None
    result = _run(
        do_perf,
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
        progress=_progress(as_json),
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
            _fail(RepoforgeError(result.gate.summary()), 1)
        click.echo(result.gate.summary(), err=True)


@main.command()
@click.argument("spec", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-m", "--model", required=True, help="Model whose batching and instances to tune.")
@click.option("--latency-budget-ms", type=float, required=True, help="p99 budget at the target concurrency.")
@click.option("--concurrency", type=int, default=16, show_default=True, help="Load the throughput is maximised at.")
@click.option(
    "--search",
    type=click.Choice(["coordinate", "grid"]),
    default="coordinate",
    show_default=True,
    help="coordinate: ~10% of the grid's perf runs; grid: measure every configuration.",
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
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def tune(
    spec: Path,
    model: str,
    latency_budget_ms: float,
    concurrency: int,
    search: str,
    measurement_interval: int,
    stability_percentage: float | None,
    max_trials: int,
    output: Path,
    as_json: bool,
) -> None:
    """Find MODEL's max_batch_size, preferred batch sizes, queue delay and instance count with the best
    throughput whose p99 stays within the budget (what Model Analyzer sweeps).

    One tritonserver is started; each candidate is reloaded through explicit model control and
    measured with perf_analyzer. Prints the best config and writes it as a spec patch.
    """
    from repoforge.perf.tune import tune as do_tune

    result = _run(
        do_tune,
        spec,
        model,
        latency_budget_ms=latency_budget_ms,
        search=search,
        concurrency=concurrency,
        measurement_interval_ms=measurement_interval,
        stability_percentage=stability_percentage,
        max_trials=max_trials,
        output=output,
        progress=_progress(as_json),
    )
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    click.echo(result.summary())
    if result.patch_yaml:
        click.echo(f"spec patch ({output / 'spec-patch.yaml'}):\n{result.patch_yaml}")


@main.command("batch")
@click.argument("target")
@click.option("-m", "--model", required=True, help="Model to score DATA with.")
@click.option(
    "--input",
    "data",
    required=True,
    type=click.Path(path_type=Path),
    help="DATA: Parquet file or folder, CSV or JSON Lines.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder for the shards, _manifest.json and _errors.parquet.",
)
@click.option(
    "--map", "maps", multiple=True, help="COLUMN=INPUT (or COL1,COL2=INPUT to stack scalar columns); default: by name."
)
@click.option(
    "--id-column", default=None, help="Column that identifies a row (default: its position, as column 'row')."
)
@click.option(
    "-b", "--batch-size", type=int, default=None, help="Rows per request (default: min(256, max_batch_size))."
)
@click.option("--concurrency", type=int, default=4, show_default=True, help="Requests in flight at once.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option(
    "--rows-per-shard", type=int, default=10_000, show_default=True, help="Rows of DATA per shard (the unit of resume)."
)
@click.option("--restart", is_flag=True, help="Discard what an earlier run wrote to OUTPUT and score everything again.")
@click.option("--model-version", default=None, help="Version to score with (default: the newest served).")
@click.option(
    "--retries", type=int, default=8, show_default=True, help="Retries of a request on transient errors (backoff)."
)
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds per request.")
@click.option(
    "--max-shards", type=int, default=None, help="Score at most this many shards in this run (resume for the rest)."
)
@click.option("--ray-address", default=None, help="--engine ray: a cluster's address (default: a local Ray).")
@click.option("--ray-actors", type=int, default=2, show_default=True, help="--engine ray: Triton client actors.")
@click.option(
    "--progress-interval",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds between progress lines when not on a terminal.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def batch(
    target: str,
    model: str,
    data: Path,
    output: Path,
    maps: tuple[str, ...],
    id_column: str | None,
    batch_size: int | None,
    concurrency: int,
    engine: str,
    rows_per_shard: int,
    restart: bool,
    model_version: str | None,
    retries: int,
    timeout: float,
    max_shards: int | None,
    ray_address: str | None,
    ray_actors: int,
    progress_interval: float,
    as_json: bool,
    quiet: bool,
) -> None:
    """Score every row of DATA with MODEL, resumably. TARGET is a built repository (served for the run) or a
    running server's grpc://host:port or http://host:port.

    \b
    Writes OUTPUT/part-NNNNN.parquet (the id column and every output), _manifest.json (done shards, model
    version and config hash) and _errors.parquet (rows not scored, with the reason). Rerunning the same
    command resumes: each row of DATA ends up in the output exactly once, even after kill -9.
      repoforge batch repo -m classifier --input data.parquet -o scores
    """
    from repoforge.batch.command import batch as do_batch
    from repoforge.batch.command import check_arguments
    from repoforge.batch.model import BatchArgumentError
    from repoforge.servers.process import ServerStartError

    kwargs = dict(
        data=data, output=output, maps=maps, batch_size=batch_size, concurrency=concurrency,
        rows_per_shard=rows_per_shard, engine=engine, retries=retries, max_ranges=max_shards,
    )  # fmt: skip
    try:
        check_arguments(target, **kwargs)  # type: ignore[arg-type]
        if ray_actors < 1:
            raise BatchArgumentError("--ray-actors", f"--ray-actors must be >= 1, not {ray_actors}")
    except BatchArgumentError as exc:
        raise click.BadParameter(str(exc), param_hint=f"'{exc.param}'") from None
    say = _progress(as_json or quiet)
    try:
        result = do_batch(
            target, model, id_column=id_column, restart=restart, model_version=model_version, timeout_s=timeout,
            ray_address=ray_address, ray_actors=ray_actors, progress=say, show_progress=not (as_json or quiet),
            progress_interval=progress_interval, **kwargs,  # type: ignore[arg-type]
        )  # fmt: skip
    except BatchArgumentError as exc:
        raise click.BadParameter(str(exc), param_hint=f"'{exc.param}'") from None
    except (RepoforgeError, ServerStartError) as exc:
        _fail(exc, getattr(exc, "exit_code", 1))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    click.echo(
        f"{result.rows_scored:,} rows scored, {result.rows_errored:,} errored, {result.rows_skipped:,} skipped as done "
        f"in {result.seconds:.1f} s ({result.rows_per_s:,.0f} rows/s); {result.ranges_done}/{result.ranges_total} shards "
        f"in {result.output}" + ("" if result.complete else " (not complete: rerun to resume)")
    )


def _set_option(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """A malformed --set is a usage error (exit 2) before any work."""
    from repoforge.deploy.command import parse_set

    for v in values:
        try:
            parse_set(v)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return values


@main.group()
def deploy() -> None:
    """Deploy a build: Kubernetes manifests (k8s: autoscaling, alerts, a dashboard) or KServe (kserve)."""


@deploy.command("k8s")
@click.argument("build_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "-o", "--output", required=True, type=click.Path(path_type=Path), help="Folder to write the manifests to."
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    callback=_set_option,
    metavar="KEY=VALUE",
    help="Override a deploy: field for this environment, e.g. --set replicas.max=12 (value read as YAML; repeatable).",
)
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists (only if repoforge wrote it).")
@click.option("--json", "as_json", is_flag=True, help="Print the files written as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def deploy_k8s(build_dir: Path, output: Path, sets: tuple[str, ...], force: bool, as_json: bool, quiet: bool) -> None:
    """Write Kubernetes manifests for BUILD_DIR (a Triton or TorchServe build) into OUTPUT.

    Deployment, Services, PodDisruptionBudget, ServiceMonitor, KEDA ScaledObject, PrometheusRule and
    alerts.rules.yml, a Grafana dashboard (JSON and ConfigMap), kustomization.yaml and a README, from the
    spec's deploy: section recorded in the build. A bad value exits 2 naming the field; nothing is written.
    """
    from repoforge.deploy.command import as_json as result_json
    from repoforge.deploy.command import deploy_k8s as do_deploy

    result = _run(do_deploy, build_dir, output, sets=sets, force=force, progress=_progress(quiet or as_json))
    if quiet and not as_json:  # without -q the progress lines carried them
        for w in result.warnings:
            click.echo(f"  warning: {w}", err=True)
    if as_json:
        click.echo(result_json(result))
    else:
        click.echo(f"wrote {len(result.files)} files for the {result.target} build into {result.output}")
        click.echo(f"next: kubectl apply -k {output}")


def _storage_uri_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A storage URI KServe cannot read is a usage error (exit 2) before any work."""
    from repoforge.deploy.kserve import check_storage_uri

    if value is None:
        return None
    try:
        return check_storage_uri(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


@deploy.command("kserve")
@click.argument("build_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "-o", "--output", required=True, type=click.Path(path_type=Path), help="Folder to write the manifests to."
)
@click.option(
    "--storage-uri",
    callback=_storage_uri_option,
    default=None,
    metavar="URI",
    help="Where KServe downloads the build from (s3://, gs://, pvc://claim/path, https://, ...); default: "
    "deploy.model_repository (pvc://<name>-models unless set).",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    callback=_set_option,
    metavar="KEY=VALUE",
    help="Override a deploy: field for this environment, e.g. --set replicas.max=12 (repeatable).",
)
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists (only if repoforge wrote it).")
@click.option("--json", "as_json", is_flag=True, help="Print the files written as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def deploy_kserve(
    build_dir: Path,
    output: Path,
    storage_uri: str | None,
    sets: tuple[str, ...],
    force: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Write a KServe ServingRuntime and InferenceService for BUILD_DIR into OUTPUT.

    The runtime runs the build's server (Triton, or TorchServe for a .mar build) on the image `deploy k8s`
    would use; the InferenceService gets the storage URI, resources, min/max replicas, env and secrets from the
    spec's deploy: section. kubectl apply -k OUTPUT.
    """
    from repoforge.deploy.kserve import as_json as result_json
    from repoforge.deploy.kserve import deploy_kserve as do_deploy

    result = _run(
        do_deploy,
        build_dir,
        output,
        storage_uri=storage_uri,
        sets=sets,
        force=force,
        progress=_progress(quiet or as_json),
    )
    if as_json:
        click.echo(result_json(result))
    else:
        click.echo(f"wrote {len(result.files)} files for the {result.target} build into {result.output}")
        click.echo(f"storage URI: {result.storage_uri} (upload the build there); next: kubectl apply -k {output}")


@main.command("image")
@click.argument("build_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "-o", "--output", required=True, type=click.Path(path_type=Path), help="Folder to write the build context to."
)
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists (only if repoforge wrote it).")
@click.option("--json", "as_json", is_flag=True, help="Print what was written (or that nothing was needed) as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def image(build_dir: Path, output: Path, force: bool, as_json: bool, quiet: bool) -> None:
    """Write a Dockerfile and its complete context for BUILD_DIR's server image into OUTPUT.

    \b
    FROM the stock image the build targets (the NGC Triton release of its Triton version, or TorchServe's),
    plus exactly the Python packages the build declares per model (python_requirements in
    repoforge.lock.json). The model repository stays outside the image (mounted, or a storage URI). A build
    that declares nothing needs no image: it says so, writes nothing and exits 0.
      repoforge image repo -o image && docker build -t REGISTRY/NAME:TAG image && docker push REGISTRY/NAME:TAG
      repoforge deploy k8s repo -o k8s --set image=REGISTRY/NAME:TAG
    """
    from repoforge.deploy.image import as_json as result_json
    from repoforge.deploy.image import write_image

    result = _run(write_image, build_dir, output, force=force, progress=_progress(quiet or as_json))
    if as_json:
        click.echo(result_json(result))
    elif result.output is None:
        click.echo(result.plan.stock_message())
    else:
        click.echo(f"wrote the {result.plan.target} image context ({len(result.files)} files) into {result.output}")
        click.echo(f"FROM {result.plan.base} + {', '.join(result.plan.requirements)}; next:")
        for line in result.plan.commands(str(output)):
            click.echo(f"  {line}")


@main.command("rollout")
@click.argument("target")
@click.option("--router", default=None, help="The router plugin model that splits the traffic.")
@click.option("--candidate", default=None, help="The model being released: one of the router's routes.")
@click.option("--strategy", type=click.Choice(["canary", "blue-green"]), default="canary", show_default=True)
@click.option("--steps", default="5,25,50,100", show_default=True, help="canary: candidate percent per step, to 100.")
@click.option("--interval", default="30s", show_default=True, help="Length of each check (e.g. 500ms, 30s, 2m).")
@click.option(
    "--threshold", type=click.IntRange(min=1), default=2, show_default=True, help="Failed checks before rollback."
)
@click.option(
    "--max-error-rate",
    type=click.FloatRange(0, 1),
    default=0.01,
    show_default=True,
    help="Highest candidate error rate.",
)
@click.option(
    "--max-p99-ms",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Highest candidate p99 in ms, of each call as the router sees it; unset: not checked.",
)
@click.option(
    "--min-agreement",
    type=click.FloatRange(0, 1),
    default=0.99,
    show_default=True,
    help="Lowest shadow agreement with the primary (checked before any traffic where the router shadows it).",
)
@click.option(
    "--min-requests",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Fewest candidate requests (rows) per check; fewer is no data: a failed check.",
)
@click.option(
    "--shadow-requests", type=click.IntRange(min=0), default=None, help="blue-green: shadow rows before the switch."
)
@click.option("--keep-blue", default="10m", show_default=True, help="blue-green: how long blue stays loaded.")
@click.option(
    "--metrics-url",
    default=None,
    help="host:port of the server's metrics (default: read from the tritonserver process on this machine).",
)
@click.option(
    "--log",
    "log",
    type=click.Path(path_type=Path),
    default=Path("rollout.jsonl"),
    show_default=True,
    help="JSON Lines file; one line per check and one for the outcome are appended.",
)
@click.option(
    "--rollback",
    "do_rollback",
    is_flag=True,
    help="Send all traffic back now (to the router's spec weights; with --candidate: away from it), and exit.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result (every check) as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def rollout(
    target: str,
    router: str | None,
    candidate: str | None,
    strategy: str,
    steps: str,
    interval: str,
    threshold: int,
    max_error_rate: float,
    max_p99_ms: float | None,
    min_agreement: float,
    min_requests: int,
    shadow_requests: int | None,
    keep_blue: str,
    metrics_url: str | None,
    log: Path,
    do_rollback: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Release CANDIDATE behind ROUTER on a live Triton, judged every --interval on the candidate's error rate,
    p99 and (before any traffic, where the router shadows it) agreement with the primary; rolled back after
    --threshold failed checks. Fewer than --min-requests in a check is no data: a failed check, never a pass.
    TARGET is a running server's HTTP host:port, or a build folder served for the run (its spec's `rollout:`
    section, when it has one, gives every option not on the command line).

    \b
    Exit 0: promoted; 1: rolled back (the reason names the metric and threshold), or a blue-green switch whose
    blue could not be unloaded ("incomplete"); 2: bad input, e.g. blue-green on a server that cannot unload
    (serve it with --model-control explicit), or a metrics port that does not answer (--metrics-url).
    Every check prints one line and is appended to --log (JSON Lines).
      repoforge rollout 127.0.0.1:8000 --router router --candidate model_v2 --max-p99-ms 50
      repoforge rollout 127.0.0.1:8000 --router router --candidate green --strategy blue-green --keep-blue 10m
      repoforge rollout 127.0.0.1:8000 --router router --rollback     # back to the router's spec weights
    """
    from click.core import ParameterSource
    from pydantic import ValidationError

    from repoforge.rollout.command import RolloutArgumentError, check_target, resolve_policy
    from repoforge.rollout.command import rollout as do_rollout
    from repoforge.spec.rollout import parse_steps

    ctx = click.get_current_context()
    options = {
        "router": router, "candidate": candidate, "strategy": strategy, "steps": steps, "interval": interval,
        "threshold": threshold, "max_error_rate": max_error_rate, "max_p99_ms": max_p99_ms,
        "min_agreement": min_agreement, "min_requests": min_requests, "shadow_requests": shadow_requests,
        "keep_blue": keep_blue,
    }  # fmt: skip
    explicit = {k for k in options if ctx.get_parameter_source(k) not in (ParameterSource.DEFAULT, None)}
    try:
        check_target(target, metrics_url)
        policy = resolve_policy(target, {**options, "steps": parse_steps(steps)}, explicit)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise click.BadParameter(
            str(err["msg"]).removeprefix("Value error, "), param_hint=f"'--{str(err['loc'][0]).replace('_', '-')}'"
        ) from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--steps'") from None
    except RolloutArgumentError as exc:
        raise click.BadParameter(str(exc), param_hint=f"'{exc.param}'") from None
    if policy.router is None:
        raise click.UsageError("Missing option '--router' (or a `rollout:` section in the build's spec).")
    if policy.candidate is None and not do_rollback:
        raise click.UsageError("Missing option '--candidate' (only --rollback goes without one).")
    say = _progress(quiet or as_json)
    try:
        result = do_rollout(
            target, router=policy.router, candidate=policy.candidate, policy=policy, metrics_url=metrics_url, log=log,
            do_rollback=do_rollback, progress=(lambda m: click.echo(m, err=True)) if say else None,
        )  # fmt: skip
    except RolloutArgumentError as exc:
        raise click.BadParameter(str(exc), param_hint=f"'{exc.param}'") from None
    except RepoforgeError as exc:
        _fail(exc, exc.exit_code)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(f"{result.outcome}: {result.reason}")
    sys.exit(0 if do_rollback else result.exit_code)


@main.group()
def drift() -> None:
    """Data drift: profile reference data once, then compare current data with it (PSI, Kolmogorov-Smirnov)."""


@drift.command("profile")
@click.argument("data", type=click.Path(path_type=Path))
@click.option("-m", "--model", required=True, help="The model whose inputs DATA holds (recorded in the profile).")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="The profile (JSON) to write.")
@click.option(
    "--bins", type=click.IntRange(min=2), default=10, show_default=True, help="Quantile bins per numeric feature."
)
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
def drift_profile(data: Path, model: str, output: Path, bins: int, force: bool) -> None:
    """Write a reference profile of DATA (Parquet, CSV or .npz): quantile bins per numeric feature, category
    frequencies (top 50 + other) per string feature. A 2-D .npz array NAME [rows, k] is NAME[0]..NAME[k-1]."""
    from repoforge.drift.profile import make_profile, write_profile

    prof = _run(make_profile, data, model, bins)
    _run(write_profile, prof, output, force)
    click.echo(f"wrote {output}: {len(prof['features'])} features of {prof['source']['rows']} rows for {model}")
    for name, why in prof["skipped"].items():
        click.echo(f"warning: skipped {name}: {why}", err=True)


@drift.command("report")
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
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists (only if it holds a drift report).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def drift_report(reference: Path, current: Path, output: Path, max_psi: float, force: bool, as_json: bool) -> None:
    """Compare CURRENT data with the REFERENCE profile: PSI and KS per feature into OUTPUT (drift-report.json,
    drift-report.md worst first, drift-worst.png). Exit 1 when a feature's PSI passes --max-psi, 2 on bad input
    (nothing written)."""
    from repoforge.drift.report import drift_report as do_report

    result = _run(do_report, reference, current, output, max_psi=max_psi, force=force)
    if as_json:
        click.echo(json.dumps(result.data, indent=2))
    else:
        for r in result.data["features"][:10]:
            ks = "-" if r["ks"] is None else f"{r['ks']:.3f}"
            mark = click.style("DRIFT", fg="red") if r["drifted"] else "ok"
            click.echo(f"{r['feature']:<24} PSI {r['psi']:8.4f}  KS {ks:>6}  {mark}")
        n = len(result.data["features"])
        click.echo(f"{len(result.drifted)} of {n} features past PSI {max_psi:g}; wrote {output}")
    if result.drifted:
        sys.exit(1)


@main.command()
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), default=None, help="Write to a file instead of stdout."
)
def schema(output: Path | None) -> None:
    """Print the JSON Schema of spec.yaml (for editor completion and validation)."""
    from repoforge.schema import spec_schema

    text = json.dumps(spec_schema(), indent=2) + "\n"
    if output:
        output.write_text(text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def doctor(as_json: bool) -> None:
    """Report what this machine can serve (Triton, tracing, backends, perf_analyzer, GPU) and how to fill each gap,
    then the optional extras (Ray, OpenVINO, torch, TorchServe, promtool, Redis) and the commands each enables."""
    from repoforge.doctor import as_dicts
    from repoforge.doctor import doctor as do_doctor

    checks = do_doctor()
    if as_json:
        click.echo(json.dumps(as_dicts(checks), indent=2))
        return
    for title, group in (("", [c for c in checks if not c.optional]),
                         ("optional extras (each enables the commands named)", [c for c in checks if c.optional])):  # fmt: skip
        if title:
            click.echo(f"\n{title}:")
        for c in group:
            mark = click.style("ok  ", fg="green") if c.ok else click.style("gap ", fg="yellow")
            click.echo(f"{mark} {c.name:<20} {c.detail}")
            if c.enables:
                click.echo(f"     {'':<20} enables: {c.enables}")
            if c.fix:
                click.echo(f"     {'':<20} → {c.fix}")


def _register_gateway() -> None:
    from repoforge.cli_gateway import gateway_command, worker_command

    main.add_command(gateway_command)
    main.add_command(worker_command)


_register_gateway()

if __name__ == "__main__":
    main()
