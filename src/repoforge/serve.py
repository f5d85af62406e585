"""`repoforge serve`: run a real tritonserver on a repository until interrupted."""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from repoforge.triton.reader import read_repository, uses_response_cache

DEFAULT_CACHE_BYTES = 256 * 1024 * 1024


@dataclass
class Endpoints:
    http: str
    grpc: str
    metrics: str
    models: list[str]

    def lines(self) -> list[str]:
        return [f"HTTP     http://{self.http}   (curl http://{self.http}/v2/health/ready)",
                f"gRPC     {self.grpc}", f"metrics  {self.metrics}",
                f"models   {', '.join(self.models)}"]


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


def serve(repository: str | Path, *, on_ready: Callable[[Endpoints], None] | None = None,
          stop_event: threading.Event | None = None, **server_options: object) -> None:
    """Start Triton, report its endpoints, block until Ctrl-C/SIGTERM (or `stop_event`), then stop it."""
    server = make_server(repository, **server_options)  # type: ignore[arg-type]
    stop = stop_event or threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set()) if threading.current_thread() is threading.main_thread() else None
    try:
        with server:
            models = sorted({s["name"] for s in server.model_states() if s["state"] == "READY"})
            if on_ready:
                on_ready(Endpoints(server.http_url, server.grpc_url, server.metrics_url, models))
            try:
                while not stop.wait(0.5):
                    if not server.alive:
                        raise RuntimeError(f"tritonserver exited unexpectedly:\n{server.log_tail(20)}")
            except KeyboardInterrupt:
                pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
