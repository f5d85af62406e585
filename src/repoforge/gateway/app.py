"""The ASGI app: `/infer` (KServe v2 JSON, with a timeout), `generate_stream` (SSE), `stream` (WebSocket),
`async` + `/v2/async/{id}` (the Redis queue), health and `/metrics`.

Every request is checked against the model's metadata before anything is sent to Triton or enqueued. Streams
read the next response from Triton only when the client has taken the previous one; a client that goes away
cancels the gRPC stream, and with it the request inside Triton.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from repoforge.contract import MODEL_LOAD_HEADER
from repoforge.gateway import codec, upstream
from repoforge.gateway.catalog import Catalog
from repoforge.gateway.errors import RequestError
from repoforge.gateway.metrics import GatewayMetrics
from repoforge.gateway.multiplex import Multiplexer, MultiplexSettings
from repoforge.gateway.queue import AsyncQueue, QueueSettings, Worker, connect
from repoforge.gateway.tenants import Tenant, TenantGate, priority_of

log = logging.getLogger("repoforge.gateway")


@dataclass
class GatewaySettings:
    triton_grpc: str  # host:port
    timeout_s: float = 60.0  # /infer
    max_body_bytes: int = 16 * 1024 * 1024
    queue: QueueSettings | None = None  # None: no --redis, async routes answer 503
    workers: int = 0  # in-process worker concurrency (0: none)
    multiplex: MultiplexSettings | None = None  # `serving:`: load on demand, LRU unload (Triton in explicit mode)
    tenants: list[Tenant] = field(default_factory=list)  # `serving.tenants`, keys read: 401/429 before any route


class State:
    """What the routes share, created inside the server's event loop (gRPC aio and redis.asyncio need it)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.triton: Any = None
        self.catalog: Catalog | None = None
        self.queue: AsyncQueue | None = None
        self.metrics = GatewayMetrics()
        self._stop = asyncio.Event()
        self._worker_task: asyncio.Task[None] | None = None
        self._promoter: asyncio.Task[None] | None = None
        self.mux: Multiplexer | None = None

    async def start(self) -> None:
        self.triton = upstream.connect(self.settings.triton_grpc)
        self.catalog = Catalog(self.triton, ready_only=self.settings.multiplex is None)
        if self.settings.multiplex is not None:
            self.mux = Multiplexer(self.triton, self.settings.multiplex, self.metrics.registry, self.catalog.names)
            await self.mux.start()
        if self.settings.queue is not None:
            redis = connect(self.settings.queue.redis_url)
            self.queue = AsyncQueue(self.settings.queue, redis)
            await self.queue.ensure_group()
            self.metrics.attach_queue(self.queue)
            self._promoter = asyncio.create_task(self.queue.promote_due(self._stop))
            if self.settings.workers > 0:
                worker = Worker(self.settings.queue, redis, self.triton, self.settings.workers)
                self._worker_task = asyncio.create_task(worker.run(self._stop))

    async def stop(self) -> None:
        self._stop.set()
        if self._promoter is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._promoter, 5)
        if self._worker_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self._worker_task, (self.settings.queue.timeout_s if self.settings.queue else 0) + 10
                )
        if self.queue is not None:
            await self.queue.redis.aclose()
        if self.triton is not None:
            await self.triton.close()


def _error(exc: RequestError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


async def _body(request: Request, limit: int) -> Any:
    """The JSON body, read at most `limit` bytes far: 413 past it, 400 when it is not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"body of {int(declared)} bytes is over the gateway's limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"body is over the gateway's limit of {limit} bytes")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks) or b"null")
    except ValueError as exc:
        raise RequestError(400, f"body is not JSON: {exc}") from None


def _state(conn: Request | WebSocket) -> State:
    state: State = conn.app.state.gateway
    return state


def _catalog(state: State) -> Catalog:
    assert state.catalog is not None
    return state.catalog


def _holding(state: State, name: str) -> contextlib.AbstractAsyncContextManager[str | None]:
    """Behind the multiplexer: the model is loaded (on demand) and stays loaded while the block runs; the block gets
    how (`hit`, `load`, `join`), None without the multiplexer."""
    return state.mux.hold(name) if state.mux is not None else contextlib.nullcontext()


async def infer(request: Request) -> Response:
    state = _state(request)
    settings = state.settings
    route, started, how = "infer", time.perf_counter(), None
    try:
        async with _holding(state, request.path_params["model"]) as how:
            model = await _catalog(state).get(request.path_params["model"])
            if model.decoupled:
                raise RequestError(400, f"model '{model.name}' is decoupled (it answers with a stream): use "
                                        f"/v2/models/{model.name}/generate_stream or the WebSocket /stream")  # fmt: skip
            req = codec.parse_v2(model, await _body(request, settings.max_body_bytes))
            req.priority = priority_of(request.scope)
            result = await upstream.infer(state.triton, req, settings.timeout_s)
        response: Response = JSONResponse(codec.response_v2(model, result, req.id))
        if how is not None:
            response.headers[MODEL_LOAD_HEADER] = how
    except RequestError as exc:
        response = _error(exc)
    except upstream.UpstreamTimeout as exc:
        response = JSONResponse({"error": str(exc)}, status_code=504)
    except upstream.UpstreamError as exc:
        response = JSONResponse({"error": str(exc)}, status_code=500)
    state.metrics.observe(route, response.status_code, time.perf_counter() - started)
    return response


async def generate_stream(request: Request) -> Response:
    state = _state(request)
    settings = state.settings

    try:
        async with _holding(state, request.path_params["model"]):  # metadata needs the model loaded
            model = await _catalog(state).get(request.path_params["model"])
        req = codec.parse_generate(model, await _body(request, settings.max_body_bytes))
        req.priority = priority_of(request.scope)
    except RequestError as exc:
        state.metrics.observe("generate_stream", exc.status, 0.0)
        return _error(exc)
    state.metrics.observe("generate_stream", 200, 0.0)

    async def events() -> AsyncGenerator[dict[str, str], None]:
        sent = 0
        try:
            async with _holding(state, model.name):  # the whole stream holds the model
                async for result in upstream.stream(state.triton, req, model.decoupled):
                    sent += 1
                    state.metrics.events.labels("sse").inc()
                    yield {"data": json.dumps(codec.event_generate(model, result, req.id))}
        except RequestError as exc:  # its model did not load
            yield {"data": json.dumps({"error": str(exc), "responses": sent})}
        except upstream.UpstreamError as exc:
            state.metrics.stream_errors.labels("sse").inc()
            yield {"data": json.dumps({"error": str(exc), "responses": sent})}
        except asyncio.CancelledError:
            state.metrics.cancelled.labels("sse").inc()
            log.info("SSE client of %s left after %d events; request cancelled in Triton", model.name, sent)
            raise

    # Triton starts on the request now, before the response starts (sse-starlette's task group, the headers), so
    # its first event no longer waits behind them. send_timeout: a reader that takes nothing for that long is
    # dropped (and its request cancelled).
    stream = events()
    first = asyncio.ensure_future(anext(stream, None))
    await asyncio.sleep(0)  # one turn of the loop: the task sends the request to Triton
    return EventSourceResponse(_started(first, stream), ping=15, send_timeout=60,
                               background=BackgroundTask(_close, first, stream))  # fmt: skip


async def _started(
    first: asyncio.Future[dict[str, str] | None], stream: AsyncGenerator[dict[str, str], None]
) -> AsyncIterator[dict[str, str]]:
    """`stream`'s events, the first one already asked for by `first` (a task started with the response, not when
    the response first iterates: an async generator's body runs only then). Cancelling the iteration (the client
    left) cancels that task and with it the stream's gRPC call, as before."""
    try:
        event = await first
        if event is None:
            return
        yield event
        async for event in stream:
            yield event
    finally:
        await _close(first, stream)


async def _close(first: asyncio.Future[Any], stream: AsyncGenerator[Any, None]) -> None:
    """End the stream and its gRPC call (a no-op once ended): after the iteration, and after the response in case
    the client left before the response iterated at all (`first` still pending, the stream never closed)."""
    if not first.done():
        first.cancel()
        await asyncio.wait([first])
    await stream.aclose()


async def ws_stream(websocket: WebSocket) -> None:
    state = _state(websocket)
    settings = state.settings
    await websocket.accept()
    try:
        async with _holding(state, websocket.path_params["model"]):
            model = await _catalog(state).get(websocket.path_params["model"])
    except RequestError as exc:
        await websocket.send_json({**exc.body(), "status": exc.status})
        await websocket.close(code=1008)
        return
    # A reader task takes the client's messages into a bounded queue (a client that sends faster than its
    # requests are answered waits) and, when the client leaves, cancels the request being answered: its gRPC
    # call is cancelled, and with it the request inside Triton.
    inbox: asyncio.Queue[str | None] = asyncio.Queue(maxsize=8)
    current: list[asyncio.Task[str]] = []

    async def reader() -> None:
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                await inbox.put(message.get("text") or (message.get("bytes") or b"").decode())
        finally:
            for job in current:
                job.cancel()
            with contextlib.suppress(asyncio.QueueFull):
                inbox.put_nowait(None)

    reading = asyncio.create_task(reader())
    try:
        while (text := await inbox.get()) is not None:
            try:
                req = _ws_request(model, text, settings.max_body_bytes)
                req.priority = priority_of(websocket.scope)
            except RequestError as exc:  # the connection stays usable: the next message may be right
                state.metrics.observe("stream", exc.status, 0.0)
                await websocket.send_json({**exc.body(), "status": exc.status})
                continue
            state.metrics.observe("stream", 200, 0.0)
            job = asyncio.create_task(_ws_held(websocket, state, model, req))
            current[:] = [job]
            try:
                outcome = await job
            except asyncio.CancelledError:
                if not job.cancelled():
                    raise  # we are cancelled ourselves
                outcome = "gone"
            except RequestError as exc:  # its model did not load
                current.clear()
                await websocket.send_json({**exc.body(), "status": exc.status})
                continue
            current.clear()
            if outcome != "done":
                return
    except WebSocketDisconnect:
        return
    finally:
        reading.cancel()


def _ws_request(model: Any, text: str, limit: int) -> codec.Request:
    if len(text) > limit:
        raise RequestError(413, f"message is over the gateway's limit of {limit} bytes")
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise RequestError(400, f"message is not JSON: {exc}") from None
    return codec.parse_generate(model, body)


async def _ws_one(websocket: WebSocket, state: State, model: Any, req: codec.Request) -> str:
    """Stream one request's responses; "done", "error" (sent, then closed) or "gone" (the client left: the reader
    cancels this task, which cancels the gRPC call)."""
    sent = 0
    try:
        async for result in upstream.stream(state.triton, req, model.decoupled):
            sent += 1
            state.metrics.events.labels("ws").inc()
            await websocket.send_json(codec.event_generate(model, result, req.id))
    except upstream.UpstreamError as exc:
        state.metrics.stream_errors.labels("ws").inc()
        await websocket.send_json({"id": req.id, "error": str(exc), "responses": sent})
        await websocket.close(code=1011)
        return "error"
    except asyncio.CancelledError:
        state.metrics.cancelled.labels("ws").inc()
        log.info("WebSocket client of %s left after %d events; request cancelled", model.name, sent)
        raise
    except (WebSocketDisconnect, RuntimeError):  # the client went away while we sent
        return "gone"
    await websocket.send_json({"id": req.id, "done": True, "responses": sent})
    return "done"


async def _ws_held(websocket: WebSocket, state: State, model: Any, req: codec.Request) -> str:
    """One streamed request, holding its model (loaded on demand behind the multiplexer) while it streams."""
    async with _holding(state, model.name):
        return await _ws_one(websocket, state, model, req)


async def submit(request: Request) -> Response:
    state = _state(request)
    settings = state.settings
    try:
        if state.queue is None:
            raise RequestError(503, "this gateway was started without --redis: asynchronous requests are off")
        model = await _catalog(state).get(request.path_params["model"])
        body = await _body(request, settings.max_body_bytes)
        callback = body.pop("callback", None) if isinstance(body, dict) else None
        if callback is not None and not (isinstance(callback, str) and callback.startswith(("http://", "https://"))):
            raise RequestError(400, "callback must be an http:// or https:// URL")
        codec.parse_v2(model, body)  # checked now: a bad request is a 400 and never enqueued
        if model.decoupled:
            raise RequestError(400, f"model '{model.name}' is decoupled: asynchronous requests need one answer")
        job_id = await state.queue.submit(model.name, body, callback)
    except RequestError as exc:
        state.metrics.observe("async", exc.status, 0.0)
        return _error(exc)
    state.metrics.observe("async", 202, 0.0)
    return JSONResponse({"id": job_id, "status": "pending", "result": f"/v2/async/{job_id}"}, status_code=202)


async def read(request: Request) -> Response:
    state = _state(request)
    if state.queue is None:
        return JSONResponse({"error": "this gateway was started without --redis"}, status_code=503)
    found = await state.queue.status(request.path_params["id"])
    if found is None:
        return JSONResponse({"error": f"unknown id '{request.path_params['id']}' (never accepted, or its "
                                      f"result expired)"}, status_code=404)  # fmt: skip
    return JSONResponse(found)


async def models(request: Request) -> Response:
    return JSONResponse({"models": await _catalog(_state(request)).names(refresh=True)})


async def repository_index(request: Request) -> Response:
    """What is loaded: the multiplexer's view (in flight, bytes, idle time), else Triton's own index."""
    state = _state(request)
    if state.mux is None:
        index = await state.triton.get_model_repository_index(as_json=True, client_timeout=10)
        return JSONResponse({"models": index.get("models", [])})
    return JSONResponse(state.mux.index(await _catalog(state).names(refresh=True)))


async def ready(request: Request) -> Response:
    state = _state(request)
    try:
        ok = await state.triton.is_server_ready(client_timeout=5)
    except Exception:  # noqa: BLE001 - unreachable Triton is "not ready"
        ok = False
    return Response(status_code=200 if ok else 503)


async def live(_request: Request) -> Response:
    return Response(status_code=200)


async def metrics(request: Request) -> Response:
    text, content_type = await _state(request).metrics.render()
    return Response(text, media_type=content_type)


def build_app(settings: GatewaySettings) -> Starlette:
    state = State(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    routes = [
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2/models", models),
        Route("/v2/repository/index", repository_index, methods=["GET", "POST"]),
        Route("/v2/models/{model}/infer", infer, methods=["POST"]),
        Route("/v2/models/{model}/generate_stream", generate_stream, methods=["POST"]),
        WebSocketRoute("/v2/models/{model}/stream", ws_stream),
        Route("/v2/models/{model}/async", submit, methods=["POST"]),
        Route("/v2/async/{id}", read),
        Route("/metrics", metrics),
    ]

    middleware = [Middleware(TenantGate, tenants=settings.tenants, registry=state.metrics.registry)]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware if settings.tenants else None)
    app.state.gateway = state
    return app
