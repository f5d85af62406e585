"""`repoforge serve`: run a real tritonserver (or TorchServe) on a build until interrupted, or print the
Docker lines that serve it on a GPU host."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from repoforge.errors import ServeError
from repoforge.servers.ports import ports_in_use
from repoforge.targets import get_target, target_of
from repoforge.targets.types import Endpoints, ServePort, pick_port

__all__ = ["Endpoints", "ServePort", "check_ports", "docker_lines", "pick_port", "plan_ports", "serve"]


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
    target = get_target("torchserve" if torchserve else "triton")
    return target.serve_ports(http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, auto=auto)


def check_ports(ports: list[ServePort], host: str = "127.0.0.1") -> None:
    """Fail before anything starts, naming every fixed port that is taken (or asked for twice) and the flag
    that moves it, so one message says everything to change."""
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
    target = target_of(repository)
    ports = target.serve_ports(http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, auto=auto_ports)
    server = target.server(Path(repository), host=host, ports=ports, **server_options)
    check_ports(ports, host)
    _run_until_stopped(server, target.server_name, lambda: target.endpoints(server), on_ready, stop_event)


def docker_lines(
    repository: str | Path,
    *,
    http_port: int | None = None,
    grpc_port: int | None = None,
    metrics_port: int | None = None,
    cache_size_bytes: int | None = None,
) -> str:
    """Shell lines that serve `repository` in Docker on a GPU host (`serve --print-command`); TargetArgumentError
    where its target has none."""
    return target_of(repository).docker_recipe(
        Path(repository),
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        cache_size_bytes=cache_size_bytes,
    )


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
