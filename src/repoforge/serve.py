"""`repoforge serve`: run a real tritonserver on a repository until interrupted."""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from repoforge.errors import ServeError
from repoforge.triton.reader import read_repository, uses_response_cache

DEFAULT_CACHE_BYTES = 256 * 1024 * 1024


@dataclass
class Endpoints:
    http: str
    grpc: str
    metrics: str
    models: list[str]
    note: str = ""

    def lines(self) -> list[str]:
        health = "/ping" if self.note else "/v2/health/ready"
        out = [f"HTTP     http://{self.http}   (curl http://{self.http}{health})",
               f"{'' if self.note else 'gRPC     '}{self.grpc}", f"metrics  {self.metrics}",
               f"models   {', '.join(self.models)}"]
        return out + ([self.note] if self.note else [])


def make_server(repository: str | Path, *, host: str = "127.0.0.1", http_port: int | None = None,
                grpc_port: int | None = None, metrics_port: int | None = None,
                tritonserver: str | Path | None = None, cache_size_bytes: int | None = None,
                model_control: str = "none") -> "TritonServer":  # noqa: F821
    """A TritonServer for `repository`; turns on the response cache when a model asks for it
    (Triton silently ignores `response_cache` without `--cache-config`)."""
    from repoforge.servers.triton import TritonServer

    repo = Path(repository)
    models = read_repository(repo)
    if cache_size_bytes is None and uses_response_cache(models):
        cache_size_bytes = DEFAULT_CACHE_BYTES
    return TritonServer(repo, host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                        binary=tritonserver, cache_size_bytes=cache_size_bytes, model_control=model_control)  # type: ignore[arg-type]


def make_torchserve(output: str | Path, *, host: str = "127.0.0.1", http_port: int | None = None,
                    grpc_port: int | None = None, metrics_port: int | None = None, **_ignored: object) -> "TorchServeServer":  # noqa: F821
    """A TorchServeServer for a `build --target torchserve` output: inference on `http_port`, management
    on the next port, metrics on `metrics_port`; token auth stays on (keys in the server's key_file.json)."""
    from repoforge.servers.ports import free_ports
    from repoforge.servers.torchserve import TorchServeServer

    if host != "127.0.0.1":
        raise ServeError("TorchServe is served on 127.0.0.1 only by repoforge; put a proxy in front to expose it")
    inference = http_port or 8080
    grpc = grpc_port or 7070
    ports = [inference, inference + 1, metrics_port or 8082, grpc, grpc + 1]
    if http_port == 0:
        ports = free_ports(5)
    return TorchServeServer(output, workflows="all", ports=ports)


def is_torchserve_output(path: str | Path) -> bool:
    from repoforge.torchserve.builder import looks_like_torchserve_output

    return looks_like_torchserve_output(Path(path))


def serve(repository: str | Path, *, on_ready: Callable[[Endpoints], None] | None = None,
          stop_event: threading.Event | None = None, **server_options: object) -> None:
    """Start Triton (or TorchServe, for a TorchServe build), report its endpoints, block until
    Ctrl-C/SIGTERM (or `stop_event`), then stop it."""
    if is_torchserve_output(repository):
        ts = make_torchserve(repository, **server_options)  # type: ignore[arg-type]
        _run_until_stopped(ts, "TorchServe", lambda: Endpoints(
            ts.inference_url.removeprefix("http://"), f"management {ts.management_url}", ts.metrics_url,
            ts.list_models(), note=f"token auth on: keys in {ts.workdir / 'key_file.json'}"), on_ready, stop_event)
        return
    triton = make_server(repository, **server_options)  # type: ignore[arg-type]
    _run_until_stopped(triton, "tritonserver", lambda: Endpoints(
        triton.http_url, triton.grpc_url, triton.metrics_url,
        sorted({s["name"] for s in triton.model_states() if s["state"] == "READY"})), on_ready, stop_event)


def _run_until_stopped(server: Any, what: str, endpoints: Callable[[], Endpoints],
                       on_ready: Callable[[Endpoints], None] | None, stop_event: threading.Event | None) -> None:
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
