"""`repoforge serve`: run a real tritonserver (or TorchServe) on a build until interrupted, or print the
Docker lines that serve it on a GPU host."""

from __future__ import annotations

import re
import shlex
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from repoforge.errors import ServeError
from repoforge.triton.reader import RepoModel, read_repository, uses_response_cache

if TYPE_CHECKING:
    from repoforge.servers.torchserve import TorchServeServer
    from repoforge.servers.triton import TritonServer

DEFAULT_CACHE_BYTES = 256 * 1024 * 1024


#: (HTTP, gRPC, metrics) ports `repoforge serve` uses unless told otherwise; TorchServe's management API and
#: gRPC management API take the port after its HTTP and gRPC ports.


@dataclass(frozen=True)
class ServePort:
    """One port a server will listen on, and the option that moves it (what a conflict message must name)."""

    role: str
    flag: str
    port: int | None  # None: a free one is picked at start


def pick_port(given: int | None, default: int, auto: bool) -> int | None:
    """A port given is kept (0 means "any free one": None); else the default, or a free one with `auto`."""
    if given is not None:
        return given or None
    return None if auto else default


def plan_ports(
    torchserve: bool,
    *,
    http_port: int | None = None,
    grpc_port: int | None = None,
    metrics_port: int | None = None,
    auto: bool = False,
) -> list[ServePort]:
    """Every port `serve` will bind: a port given is kept (0 means "any free one"), the others are the
    defaults, or free ones with `auto` (each target says which ports it has: `Target.serve_ports`)."""
    from repoforge.targets import get_target

    target = get_target("torchserve" if torchserve else "triton")
    return target.serve_ports(http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, auto=auto)


def check_ports(ports: list[ServePort], host: str = "127.0.0.1") -> None:
    """Fail before anything starts, naming every fixed port that is taken (or asked for twice) and the flag
    that moves it, so one message says everything to change."""
    from repoforge.servers.ports import ports_in_use

    fixed = [p for p in ports if p.port is not None]
    for i, p in enumerate(fixed):
        if p.port is not None and not 0 < p.port < 65536:
            raise ServeError(f"{p.role} port {p.port} ({p.flag}) is not a TCP port (1-65535)")
        twin = next((q for q in fixed[:i] if q.port == p.port), None)
        if twin is not None:
            raise ServeError(
                f"port {p.port} is asked for twice: {twin.role} ({twin.flag}) and {p.role} ({p.flag}); "
                "move one of them with its flag"
            )
    taken = set(ports_in_use([p.port for p in fixed if p.port is not None], host))
    if taken:
        listed = ", ".join(f"{p.port} ({p.flag})" for p in fixed if p.port in taken)
        raise ServeError(
            f"ports taken on {host}: {listed}. Stop what listens there, choose other ports with "
            "those flags, or pass --ports auto to pick free ones"
        )


@dataclass
class Endpoints:
    """What `serve` tells the user once the server is ready: where each API is, and a command that checks it."""

    server: str
    rows: list[tuple[str, str]]
    models: list[str]
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        rows = [*self.rows, ("models", ", ".join(self.models))]
        return [f"{label:<10} {value}" for label, value in rows] + self.notes


ModelControl = Literal["none", "explicit", "poll"]


class ServeArgumentError(ServeError):
    """A wrong argument found before a server starts; `param` names it (the CLI's usage error, exit 2)."""

    exit_code = 2

    def __init__(self, param: str, message: str) -> None:
        self.param = param
        super().__init__(message)


def check_model_control(model_control: str, load_models: Sequence[str] | None, names: list[str]) -> None:
    """`--load` only means something in explicit model control, and names models the build has."""
    if model_control not in ("none", "explicit", "poll"):
        raise ServeArgumentError("--model-control", f"expected none, explicit or poll, not {model_control!r}")
    if load_models and model_control != "explicit":
        raise ServeArgumentError(
            "--load", "--load chooses the models to start with in explicit model control: add --model-control explicit"
        )
    unknown = [m for m in load_models or () if m != "*" and m not in names]
    if unknown:
        raise ServeArgumentError(
            "--load", f"no model {', '.join(repr(u) for u in unknown)} in this build; it has {', '.join(sorted(names))}"
        )


def check_serve_arguments(repository: str | Path, model_control: str, load_models: Sequence[str] | None) -> None:
    """`--model-control` and `--load` checked before anything starts (ServeArgumentError, a usage error)."""
    from repoforge.targets import target_of

    if model_control == "none" and not load_models:
        return
    target = target_of(repository)
    if target.name != "triton":
        raise ServeArgumentError(
            "--model-control", f"{repository} is a {target.server_name} build; model control is a Triton setting "
            "(TorchServe's management API loads and unloads models as it is)"
        )  # fmt: skip
    check_model_control(model_control, load_models, [m.name for m in read_repository(Path(repository))])


def make_server(
    repository: str | Path,
    *,
    host: str = "127.0.0.1",
    http_port: int | None = None,
    grpc_port: int | None = None,
    metrics_port: int | None = None,
    tritonserver: str | Path | None = None,
    cache_size_bytes: int | None = None,
    model_control: ModelControl = "none",
    load_models: Sequence[str] | None = None,
) -> TritonServer:
    """A TritonServer for `repository`; turns on the response cache when a model asks for it
    (Triton silently ignores `response_cache` without `--cache-config`). In explicit model control the server
    starts with `load_models` (default: every model) and takes load/unload requests (blue-green rollout)."""
    from repoforge.servers.triton import TritonServer

    repo = Path(repository)
    models = read_repository(repo)
    check_model_control(model_control, load_models, [m.name for m in models])
    if model_control == "explicit" and not load_models:
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
    )


#: A Python backend that needs the repoforge package where Triton runs it.
_IMPORTS_REPOFORGE = re.compile(r"^\s*(?:from|import)\s+repoforge\b", re.MULTILINE)


def models_needing_repoforge(models: list[RepoModel]) -> list[str]:
    """Models whose Python backend imports repoforge: a `--device cpu` build's ONNX/TorchScript runners (which
    also need onnxruntime or torch) and every plugin. The NGC image has neither, so they fail to load there."""
    return [
        m.name
        for m in models
        if any(_IMPORTS_REPOFORGE.search(f.read_text(errors="replace")) for f in sorted(m.path.glob("*/*.py")))
    ]


def docker_recipe(
    repository: str | Path,
    *,
    http_port: int | None = None,
    grpc_port: int | None = None,
    metrics_port: int | None = None,
    cache_size_bytes: int | None = None,
) -> str:
    """Shell lines that serve `repository` in Docker on a GPU host: the stock NGC image's `docker run` line or,
    when the build declares Python packages beyond it, `repoforge image` and a `docker build` of its context
    first, then the run line on that image."""
    from repoforge.deploy.build_info import read_build
    from repoforge.deploy.image import legacy_error, plan_image
    from repoforge.errors import BuildError

    repo = Path(repository).resolve()
    server = make_server(
        repo, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, cache_size_bytes=cache_size_bytes
    )
    try:
        plan = plan_image(read_build(repo))
    except BuildError:  # not written by repoforge build: nothing declared, the stock image
        return server.docker_command(repo)
    if plan.legacy:
        raise ServeError(str(legacy_error(plan)))
    if not plan.needed:
        return server.docker_command(repo, image=plan.base)
    context = repo.parent / f"{repo.name}-image"
    return "\n".join(
        [
            f"# the build's models need {', '.join(plan.requirements)} beyond {plan.base}: build that image first",
            f"repoforge image {shlex.quote(str(repo))} -o {shlex.quote(str(context))}",
            f"docker build -t {plan.tag} {shlex.quote(str(context))}",
            server.docker_command(repo, image=plan.tag),
        ]
    )


def make_torchserve(
    output: str | Path, *, host: str = "127.0.0.1", ports: list[int | None] | None = None
) -> TorchServeServer:
    """A TorchServeServer for a `build --target torchserve` output on `ports` (inference, management, metrics,
    gRPC inference, gRPC management; None entries become free ports); token auth stays on."""
    from repoforge.servers.ports import free_ports
    from repoforge.servers.torchserve import TorchServeServer

    if host != "127.0.0.1":
        raise ServeError("TorchServe is served on 127.0.0.1 only by repoforge; put a proxy in front to expose it")
    chosen: list[int] | None = None
    if ports is not None and any(p is not None for p in ports):  # all None: the server picks (and retries a race)
        fresh = iter(free_ports(sum(p is None for p in ports)))
        chosen = [p if p is not None else next(fresh) for p in ports]
    return TorchServeServer(output, workflows="all", ports=chosen)


def serve(
    repository: str | Path,
    *,
    on_ready: Callable[[Endpoints], None] | None = None,
    stop_event: threading.Event | None = None,
    host: str = "127.0.0.1",
    http_port: int | None = None,
    grpc_port: int | None = None,
    metrics_port: int | None = None,
    auto_ports: bool = False,
    **server_options: object,
) -> None:
    """Start Triton (or TorchServe, for a TorchServe build), report its endpoints, block until
    Ctrl-C/SIGTERM (or `stop_event`), then stop it. Ports not given are the defaults (8000-8002;
    TorchServe 8080/8081, 8082, 7070/7071), or free ones with `auto_ports`; every fixed one is checked first."""
    from repoforge.targets import target_of

    target = target_of(repository)
    model_control = str(server_options.pop("model_control", None) or "none")
    load_models = server_options.pop("load_models", None)
    check_serve_arguments(repository, model_control, load_models)  # type: ignore[arg-type]
    if target.name == "triton":
        server_options.update(model_control=model_control, load_models=load_models)
    ports = target.serve_ports(http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, auto=auto_ports)
    server = target.server(Path(repository), host=host, ports=ports, **server_options)
    check_ports(ports, host)
    _run_until_stopped(server, target.server_name, lambda: target.endpoints(server), on_ready, stop_event)


def torchserve_endpoints(ts: TorchServeServer) -> Endpoints:
    """A running TorchServe's endpoints, with a health check that passes token auth: the key it wrote this start."""
    p = ts.ports
    notes = ["token auth off"]
    if ts.keys():
        expiry = ts.key_expiry("inference")
        notes = [f"token auth on: keys in {ts.key_file}"]
        if expiry:
            notes.append(
                f"the keys expire {expiry}; a new inference key: "
                f"{ts.curl_command('management', '/token?type=inference', key='API')}"
            )
    rows = [
        ("inference", f"{ts.inference_url}   ({ts.curl_command('inference', '/ping')})"),
        ("management", f"{ts.management_url}   ({ts.curl_command('management', '/models')})"),
        ("gRPC", f"127.0.0.1:{p.grpc_inference} (management 127.0.0.1:{p.grpc_management})"),
        ("metrics", f"{ts.metrics_url}/metrics"),
    ]
    if ts.workflows:
        rows.append(("workflows", ", ".join(f"POST /wfpredict/{w.removesuffix('.war')}" for w in ts.workflows)))
    return Endpoints("TorchServe", rows, ts.list_models(), notes)


def _run_until_stopped(
    server: Any,
    what: str,
    endpoints: Callable[[], Endpoints],
    on_ready: Callable[[Endpoints], None] | None,
    stop_event: threading.Event | None,
) -> None:
    """Start `server`, report it, and keep it up until Ctrl-C, SIGTERM or `stop_event`; always stop it."""
    stop = stop_event or threading.Event()
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set()) if main else None
    try:
        with server:
            try:
                if on_ready:
                    on_ready(endpoints())
                while not stop.wait(0.5):
                    if not server.alive:
                        raise ServeError(f"{what} exited unexpectedly:\n{server.log_tail(20)}")
            except KeyboardInterrupt:
                pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
