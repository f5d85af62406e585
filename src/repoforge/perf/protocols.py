"""`repoforge perf -m MODEL --protocol sse|ws|async|all`: one report comparing REST, gRPC, SSE, WebSocket and the
asynchronous queue on the same model, at the same concurrency levels, measured by one asyncio client.

Why not perf_analyzer: it speaks Triton's HTTP and gRPC only; SSE, WebSocket and the queue exist only behind the
gateway. Why one client for all five: numbers from two clients (perf_analyzer's C++ and Python's asyncio) would
compare the clients as much as the protocols. What is measured per request:
- time to first response: the first event of a stream, the whole answer of a unary call, the 202 of `async`;
- per-event latency: the gaps between one stream's events (a decoupled model answers with many);
- end-to-end latency: from sending to the last event (for `async`: to the result's callback);
- throughput: answered requests per second of a closed loop of N clients.

REST and gRPC go straight to Triton; SSE, WebSocket and `async` go through a `repoforge gateway` started for the
run in front of the same Triton (with in-process queue workers and, without `--redis`, a redis-server started for
the run), so their difference from gRPC is what the gateway hop costs. The report is a PerfReport (report.json,
report.md, plots) with one point per protocol and concurrency; the protocols are measured in a rotated order per
level so that a host getting busier does not favour one of them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis
from tritonclient.grpc import InferInput
from tritonclient.utils import triton_to_np_dtype
from websockets.asyncio.client import connect

from repoforge import lazy
from repoforge.errors import ArgumentError, Interrupted
from repoforge.perf.analyzer import PerfError, PerfPoint, parse_concurrency
from repoforge.perf.command import _target, check_arguments
from repoforge.perf.mix import _check_output, start_gateway
from repoforge.perf.report import PerfReport, host_load, machine_info, write_report
from repoforge.servers.redis import RedisNotFoundError, RedisServer, find_redis_server
from repoforge.targets import target_of
from repoforge.triton.inputs import make_inputs, triton_dtype
from repoforge.triton.reader import read_repository

Progress = Callable[[str], None]
PROTOCOLS = ("http", "grpc", "sse", "ws", "async")
#: the protocols only the gateway speaks (their measurement starts one)
THROUGH_GATEWAY = ("sse", "ws", "async")
DEFAULT_CONCURRENCY = "1,16"
DEFAULT_DURATION_S = 10.0


class ProtocolArgumentError(ArgumentError, PerfError):
    """A wrong `perf --protocol sse|ws|async|all` argument, found before any server starts."""


def protocols_of(protocol: str) -> list[str]:
    """`all` is every protocol, in the report's order; anything else is itself."""
    if protocol == "all":
        return list(PROTOCOLS)
    if protocol not in PROTOCOLS:
        raise ProtocolArgumentError(
            "--protocol", f"--protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}, all"
        )
    return [protocol]


def _request_body(request: Path) -> dict[str, Any]:
    try:
        body = json.loads(request.read_text())
    except (OSError, ValueError) as exc:
        raise ProtocolArgumentError("--request", f"--request {request}: not a JSON file ({exc})") from None
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise ProtocolArgumentError("--request", f"--request {request}: expected a KServe v2 body "
                                    '{"inputs": [{"name", "datatype", "shape", "data"}, ...]}')  # fmt: skip
    for item in body["inputs"]:
        if not isinstance(item, dict) or not {"name", "datatype", "shape", "data"} <= item.keys():
            raise ProtocolArgumentError("--request", f"--request {request}: each input needs name, datatype, shape "
                                        "and data")  # fmt: skip
    return body


def _body_from_config(config: Any) -> dict[str, Any]:
    """Random data for the model's required inputs, as a KServe v2 body (what perf_analyzer would send)."""
    dtypes = {t.name: triton_dtype(t.data_type) for t in config.input}
    inputs = [{"name": k, "datatype": dtypes[k], "shape": list(v.shape),
               "data": [x.decode() if isinstance(x, bytes) else x for x in v.reshape(-1).tolist()]}
              for k, v in make_inputs(config).items()]  # fmt: skip
    return {"inputs": inputs}


def _decoupled(config: Any) -> bool:
    return bool(config is not None and config.model_transaction_policy.decoupled)


def _unsupported(protocols: list[str], decoupled: bool) -> dict[str, str]:
    """The protocols a model cannot be measured with, and why."""
    if not decoupled:
        return {}
    why = {"http": "Triton's HTTP /infer does not serve decoupled models (it answers with a stream)",
           "async": "an asynchronous request needs one answer; a decoupled model streams"}  # fmt: skip
    return {p: why[p] for p in protocols if p in why}


def check_protocol_arguments(
    target: str | Path,
    model: str,
    protocol: str,
    *,
    concurrency: str | list[int],
    duration_s: float,
    redis_url: str | None,
    request: Path | None,
    refused: dict[str, object] | None = None,
) -> tuple[list[str], list[int], dict[str, Any] | None]:
    """Everything that can be wrong before a server starts, as a usage error naming the flag: the protocols, the
    concurrency, the duration, flags that only mean something to perf_analyzer, `--redis` without `async`, a build
    folder the gateway cannot front, and (for a build, whose configs can be read now) a decoupled model asked for
    `--protocol http` or `async` alone. Returns the protocols, the concurrency levels and the request body."""
    protocols = protocols_of(protocol)
    for flag, value in (refused or {}).items():
        if value not in (None, False, (), [], {}):
            raise ProtocolArgumentError(flag, f"{flag} belongs to perf_analyzer (--protocol http|grpc|both); "
                                        f"--protocol {protocol} is measured by repoforge's own client")  # fmt: skip
    check_arguments(target)
    try:
        levels = [int(c) for c in parse_concurrency(concurrency)]
    except PerfError as exc:
        raise ProtocolArgumentError("--concurrency", str(exc)) from None
    if duration_s <= 0:
        raise ProtocolArgumentError("--duration", f"--duration must be > 0 seconds, not {duration_s:g}")
    if redis_url is not None:
        if "async" not in protocols:
            raise ProtocolArgumentError("--redis", f"--redis is the queue of --protocol async (or all), not of "
                                        f"--protocol {protocol}")  # fmt: skip
        if not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ProtocolArgumentError(
                "--redis", f"--redis {redis_url!r}: expected a URL like redis://127.0.0.1:6379/0"
            )
    elif "async" in protocols:
        try:
            find_redis_server()
        except RedisNotFoundError as exc:
            raise ProtocolArgumentError("--redis", f"--protocol {protocol} measures the async queue, which needs "
                                        f"Redis: give --redis URL, or install redis-server ({exc})") from None  # fmt: skip
    body = _request_body(request) if request is not None else None
    path = Path(target)
    if path.is_dir():
        kind = target_of(path)
        why = kind.cannot("gateway", path) if any(p in THROUGH_GATEWAY for p in protocols) else None
        if why:
            raise ProtocolArgumentError("--protocol", f"--protocol {protocol} goes through the gateway: {why}")

        configs = {m.name: m.config for m in read_repository(path)}
        if model not in configs:
            raise ProtocolArgumentError("--model", f"model '{model}' is not in {path}; it has "
                                        f"{', '.join(sorted(configs))}")  # fmt: skip
        bad = _unsupported(protocols, _decoupled(configs[model]))
        if bad and len(bad) == len(protocols):
            p = protocols[0]
            raise ProtocolArgumentError("--protocol", f"--protocol {p}: model '{model}' is decoupled: {bad[p]}")
    return protocols, levels, body


# -- the servers: Triton (served or found), a gateway in front of it, Redis for the queue ------------------------------
@dataclass
class Endpoints:
    http: str  # Triton's HTTP host:port
    grpc: str  # Triton's gRPC host:port
    gateway: str | None  # the gateway's base URL (http://...), None when no protocol needs it
    config: Any
    redis_url: str | None = None
    queue: str | None = None


@contextlib.contextmanager
def _redis(redis_url: str | None, say: Progress) -> Iterator[str]:
    if redis_url is not None:
        yield redis_url
        return

    with RedisServer() as server:
        say(f"redis-server for the queue at {server.url}")
        yield server.url


@contextlib.contextmanager
def _endpoints(target: str | Path, model: str, protocols: list[str], redis_url: str | None, grpc_url: str | None,
               workers: int, timeout_s: float, say: Progress) -> Iterator[Endpoints]:  # fmt: skip

    with contextlib.ExitStack() as stack:
        ep = stack.enter_context(_target(target, [model], grpc_url, say))
        if ep.http_only:
            raise PerfError(f"--protocol {'/'.join(protocols)} needs Triton's gRPC endpoint: {ep.http_only}")
        config = ep.configs[model]
        gateway = queue = url = None
        if any(p in THROUGH_GATEWAY for p in protocols):
            args = ["--timeout", f"{timeout_s:g}"]
            if "async" in protocols:
                url = stack.enter_context(_redis(redis_url, say))
                queue = f"repoforge-perf:{uuid.uuid4().hex[:8]}"
                args += ["--redis", url, "--queue", queue, "--workers", str(workers),
                         "--request-timeout", f"{timeout_s:g}"]  # fmt: skip
            gateway = stack.enter_context(start_gateway(ep.grpc, say, args))
        try:
            yield Endpoints(ep.http, ep.grpc, gateway, config, url, queue)
        finally:
            if url is not None and queue is not None and redis_url is not None:
                _drop_queue(url, queue)  # the user's Redis keeps nothing of the run


def _drop_queue(url: str, queue: str) -> None:
    with contextlib.suppress(redis.RedisError):
        client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        try:
            keys = list(client.scan_iter(match=f"{queue}:*", count=1000))
            for i in range(0, len(keys), 500):
                client.delete(*keys[i : i + 500])
        finally:
            client.close()


# -- one request per protocol ---------------------------------------------------------------------------------------
@dataclass
class Record:
    """One request as the client saw it: seconds since it was sent."""

    ok: bool
    first_s: float | None = None
    events: list[float] = field(default_factory=list)  # arrival of each event (streams)
    total_s: float = 0.0
    error: str = ""


class _Callbacks:
    """A minimal HTTP server for the queue's result callbacks: the answer's arrival is the end of an async request
    (polling GET /v2/async/{id} would add its own interval and load)."""

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.server: asyncio.base_events.Server | None = None
        self.url = ""
        self.connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/done"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for task in list(self.connections):  # the workers keep their connections open: closed from here
                task.cancel()
            await asyncio.gather(*self.connections, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                body = await reader.readexactly(length) if length else b""
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
                with contextlib.suppress(ValueError, AttributeError):
                    answer = json.loads(body)
                    future = self.waiting.pop(str(answer.get("id")), None)
                    if future is not None and not future.done():
                        future.set_result(answer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        except asyncio.CancelledError:
            pass  # closed by close(): the run is over
        finally:
            self.connections.discard(task)
            writer.close()


def _grpc_inputs(body: dict[str, Any]) -> list[Any]:
    out = []
    for item in body["inputs"]:
        if item["datatype"] == "BYTES":
            array = np.array([v.encode() if isinstance(v, str) else v for v in item["data"]], dtype=np.object_)
        else:
            array = np.asarray(item["data"], dtype=triton_to_np_dtype(item["datatype"]))
        x = InferInput(item["name"], list(item["shape"]), item["datatype"])
        x.set_data_from_numpy(array.reshape(item["shape"]))
        out.append(x)
    return out


class Clients:
    """The clients of a run, created inside its event loop; `one(protocol)` sends one request and times it."""

    def __init__(self, ep: Endpoints, model: str, body: dict[str, Any], timeout_s: float) -> None:
        self.ep, self.model, self.body, self.timeout_s = ep, model, body, timeout_s
        self.decoupled = _decoupled(ep.config)
        self.payload = json.dumps(body).encode()
        self.sockets: asyncio.Queue[Any] = asyncio.Queue()
        self.callbacks = _Callbacks()

    async def __aenter__(self) -> Clients:
        aiohttp = lazy.aiohttp()

        # aiohttp (tritonclient[http]'s own), not httpx: httpx's pool managed a fraction of aiohttp's rate at c=16
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                                          connector=aiohttp.TCPConnector(limit=0))  # fmt: skip
        self.grpc = lazy.triton_grpc_aio().InferenceServerClient(self.ep.grpc)
        self.inputs = _grpc_inputs(self.body)
        if self.ep.queue is not None:
            await self.callbacks.start()
            self.async_payload = json.dumps({**self.body, "callback": self.callbacks.url}).encode()
        return self

    async def __aexit__(self, *exc: object) -> None:
        while not self.sockets.empty():
            with contextlib.suppress(Exception):
                await self.sockets.get_nowait().close()
        await self.http.close()
        await self.grpc.close()
        await self.callbacks.close()

    def one(self, protocol: str) -> Callable[[], Awaitable[Record]]:
        return {"http": self._http, "grpc": self._grpc, "sse": self._sse, "ws": self._ws, "async": self._async}[
            protocol
        ]

    async def _http(self) -> Record:
        t0 = time.perf_counter()
        url = f"http://{self.ep.http}/v2/models/{self.model}/infer"
        async with self.http.post(url, data=self.payload, headers={"content-type": "application/json"}) as r:
            text = await r.read()
        t = time.perf_counter() - t0
        if r.status != 200:
            return Record(False, total_s=t, error=f"HTTP {r.status}: {text[:200]!r}")
        return Record(True, t, [t], t)

    async def _grpc(self) -> Record:
        t0 = time.perf_counter()
        if not self.decoupled:
            await self.grpc.infer(self.model, self.inputs, client_timeout=self.timeout_s)
            t = time.perf_counter() - t0
            return Record(True, t, [t], t)

        async def request() -> Any:
            yield {"model_name": self.model, "inputs": self.inputs,
                   "parameters": {"triton_enable_empty_final_response": True}}  # fmt: skip

        events: list[float] = []
        responses = self.grpc.stream_infer(request())
        try:
            async for result, error in responses:
                if error is not None:
                    return Record(False, total_s=time.perf_counter() - t0, error=str(error))
                response = result.get_response()
                if response.outputs:
                    events.append(time.perf_counter() - t0)
                if response.parameters["triton_final_response"].bool_param:
                    break
        finally:
            responses.cancel()
        return Record(True, events[0] if events else None, events, time.perf_counter() - t0)

    async def _sse(self) -> Record:
        assert self.ep.gateway is not None
        t0 = time.perf_counter()
        events: list[float] = []
        url = f"{self.ep.gateway}/v2/models/{self.model}/generate_stream"
        async with self.http.post(url, data=self.payload, headers={"content-type": "application/json"}) as r:
            if r.status != 200:
                return Record(False, total_s=time.perf_counter() - t0, error=f"HTTP {r.status}: {await r.text()}")
            async for line in r.content:
                if line.startswith(b"data:"):
                    now = time.perf_counter() - t0
                    if b'"error"' in line and "error" in json.loads(line[5:]):
                        return Record(False, total_s=now, error=line[5:].decode().strip())
                    events.append(now)
        return Record(True, events[0] if events else None, events, time.perf_counter() - t0)

    async def _ws(self) -> Record:
        """One request on one of the clients' connections (each client keeps one open, as a browser would)."""
        assert self.ep.gateway is not None
        ws = self.sockets.get_nowait() if not self.sockets.empty() else None
        if ws is None:
            url = f"{self.ep.gateway.replace('http://', 'ws://')}/v2/models/{self.model}/stream"
            ws = await connect(url, open_timeout=self.timeout_s, max_size=None)
        t0 = time.perf_counter()
        events: list[float] = []
        try:
            await ws.send(self.payload.decode())
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), self.timeout_s))
                now = time.perf_counter() - t0
                if "error" in message:
                    await ws.close()
                    return Record(False, total_s=now, error=str(message["error"]))
                if message.get("done"):
                    break
                events.append(now)
        except Exception:
            with contextlib.suppress(Exception):
                await ws.close()
            raise
        self.sockets.put_nowait(ws)
        return Record(True, events[0] if events else None, events, time.perf_counter() - t0)

    async def _async(self) -> Record:
        assert self.ep.gateway is not None
        t0 = time.perf_counter()
        url = f"{self.ep.gateway}/v2/models/{self.model}/async"
        async with self.http.post(url, data=self.async_payload, headers={"content-type": "application/json"}) as r:
            reply = await r.json(content_type=None)
        accepted = time.perf_counter() - t0
        if r.status != 202:
            return Record(False, total_s=accepted, error=f"HTTP {r.status}: {reply}")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.callbacks.waiting[reply["id"]] = future
        try:
            answer = await asyncio.wait_for(future, self.timeout_s * 3)
        finally:
            self.callbacks.waiting.pop(reply["id"], None)
        t = time.perf_counter() - t0
        if answer.get("status") != "done":
            return Record(False, total_s=t, error=str(answer.get("reason")))
        return Record(True, accepted, [t], t)


# -- a point: N closed-loop clients for a while -----------------------------------------------------------------------
def _ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(values) * 1000, q)), 3) if values else None


async def _loop(one: Callable[[], Awaitable[Record]], clients: int, seconds: float, timeout_s: float) -> tuple[list[Record], float]:  # fmt: skip
    records: list[Record] = []
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                records.append(await asyncio.wait_for(one(), timeout_s * 4))
            except Exception as exc:  # noqa: BLE001 - a failed request is counted and sampled, the run goes on
                records.append(
                    Record(False, total_s=time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}")
                )

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return records, time.perf_counter() - started


def point_of(protocol: str, clients: int, records: list[Record], elapsed: float) -> PerfPoint:
    ok = [r for r in records if r.ok]
    totals = [r.total_s for r in ok]
    firsts = [r.first_s for r in ok if r.first_s is not None]
    gaps = [b - a for r in ok for a, b in zip(r.events, r.events[1:], strict=False)]
    return PerfPoint(
        concurrency=clients, throughput=round(len(ok) / elapsed, 2) if elapsed > 0 else 0.0,
        p50_ms=_ms(totals, 50) or 0.0, p90_ms=_ms(totals, 90) or 0.0, p95_ms=_ms(totals, 95) or 0.0,
        p99_ms=_ms(totals, 99) or 0.0, protocol=protocol,
        first_response_p50_ms=_ms(firsts, 50), first_response_p99_ms=_ms(firsts, 99),
        event_gap_p50_ms=_ms(gaps, 50), event_gap_p99_ms=_ms(gaps, 99),
        events_per_request=round(sum(len(r.events) for r in ok) / len(ok), 2) if ok else None,
        requests=len(records), errors=len(records) - len(ok),
    )  # fmt: skip


async def _measure(ep: Endpoints, model: str, body: dict[str, Any], protocols: list[str], levels: list[int],
                   duration_s: float, warmup_s: float, timeout_s: float, say: Progress,
                   points: list[PerfPoint], samples: dict[str, list[str]]) -> None:  # fmt: skip
    async with Clients(ep, model, body, timeout_s) as c:
        for i, clients in enumerate(levels):
            order = protocols[i % len(protocols) :] + protocols[: i % len(protocols)]  # rotated per level
            for protocol in order:
                say(f"{protocol}: {clients} client(s) for {duration_s:g} s")
                await _loop(c.one(protocol), clients, warmup_s, timeout_s)  # connections opened, caches warm
                records, elapsed = await _loop(c.one(protocol), clients, duration_s, timeout_s)
                point = point_of(protocol, clients, records, elapsed)
                samples.setdefault(protocol, []).extend(r.error for r in records if not r.ok)
                del samples[protocol][5:]
                points.append(point)
                say(f"  {point.throughput:,.1f} req/s, first response p50 {point.first_response_p50_ms} ms, "
                    f"p50 {point.p50_ms} ms, {point.errors} error(s)")  # fmt: skip


def perf_protocols(
    target: str | Path,
    model: str,
    protocol: str = "all",
    *,
    concurrency: str | list[int] = DEFAULT_CONCURRENCY,
    duration_s: float = DEFAULT_DURATION_S,
    request: Path | None = None,
    redis_url: str | None = None,
    grpc_url: str | None = None,
    timeout_s: float = 60.0,
    output: str | Path = "perf-report",
    plots: bool = True,
    progress: Progress | None = None,
    refused: dict[str, object] | None = None,
) -> PerfReport:
    """Measure `model` over `protocol` (or `all` five) and write report.json/report.md/plots into `output`.

    TARGET is a build folder (Triton served for the run) or a running Triton's HTTP host:port (its gRPC port read
    from the server). Protocols a decoupled model cannot be asked over (HTTP /infer, async) are left out of `all`
    with a note; asked for alone they are a usage error."""
    say = progress or (lambda _m: None)
    protocols, levels, body = check_protocol_arguments(target, model, protocol, concurrency=concurrency,
                                                       duration_s=duration_s, redis_url=redis_url, request=request,
                                                       refused=refused)  # fmt: skip

    _check_output(Path(output))
    workers = max(levels)  # in-process worker slots: the queue is not what limits a closed loop of N clients
    points: list[PerfPoint] = []
    samples: dict[str, list[str]] = {}
    notes: list[str] = []
    interrupted = False
    with _endpoints(target, model, protocols, redis_url, grpc_url, workers, timeout_s, say) as ep:
        skipped = _unsupported(protocols, _decoupled(ep.config))
        if skipped and len(skipped) == len(protocols):
            raise PerfError(f"model '{model}' is decoupled: {next(iter(skipped.values()))}")
        for p, why in skipped.items():
            notes.append(f"{p} not measured: {why}.")
        measured = [p for p in protocols if p not in skipped]
        body = body if body is not None else _body_from_config(ep.config)
        start = host_load()
        try:
            asyncio.run(_measure(ep, model, body, measured, levels, duration_s, min(1.0, duration_s / 5), timeout_s,
                                 say, points, samples))  # fmt: skip
        except KeyboardInterrupt:
            interrupted = True
        if not points:
            raise (
                Interrupted(f"no point was measured; nothing was written to {output}")
                if interrupted
                else PerfError("nothing was measured")
            )
        machine = machine_info(ep.http, "http")
    machine.host_start = start
    urls = {p: (f"http://{ep.http}" if p == "http" else ep.grpc if p == "grpc" else str(ep.gateway)) for p in measured}
    for p, errors in samples.items():
        if errors:
            notes.append(f"{p}: failed requests, e.g. {'; '.join(errors[:3])}")
    settings = {
        "mode": "protocols", "service_kind": "triton", "batch_size": 1, "concurrency": levels,
        "duration_s": duration_s, "warmup_s": min(1.0, duration_s / 5), "timeout_s": timeout_s,
        "input_data": str(request) if request is not None else "random (the model's required inputs)",
        "decoupled": _decoupled(ep.config), "async_workers": workers if "async" in measured else None,
        "redis": ("given" if redis_url else "started for the run") if "async" in measured else None,
    }  # fmt: skip
    report = PerfReport(model=model, urls=urls, points=points, machine=machine, settings=settings, notes=notes)
    write_report(report, output, plots=plots, extra_files={"request.json": json.dumps(body, indent=2) + "\n"})
    if interrupted:
        raise Interrupted(f"the {len(points)} point(s) measured so far are in {Path(output) / 'report.json'}")
    return report
