"""`repoforge gateway` and `repoforge worker` as functions: check the arguments (usage errors, exit 2, before
anything starts), find or start Triton, then run the ASGI app on uvicorn or the queue worker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import uvicorn
from pydantic import ValidationError

from repoforge.gateway import upstream
from repoforge.gateway.app import GatewaySettings, build_app
from repoforge.gateway.errors import GatewayArgumentError
from repoforge.gateway.multiplex import MultiplexSettings
from repoforge.gateway.queue import QueueSettings, Worker, connect
from repoforge.gateway.tenants import tenants_from
from repoforge.output import MANIFEST
from repoforge.servers.discover import tritonserver_pid
from repoforge.spec.gateway import AsyncSpec, GatewaySpec
from repoforge.spec.serving import parse_bytes
from repoforge.targets import target_of
from repoforge.triton.client import TritonClient, grpc_live

Say = Callable[[str], None]
_HOST_PORT = re.compile(r"^(?:[a-z]+://)?(?P<host>[\w.\-]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})/?$")


def recorded_sections(target: str) -> dict[str, Any]:
    """The build's top-level `gateway:` and `async:` sections, from its lock file ({} for a running Triton, or a
    build without them): the defaults of the flags not given."""

    lock = Path(target) / MANIFEST
    if not (Path(target).is_dir() and lock.is_file()):
        return {}
    found = json.loads(lock.read_text()).get("gateway")
    return dict(found) if isinstance(found, dict) else {}


def _gateway_spec(recorded: dict[str, Any]) -> Any:
    try:
        return GatewaySpec.model_validate(recorded.get("gateway") or {})
    except ValidationError as exc:
        raise GatewayArgumentError("TARGET", f"the build's recorded gateway: section is not valid: {exc}") from None


def _async_spec(recorded: dict[str, Any] | None) -> Any:
    try:
        return AsyncSpec.model_validate((recorded or {}).get("async") or {})
    except ValidationError as exc:  # a lock edited by hand, or from another repoforge: name it, exit 2
        raise GatewayArgumentError("TARGET", f"the build's recorded async: section is not valid: {exc}") from None


@dataclass
class QueueOptions:
    """The `--redis` family of options, shared by `gateway` and `worker`. None: not given, so the build's `async:`
    section (see recorded_sections) decides, else AsyncSpec's defaults."""

    redis_url: str | None = None
    queue: str | None = None
    request_timeout_s: float | None = None
    max_deliveries: int | None = None
    visibility_timeout_s: float | None = None  # default: request timeout + 30 s
    result_ttl_s: int | None = None
    allow_eviction: bool = False  # start on a Redis that may evict keys (said, not refused)

    def settings(self, flag: str, recorded: dict[str, Any] | None = None) -> QueueSettings | None:
        """The queue's settings (None without --redis): each option not given taken from the build's `async:`
        (`recorded`, see recorded_sections), else its default."""
        if self.redis_url is None:
            return None
        spec = _async_spec(recorded)
        queue = self.queue if self.queue is not None else str(spec.queue)
        timeout = self.request_timeout_s if self.request_timeout_s is not None else float(spec.request_timeout_s)
        deliveries = self.max_deliveries if self.max_deliveries is not None else int(spec.max_deliveries)
        ttl = self.result_ttl_s if self.result_ttl_s is not None else int(spec.result_ttl_s)
        visibility_given = (
            self.visibility_timeout_s if self.visibility_timeout_s is not None else spec.visibility_timeout_s
        )
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise GatewayArgumentError(
                "--redis", f"--redis {self.redis_url!r}: expected a URL like redis://127.0.0.1:6379/0"
            )
        if timeout <= 0:
            raise GatewayArgumentError(flag, f"{flag} must be > 0 seconds, not {timeout:g}")
        if deliveries < 1:
            raise GatewayArgumentError("--max-deliveries", f"--max-deliveries must be at least 1, not {deliveries}")
        if ttl < 1:
            raise GatewayArgumentError("--result-ttl", f"--result-ttl must be at least 1 second, not {ttl}")
        visibility = float(visibility_given or timeout + 30)
        if visibility <= timeout:
            raise GatewayArgumentError(
                "--visibility-timeout",
                f"--visibility-timeout {visibility:g} s must be longer than {flag} {timeout:g} s: "
                "otherwise a request still running would be taken over by another worker",
            )
        return QueueSettings(redis_url=self.redis_url, prefix=queue, timeout_s=timeout, max_deliveries=deliveries,
                             visibility_timeout_s=visibility, result_ttl_s=ttl)  # fmt: skip


def _check_redis(settings: QueueSettings, allow_eviction: bool = False, say: Say = print) -> None:
    """Redis answers, and keeps what the queue gives it: under any `maxmemory-policy` but `noeviction` a Redis at its
    memory limit deletes keys (queued requests, pending results) without telling anyone, so the queue's promise
    (every accepted id is answered) would not hold. Refused (exit 2) unless `allow_eviction`, then only said."""
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=5, decode_responses=True)
    try:
        client.ping()
        try:
            policy = str(client.config_get("maxmemory-policy").get("maxmemory-policy", ""))
            maxmemory = int(client.config_get("maxmemory").get("maxmemory", 0) or 0)
        except redis.ResponseError as exc:  # CONFIG renamed or denied (managed Redis): cannot tell
            say(f"warning: cannot read the maxmemory-policy of {settings.redis_url} ({exc}); it must be noeviction, "
                "or Redis may drop queued requests when it is full")  # fmt: skip
            return
    except redis.RedisError as exc:
        raise GatewayArgumentError("--redis", f"--redis {settings.redis_url}: no Redis answers there ({exc})") from None
    finally:
        client.close()
    if policy in ("", "noeviction"):
        return
    limit = f"maxmemory {maxmemory} bytes" if maxmemory else "no maxmemory yet (one set later turns eviction on)"
    why = (f"the Redis at {settings.redis_url} has maxmemory-policy {policy} ({limit}): when it is full it deletes "
           "keys, queued requests and results among them, and accepted ids would be lost without an error")  # fmt: skip
    if allow_eviction:
        say(f"warning: {why} (--allow-eviction given)")
        return
    raise GatewayArgumentError("--redis", f"{why}. Set it to noeviction (CONFIG SET maxmemory-policy noeviction, or "
                               "in redis.conf), use another Redis for the queue, or pass --allow-eviction to run "
                               "anyway")  # fmt: skip


def _grpc_live(url: str) -> bool:
    return grpc_live(url, timeout=3)


def _http_live(url: str) -> bool:
    return TritonClient(url).is_live()


def find_grpc(target: str, grpc_url: str | None) -> str:
    """The gRPC `host:port` of a running Triton: `--grpc-url`, else TARGET itself when it speaks gRPC, else the
    port after TARGET's HTTP port (Triton's 8000/8001 layout)."""
    if grpc_url is not None:
        if not _grpc_live(grpc_url):
            raise GatewayArgumentError("--grpc-url", f"--grpc-url {grpc_url}: no Triton gRPC endpoint answers there")
        return grpc_url
    match = _HOST_PORT.match(target)
    assert match is not None
    host, port = match["host"], int(match["port"])
    if _grpc_live(f"{host}:{port}"):
        return f"{host}:{port}"
    if _http_live(f"{host}:{port}") and _grpc_live(f"{host}:{port + 1}"):
        return f"{host}:{port + 1}"
    raise GatewayArgumentError(
        "TARGET",
        f"TARGET {target}: no Triton answers there over gRPC (nor over HTTP with gRPC on port {port + 1}); "
        "give the gRPC endpoint with --grpc-url HOST:PORT",
    )


def check_target(target: str) -> None:
    """TARGET must be a build folder or HOST:PORT (a usage error otherwise, before anything starts)."""
    path = Path(target)
    if path.is_dir():
        return
    if _HOST_PORT.match(target) is None:
        raise GatewayArgumentError(
            "TARGET", f"TARGET {target!r} is neither a build folder nor a running Triton's HOST:PORT"
        )


@contextlib.contextmanager
def triton_for(
    target: str, grpc_url: str | None, say: Say, *, explicit: bool = False, started: Callable[[Any], None] | None = None
) -> Iterator[str]:
    """Triton's gRPC `host:port` while the context is open: a build folder is served for the run (stopped after,
    also on failure; `explicit`: with `--model-control-mode explicit` and nothing loaded, `started` gets the
    server); a running Triton is only found."""
    path = Path(target)
    if not path.is_dir():
        yield find_grpc(target, grpc_url)
        return

    kind = target_of(path)
    why = kind.cannot("gateway", path)
    if why:
        raise GatewayArgumentError("TARGET", why)
    ports = kind.serve_ports(http_port=None, grpc_port=None, metrics_port=None, auto=True)
    say(
        f"starting {kind.server_name} on {path}"
        + (" (explicit model control: models load on demand)" if explicit else "")
    )
    options: dict[str, Any] = {"model_control": "explicit", "load_models": []} if explicit else {}
    with kind.server(path, host="127.0.0.1", ports=ports, **options) as server:
        if started is not None:
            started(server)
        endpoints = kind.endpoints(server)
        say(f"{kind.server_name} ready: {', '.join(endpoints.models) or 'no models'}")
        yield server.grpc_url


def _server_class() -> type:
    class Server(uvicorn.Server):
        """uvicorn's server, minus re-raising the signal inside the event loop after shutting down (which
        interrupts the app's own shutdown with a traceback): the signal is only recorded."""

        signals: list[int]

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            self.signals = []
            originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in originals.items():
                    signal.signal(sig, handler)

        def handle_exit(self, sig: int, frame: Any) -> None:
            self.signals.append(sig)
            super().handle_exit(sig, frame)

    return Server


@dataclass
class ServingOptions:
    """`--max-loaded`, `--memory-budget`, `--always-loaded`, `--server-pid`: the build's `serving:` overridden (or,
    for a running Triton, given)."""

    max_loaded: int | None = None
    memory_budget: str | None = None
    always_loaded: tuple[str, ...] = ()
    server_pid: int | None = None
    load_timeout_s: float = 300.0
    load_concurrency: int | None = None  # None: 1 under a memory budget (every growth measured), else 2
    serving_file: Path | None = None  # a build's `serving:` for a running Triton (deploy k8s mounts it in the pod)

    def given(self) -> bool:
        return bool(self.max_loaded is not None or self.memory_budget is not None or self.always_loaded
                    or self.serving_file is not None)  # fmt: skip


def serving_settings(target: str, options: ServingOptions) -> MultiplexSettings | None:
    """The multiplexer's settings: the build's `serving:` (from its lock file) with the flags on top; None when
    neither asks for it (every model is served as loaded)."""

    serving: dict[str, Any] | None = None
    lock = Path(target) / MANIFEST
    if Path(target).is_dir() and lock.is_file():
        serving = json.loads(lock.read_text()).get("serving")
    elif options.serving_file is not None:  # the lock's `serving` section, or a whole lock file
        try:
            data = json.loads(options.serving_file.read_text())
        except (OSError, ValueError) as exc:
            raise GatewayArgumentError("--serving", f"--serving {options.serving_file}: {exc}") from None
        serving = data.get("serving", data) if isinstance(data, dict) else None
        if not isinstance(serving, dict):
            raise GatewayArgumentError("--serving", f"--serving {options.serving_file}: expected a build's `serving` "
                                       "section as JSON (or its repoforge.lock.json)")  # fmt: skip
    if serving is None and not options.given():
        return None
    settings = MultiplexSettings.from_lock(serving or {})
    if options.max_loaded is not None:
        if options.max_loaded < 1:
            raise GatewayArgumentError("--max-loaded", f"--max-loaded must be at least 1, not {options.max_loaded}")
        settings.max_loaded = options.max_loaded
    if options.memory_budget is not None:
        try:
            settings.memory_budget = parse_bytes(options.memory_budget)
        except ValueError as exc:
            raise GatewayArgumentError("--memory-budget", f"--memory-budget: {exc}") from None
    if options.always_loaded:
        settings.always_loaded = list(options.always_loaded)
    if settings.max_loaded is not None and len(settings.always_loaded) > settings.max_loaded:
        raise GatewayArgumentError("--always-loaded", f"{len(settings.always_loaded)} always-loaded models do not fit under max_loaded "
                                   f"{settings.max_loaded}")  # fmt: skip
    if options.load_timeout_s <= 0:
        raise GatewayArgumentError(
            "--load-timeout", f"--load-timeout must be > 0 seconds, not {options.load_timeout_s:g}"
        )
    settings.load_timeout_s = options.load_timeout_s
    if options.load_concurrency is not None and options.load_concurrency < 1:
        raise GatewayArgumentError(
            "--load-concurrency", f"--load-concurrency must be at least 1, not {options.load_concurrency}"
        )
    settings.load_concurrency = options.load_concurrency or (1 if settings.memory_budget else 2)
    settings.server_pid = options.server_pid
    return settings


def gateway(
    target: str,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    timeout_s: float | None = None,
    grpc_url: str | None = None,
    queue: QueueOptions | None = None,
    workers: int = 0,
    max_body_bytes: int | None = None,
    serving: ServingOptions | None = None,
    say: Say = print,
) -> None:
    """Run the gateway until interrupted. `port`, `timeout_s`, `max_body_bytes` and the queue's options left None
    come from the build's `gateway:`/`async:` sections, else their defaults (8080, 60 s, 16 MiB)."""
    queue = queue or QueueOptions()
    check_target(target)
    recorded = recorded_sections(target)
    spec = _gateway_spec(recorded)
    port = port if port is not None else int(spec.port)
    timeout_s = timeout_s if timeout_s is not None else float(spec.timeout_s)
    max_body_bytes = max_body_bytes if max_body_bytes is not None else int(spec.max_body_bytes)
    if recorded:
        say(f"from the build's {' and '.join(f'{k}:' for k in recorded)} section(s): "
            + ", ".join(f"{k} {v}" for section in recorded.values() for k, v in section.items()))  # fmt: skip
    if "async" in recorded and queue.redis_url is None:
        raise GatewayArgumentError("--redis", "the build has an async: section, and the queue lives in Redis: give "
                                   "--redis URL (or $REPOFORGE_REDIS_URL)")  # fmt: skip
    if not 0 < port < 65536:
        raise GatewayArgumentError("--port", f"--port {port} is not a port number")
    if timeout_s <= 0:
        raise GatewayArgumentError("--timeout", f"--timeout must be > 0 seconds, not {timeout_s:g}")
    if workers < 0:
        raise GatewayArgumentError("--workers", f"--workers must be 0 or more, not {workers}")
    settings = queue.settings("--request-timeout", recorded)
    if workers and settings is None:
        raise GatewayArgumentError("--workers", "--workers runs queue workers, which need --redis URL")
    if settings is not None:
        _check_redis(settings, queue.allow_eviction, say)
    mux = serving_settings(target, serving or ServingOptions())
    tenants = tenants_from(mux.tenants) if mux is not None else []  # before Triton starts: a missing key is exit 2
    if mux is not None and workers:
        raise GatewayArgumentError("--workers", "--workers answers queued requests straight from Triton, which does not load "
                                   "models on demand: run the gateway without --workers when it multiplexes")  # fmt: skip

    def started(server: Any) -> None:
        assert mux is not None
        if mux.server_pid is None:
            mux.server_pid = server.pid
        say(f"tritonserver pid {server.pid}, log {server.log_path}")

    with triton_for(target, grpc_url, say, explicit=mux is not None, started=started if mux else None) as grpc:
        if mux is not None:
            limits = [f"max_loaded {mux.max_loaded}" if mux.max_loaded else "",
                      f"memory_budget {mux.memory_budget} bytes" if mux.memory_budget else "",
                      f"always_loaded {', '.join(mux.always_loaded)}" if mux.always_loaded else ""]  # fmt: skip
            say("multiplexing: models load on first request; " + ("; ".join(x for x in limits if x) or "no limit"))
            if tenants:
                say(f"tenants: {', '.join(t.name for t in tenants)} (Authorization: Bearer <key>; 401/429 otherwise)")
            if mux.server_pid is None and not Path(target).is_dir():  # a Triton on this host (or in this pod)
                mux.server_pid = tritonserver_pid(grpc)
                if mux.server_pid is not None:
                    say(f"measuring the memory of tritonserver pid {mux.server_pid} (found serving {grpc})")
            if mux.memory_budget and mux.server_pid is None:
                say("note: no --server-pid, so memory is estimated per model, not measured")
        app = build_app(GatewaySettings(triton_grpc=grpc, timeout_s=timeout_s, max_body_bytes=max_body_bytes,
                                        queue=settings, workers=workers, multiplex=mux, tenants=tenants))  # fmt: skip
        async_note = (
            f", async queue {settings.prefix} on {settings.redis_url}" if settings else ", async off (no --redis)"
        )
        worker_note = f", {workers} in-process worker slot(s)" if workers else ""
        say(f"gateway on http://{host}:{port} -> Triton gRPC {grpc}{async_note}{worker_note}")
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", ws="websockets-sansio")
        server = _server_class()(config)
        server.run()
        if signal.SIGINT in server.signals:
            raise KeyboardInterrupt  # after the graceful shutdown: the CLI says what was kept and exits 130


def worker(
    target: str,
    *,
    queue: QueueOptions,
    concurrency: int | None = None,
    grpc_url: str | None = None,
    say: Say = print,
) -> None:
    """Answer queued requests until SIGTERM/SIGINT (in-flight ones finish; a killed worker's are taken over).
    `concurrency` and the queue's options left None come from the build's `async:` section, else their defaults."""
    check_target(target)
    recorded = recorded_sections(target)
    concurrency = concurrency if concurrency is not None else int(_async_spec(recorded).workers.concurrency)
    if concurrency < 1:
        raise GatewayArgumentError("--concurrency", f"--concurrency must be at least 1, not {concurrency}")
    settings = queue.settings("--request-timeout", recorded)
    if settings is None:
        raise GatewayArgumentError("--redis", "worker needs --redis URL (the queue it takes requests from)")
    _check_redis(settings, queue.allow_eviction, say)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    async def main(grpc: str) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        triton = upstream.connect(grpc)
        redis = connect(settings.redis_url)
        try:
            w = Worker(settings, redis, triton, concurrency)
            say(f"worker {w.name}: {settings.prefix} on {settings.redis_url} -> Triton gRPC {grpc}, "
                f"{concurrency} at a time")  # fmt: skip
            await w.run(stop)
        finally:
            await redis.aclose()
            await triton.close()

    with triton_for(target, grpc_url, say) as grpc:
        asyncio.run(main(grpc))
