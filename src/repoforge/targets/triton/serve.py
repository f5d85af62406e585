"""Triton served for each command: `serve` (and its Docker lines), and the short-lived servers `perf`, `batch`
and `rollout` measure or drive."""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from tritonclient.grpc import model_config_pb2 as mc

from repoforge.deploy.build_info import read_lock
from repoforge.deploy.image_plan import legacy_error, plan_image
from repoforge.errors import BuildError, ServeError
from repoforge.perf.analyzer import PerfError
from repoforge.servers.discover import other_port
from repoforge.servers.triton import RUN_EXIT_TIMEOUT_S, TritonServer
from repoforge.targets.triton import build_info
from repoforge.targets.types import (
    BatchEndpoint,
    ControlEndpoint,
    Endpoints,
    PerfEndpoints,
    Progress,
    TargetArgumentError,
)
from repoforge.triton.client import served_config
from repoforge.triton.reader import rate_limit_flags, read_repository, uses_response_cache

DEFAULT_CACHE_BYTES = 256 * 1024 * 1024


def make_server(
    repository: str | Path,
    *,
    host: str = "127.0.0.1",
    http_port: int | None = None,
    grpc_port: int | None = None,
    metrics_port: int | None = None,
    tritonserver: str | Path | None = None,
    cache_size_bytes: int | None = None,
    model_control: Literal["none", "explicit", "poll"] = "none",
    load_models: Sequence[str] | None = None,
) -> TritonServer:
    """A TritonServer for `repository`; turns on the response cache when a model asks for it
    (Triton silently ignores `response_cache` without `--cache-config`). In explicit model control the server
    starts with `load_models` (default: every model) and takes load/unload requests (blue-green rollout); instance
    groups with a `rate_limiter` turn Triton's rate limiter on (`rate_limit_flags`). TargetArgumentError, before anything starts, for a `--load` without it or of a model the build lacks."""
    repo = Path(repository)
    models = read_repository(repo)
    check_model_control(model_control, load_models, [m.name for m in models])
    if model_control == "explicit" and load_models is None:  # [] : nothing (the gateway loads on demand)
        load_models = ["*"]
    if cache_size_bytes is None and uses_response_cache(models):
        cache_size_bytes = DEFAULT_CACHE_BYTES
    return TritonServer(
        repo,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        binary=tritonserver,
        cache_size_bytes=cache_size_bytes,
        model_control=model_control,
        load_models=list(load_models) if load_models else None,
        extra_args=rate_limit_flags(repo, models),
    )


def check_model_control(model_control: str, load_models: Sequence[str] | None, names: list[str]) -> None:
    """`--load` only means something in explicit model control, and names models the build has."""
    if model_control not in ("none", "explicit", "poll"):
        raise TargetArgumentError("--model-control", f"expected none, explicit or poll, not {model_control!r}")
    if load_models and model_control != "explicit":
        raise TargetArgumentError(
            "--load", "--load chooses the models to start with in explicit model control: add --model-control explicit"
        )
    unknown = [m for m in load_models or () if m != "*" and m not in names]
    if unknown:
        raise TargetArgumentError(
            "--load", f"no model {', '.join(repr(u) for u in unknown)} in this build; it has {', '.join(sorted(names))}"
        )


def endpoints(server: TritonServer) -> Endpoints:
    """A running tritonserver's endpoints, with a health check that works as printed, and its READY models."""
    rows = [("HTTP", f"http://{server.http_url}   (curl http://{server.http_url}/v2/health/ready)"),
            ("gRPC", server.grpc_url), ("metrics", server.metrics_url)]  # fmt: skip
    ready = sorted({s["name"] for s in server.model_states() if s["state"] == "READY"})
    notes = []
    if server.options.model_control == "explicit":
        notes.append(
            f"model control explicit: load/unload with POST http://{server.http_url}/v2/repository/models/<model>"
            "/load (or /unload); blue-green `repoforge rollout` can unload blue"
        )
    return Endpoints("tritonserver", rows, ready, notes)


def docker_recipe(
    repository: str | Path,
    *,
    http_port: int | None = None,
    grpc_port: int | None = None,
    metrics_port: int | None = None,
    cache_size_bytes: int | None = None,
) -> str:
    """Shell lines that serve `repository` in Docker (a GPU host for a GPU build, any host for a CPU build): the stock
    NGC image's `docker run` line or, when the build declares Python packages beyond it, `repoforge image` and a
    `docker build` of its context first, then the run line on that image."""
    repo = Path(repository).resolve()
    server = make_server(
        repo, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, cache_size_bytes=cache_size_bytes
    )
    try:
        info = build_info.describe_build(read_lock(repo))
        plan = plan_image(info)
    except BuildError:  # not written by repoforge build: nothing declared, the stock image
        return server.docker_command(repo)
    gpus = info.device != "cpu"  # a CPU build (native backends on KIND_CPU) runs on the same image without a GPU
    if plan.legacy:
        raise ServeError(str(legacy_error(plan)))
    if not plan.needed:
        return server.docker_command(repo, image=plan.base, gpus=gpus)
    context = repo.parent / f"{repo.name}-image"
    return "\n".join(
        [
            f"# the build's models need {', '.join(plan.requirements)} beyond {plan.base}: build that image first",
            f"repoforge image {shlex.quote(str(repo))} -o {shlex.quote(str(context))}",
            f"docker build -t {plan.tag} {shlex.quote(str(context))}",
            server.docker_command(repo, image=plan.tag, gpus=gpus),
        ]
    )


@contextlib.contextmanager
def serve_for_perf(path: Path, models: list[str], say: Progress) -> Iterator[PerfEndpoints]:
    """A Triton repository served for the run (response cache off: perf_analyzer repeats one input, so a cache
    would measure only itself)."""
    repo = read_repository(path)
    found = {m.name: m.config for m in repo}
    missing = [m for m in models if m not in found]
    if missing:
        raise PerfError(f"model '{missing[0]}' is not in {path}; it has {', '.join(sorted(found))}")
    say(f"starting tritonserver on {path} (response cache off for measuring)")
    with TritonServer(
        path, extra_args=rate_limit_flags(path, repo), exit_timeout_s=RUN_EXIT_TIMEOUT_S
    ) as server:  # measured as `serve` runs it
        say(f"tritonserver ready at http://{server.http_url}")
        yield PerfEndpoints(server.http_url, server.grpc_url, {m: found[m] for m in models})


@contextlib.contextmanager
def serve_for_batch(path: Path, model: str, say: Progress) -> Iterator[BatchEndpoint]:
    """A Triton repository served for the run on free ports, stopped when the run ends (also on failure)."""
    found = sorted(m.name for m in read_repository(path))
    if model not in found:
        raise TargetArgumentError("--model", f"model '{model}' is not in {path}; it has {', '.join(found)}")
    say(f"starting tritonserver on {path}")
    with TritonServer(path, exit_timeout_s=RUN_EXIT_TIMEOUT_S) as server:
        say(f"tritonserver ready, gRPC {server.grpc_url}")
        yield BatchEndpoint("grpc", server.grpc_url)


@contextlib.contextmanager
def serve_for_rollout(path: Path, say: Progress) -> Iterator[ControlEndpoint]:
    """A Triton repository served with explicit model control and every model loaded, so a rollout can load and
    unload candidates; stopped when the rollout ends (also on failure)."""
    say(f"starting tritonserver on {path} (explicit model control, every model loaded)")
    with TritonServer(path, model_control="explicit", load_models=["*"]) as server:
        say(f"tritonserver ready: HTTP {server.http_url}, gRPC {server.grpc_url}, metrics {server.metrics_url}")
        yield ControlEndpoint(server.http_url, server.metrics_url.split("://")[-1].removesuffix("/metrics"))


def grpc_endpoint(http_url: str, grpc_url: str | None) -> str:
    """The gRPC host:port of the Triton whose HTTP API is `http_url`: `grpc_url`, else the port the tritonserver
    process on this machine was started with (Triton's HTTP API does not say, and `serve --ports auto` puts it
    anywhere). One that does not answer, or cannot be read, is a TargetArgumentError naming --grpc-url."""
    found = other_port(http_url, "grpc", grpc_url, "--grpc-url")
    if found.problem in ("unreadable", "off"):
        why = (
            "its gRPC endpoint is switched off on its command line"
            if found.problem == "off"
            else "not a tritonserver on this machine, so its command line cannot be read"
        )
        raise TargetArgumentError(
            "--grpc-url",
            f"cannot tell the gRPC port of the server at {http_url} ({why}); pass it with --grpc-url host:port, "
            "or measure over HTTP with --protocol http",
        )
    if found.problem == "silent":
        raise TargetArgumentError(
            "--grpc-url",
            f"nothing answers at {found.address} (the gRPC port, {found.where}); pass the right one with --grpc-url",
        )
    return found.address


def _config_from_server(http_url: str, model: str) -> mc.ModelConfig:
    try:
        return served_config(http_url, model, timeout=30.0)
    except Exception as exc:  # noqa: BLE001 - unreachable server or unknown model: one line either way
        raise PerfError(
            f"cannot read the config of '{model}' from Triton at {http_url}: {str(exc).splitlines()[0]}"
        ) from None


def running_for_perf(http_url: str, models: list[str], grpc_url: str | None, need_grpc: bool) -> PerfEndpoints:
    """A running Triton measured as it is: its gRPC port read from it (or given), each model's config from it."""
    grpc = grpc_endpoint(http_url, grpc_url) if need_grpc else http_url
    return PerfEndpoints(http_url, grpc, {m: _config_from_server(http_url, m) for m in models})
