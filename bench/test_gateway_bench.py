"""Gateway benchmark: what the gateway costs next to talking to Triton directly, and how fast the queue drains.

One tritonserver serves tests/data/gateway's `double` (Python, Y = 2X, 2 instances) and `streamer` (decoupled);
one `repoforge gateway` (with --redis) and two `repoforge worker` processes run beside it. Per round, side by
side with the same asyncio client, alternating which goes first:
- HTTP: gateway `POST /infer` vs Triton's own HTTP `/infer` (same KServe v2 JSON, same httpx client):
  requests/s at concurrency 16, and p50 latency at concurrency 1 (the difference is what the gateway adds);
- streams: gateway WebSocket (one connection per client, a request then its event and done message) vs direct
  gRPC streaming (`tritonclient.grpc.aio`, one long-lived stream per client): requests/s at concurrency 16;
- for each c=16 trial, the CPU per request of the client, the gateway and Triton (from /proc): on 2 shared cores
  that is what bounds the ratios;
- time to first event of a decoupled stream of --stream-count responses: SSE, WebSocket, direct gRPC stream,
  interleaved request by request (--first-n each per round);
- async: 600 requests submitted at concurrency 16, answered by 2 workers (concurrency 8 each): requests/s from
  the first submit to the last answer.
Cells are medians with the range over rounds. The client runs on the same 2 cores as the servers.

    .venv/bin/python bench/test_gateway_bench.py [--rounds 3] [--seconds 4]      # about 3 minutes on 2 cores

Prints the table and rewrites the "gateway" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

import _serving_helpers as h
import aiohttp
import httpx
import numpy as np
import redis
import websockets
from profile_gateway import cpu_s, tree_cpu_s
from test_gateway import make_repo

from repoforge.servers.ports import free_port
from repoforge.servers.process import ManagedProcess
from repoforge.servers.redis import RedisServer
from repoforge.servers.triton import TritonServer

V2 = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 2.0, 3.0, 4.0]}]}


async def _rate(
    one: Callable[[], Awaitable[None]], concurrency: int, seconds: float, cpu: CpuMeter | None = None
) -> float:
    """Requests/s of `concurrency` loops calling `one` for `seconds` (after a short warm-up); `cpu`, when given,
    counts each process's CPU over the measured part."""
    done = 0
    stop_at = 0.0

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await one()
            done += 1

    stop_at = time.perf_counter() + 0.5
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    done = 0
    if cpu is not None:
        cpu.start()
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    if cpu is not None:
        cpu.stop(done)
    return done / (time.perf_counter() - started)


class CpuMeter:
    """CPU µs per request of the client (this process), the gateway and Triton (its Python backend stubs
    included) over one trial: on 2 shared cores throughput is CPU per request, so this says who spends it."""

    def __init__(self, gateway_pid: int, triton_pid: int) -> None:
        self.pids = {"gateway": gateway_pid, "triton": triton_pid}
        self.trials: list[dict[str, float]] = []
        self._t0: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        return {"client": cpu_s(os.getpid()), "gateway": cpu_s(self.pids["gateway"]),
                "triton": tree_cpu_s(self.pids["triton"])}  # fmt: skip

    def start(self) -> None:
        self._t0 = self._now()

    def stop(self, requests: int) -> None:
        t1 = self._now()
        self.trials.append({k: (t1[k] - self._t0[k]) / max(requests, 1) * 1e6 for k in t1})


async def _p50_ms(one: Callable[[], Awaitable[Any]], n: int) -> float:
    for _ in range(20):
        await one()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        await one()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


class Clients:
    """The HTTP, WebSocket and gRPC clients of one round (created inside the event loop)."""

    def __init__(self, gateway: str, triton_http: str, triton_grpc: str) -> None:
        self.gateway, self.triton_http, self.triton_grpc = gateway, triton_http, triton_grpc
        self.stream_errors: list[str] = []

    async def __aenter__(self) -> Clients:
        from tritonclient.grpc.aio import InferenceServerClient

        # aiohttp, not httpx: httpx's pool managed ~35 req/s at c=16 against Triton's HTTP here, aiohttp ~550
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self.grpc = InferenceServerClient(self.triton_grpc)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.close()
        await self.grpc.close()

    async def post(self, url: str) -> None:
        async with self.http.post(url, json=V2) as response:
            assert response.status == 200, await response.text()
            await response.read()

    def gateway_infer(self) -> Awaitable[None]:
        return self.post(f"{self.gateway}/v2/models/double/infer")

    def triton_infer(self) -> Awaitable[None]:
        return self.post(f"http://{self.triton_http}/v2/models/double/infer")

    async def ws_rate(self, concurrency: int, seconds: float, cpu: CpuMeter | None = None) -> float:
        sockets = [await websockets.connect(f"{self.gateway.replace('http', 'ws')}/v2/models/double/stream")
                   for _ in range(concurrency)]  # fmt: skip
        free: asyncio.Queue[Any] = asyncio.Queue()
        for ws in sockets:
            free.put_nowait(ws)
        request = json.dumps({"X": [1.0, 2.0, 3.0, 4.0]})

        async def one() -> None:
            ws = await free.get()
            await ws.send(request)
            event, done = json.loads(await ws.recv()), json.loads(await ws.recv())
            assert "Y" in event and done.get("done"), (event, done)
            free.put_nowait(ws)

        try:
            return await _rate(one, concurrency, seconds, cpu)
        finally:
            for ws in sockets:
                await ws.close()

    async def grpc_stream_rate(self, concurrency: int, seconds: float, cpu: CpuMeter | None = None) -> float:
        """One long-lived gRPC stream per client loop: a request, then its response."""
        from tritonclient.grpc import InferInput

        x = InferInput("X", [1, 4], "FP32")
        x.set_data_from_numpy(np.array([[1, 2, 3, 4]], dtype=np.float32))

        def open_stream() -> tuple[asyncio.Queue[dict[str, Any] | None], Any]:
            requests: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

            async def feed() -> Any:
                while (item := await requests.get()) is not None:
                    yield item

            return requests, self.grpc.stream_infer(feed())

        streams = [open_stream() for _ in range(concurrency)]
        free: asyncio.Queue[Any] = asyncio.Queue()
        for s in streams:
            free.put_nowait(s)

        async def one() -> None:
            import grpc

            requests, responses = await free.get()
            requests.put_nowait({"model_name": "double", "inputs": [x]})
            try:
                result, error = await responses.__anext__()
            except grpc.RpcError as exc:  # a stream the server dropped: counted, and replaced
                self.stream_errors.append(str(exc.code()))
                requests.put_nowait(None)
                free.put_nowait(open_stream())
                return
            assert error is None, error
            free.put_nowait((requests, responses))

        try:
            return await _rate(one, concurrency, seconds, cpu)
        finally:
            while not free.empty():
                requests, responses = free.get_nowait()
                requests.put_nowait(None)
                responses.cancel()

    async def first_events(self, n: int, count: int) -> dict[str, list[float]]:
        """Time from sending a request to its first event (ms) for the decoupled `streamer` streaming `count`
        responses: SSE, WebSocket and direct gRPC, `n` samples each, interleaved (A B C, B C A, C A B, ...) so
        the host's load falls on all three alike. Each sample reads its stream to the end before the next."""
        from tritonclient.grpc import InferInput

        body = {"COUNT": count, "TAG": "bench"}

        async def sse() -> float:
            t0 = time.perf_counter()
            first, events = None, []
            async with self.http.post(f"{self.gateway}/v2/models/streamer/generate_stream", json=body) as r:
                async for line in r.content:
                    if line.startswith(b"data:"):
                        events.append(line)
                        if first is None:
                            first = time.perf_counter() - t0
            assert first is not None and len(events) == count, events
            return first

        ws = await websockets.connect(f"{self.gateway.replace('http', 'ws')}/v2/models/streamer/stream")

        async def wsock() -> float:
            t0 = time.perf_counter()
            await ws.send(json.dumps(body))
            first = None
            while True:
                event = json.loads(await ws.recv())
                if first is None:
                    first = time.perf_counter() - t0
                if event.get("done"):
                    assert event["responses"] == count, event
                    return first

        inp = InferInput("COUNT", [1], "INT32")
        inp.set_data_from_numpy(np.array([count], dtype=np.int32))

        async def grpc() -> float:
            async def one_request() -> Any:
                yield {"model_name": "streamer", "inputs": [inp],
                       "parameters": {"triton_enable_empty_final_response": True}}  # fmt: skip

            t0 = time.perf_counter()
            first = None
            responses = self.grpc.stream_infer(one_request())
            async for result, error in responses:
                assert error is None, error
                if first is None:
                    first = time.perf_counter() - t0
                if result.get_response().parameters["triton_final_response"].bool_param:
                    break
            responses.cancel()
            assert first is not None
            return first

        fns = [("sse", sse), ("ws", wsock), ("grpc", grpc)]
        out: dict[str, list[float]] = {name: [] for name, _ in fns}
        try:
            for _ in range(5):
                for _name, fn in fns:
                    await fn()
            for k in range(n):
                for name, fn in fns[k % 3 :] + fns[: k % 3]:
                    out[name].append(await fn() * 1000)
        finally:
            await ws.close()
        return out


async def _async_rate(gateway: str, r: redis.Redis, queue: str, n: int) -> float:
    done_before = int(r.hget(f"{queue}:stats", "done") or 0)
    limit = asyncio.Semaphore(16)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as client:

        async def one() -> None:
            async with limit, client.post(f"{gateway}/v2/models/double/async", json=V2) as response:
                assert response.status == 202, await response.text()

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        deadline = started + 120
        while int(r.hget(f"{queue}:stats", "done") or 0) - done_before < n:
            assert time.perf_counter() < deadline, "the queue did not drain within 120 s"
            await asyncio.sleep(0.02)
        return n / (time.perf_counter() - started)


def _start(args: list[str], log: Path) -> ManagedProcess:
    proc = ManagedProcess([sys.executable, "-m", "repoforge", *args], log_path=log, name="repoforge " + args[0])
    return proc.start()


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0, help="per throughput trial")
    p.add_argument("--first-n", type=int, default=60, help="first-event samples per protocol and round")
    p.add_argument("--stream-count", type=int, default=5, help="responses per stream in the first-event trial")
    a = p.parse_args(argv)
    load_start = h.load_average()
    queue = f"bench:{uuid.uuid4().hex[:6]}"
    rates: dict[str, list[float]] = {k: [] for k in ("triton_http", "gateway_http", "grpc_stream", "ws")}
    p50: dict[str, list[float]] = {"triton_http": [], "gateway_http": []}
    added: list[float] = []
    first: dict[str, list[float]] = {"sse": [], "ws": [], "grpc": []}  # per round: the p50 of its samples
    first_all: dict[str, list[float]] = {"sse": [], "ws": [], "grpc": []}  # every sample
    cpu: dict[str, list[dict[str, float]]] = {k: [] for k in rates}  # per round: CPU µs per request, by process
    loads: list[float] = []  # 1-min load average after each round
    async_rates: list[float] = []
    dropped: list[str] = []  # direct gRPC streams the server dropped (replaced; the trial goes on)
    with h.workdir("repoforge-gateway-bench-") as work:
        log_file = work / "streamer.log"
        with TritonServer(make_repo(work, log_file)) as triton, RedisServer() as redis_server:
            port = free_port("127.0.0.1")
            gateway = f"http://127.0.0.1:{port}"
            common = ["--redis", redis_server.url, "--queue", queue]
            procs = [_start(["gateway", triton.grpc_url, "--port", str(port), *common], work / "gateway.log")]
            procs += [_start(["worker", triton.grpc_url, "--concurrency", "8", *common], work / f"worker{i}.log")
                      for i in range(2)]  # fmt: skip
            r = redis.Redis.from_url(redis_server.url, decode_responses=True)
            try:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if httpx.get(f"{gateway}/v2/health/ready", timeout=1).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    assert time.monotonic() < deadline, procs[0].log_tail()
                    time.sleep(0.2)

                assert procs[0].pid is not None and triton.pid is not None

                async def round_(i: int) -> None:
                    async with Clients(gateway, triton.http_url, triton.grpc_url) as c:
                        order = [("triton_http", c.triton_infer), ("gateway_http", c.gateway_infer)]
                        for name, fn in order if i % 2 == 0 else order[::-1]:
                            meter = CpuMeter(procs[0].pid, triton.pid)
                            rates[name].append(await _rate(fn, 16, a.seconds, meter))
                            cpu[name].append(meter.trials[-1])
                        got = {}
                        for name, fn in order if i % 2 == 0 else order[::-1]:
                            got[name] = await _p50_ms(fn, 200)
                            p50[name].append(got[name])
                        added.append(got["gateway_http"] - got["triton_http"])
                        streams = [("grpc_stream", c.grpc_stream_rate), ("ws", c.ws_rate)]
                        for name, fn2 in streams if i % 2 == 0 else streams[::-1]:
                            meter = CpuMeter(procs[0].pid, triton.pid)
                            rates[name].append(await fn2(16, a.seconds, meter))
                            cpu[name].append(meter.trials[-1])
                        for name, samples in (await c.first_events(a.first_n, a.stream_count)).items():
                            first[name].append(statistics.median(samples))
                            first_all[name].extend(samples)
                        dropped.extend(c.stream_errors)
                    async_rates.append(await _async_rate(gateway, r, queue, 600))
                    loads.append(os.getloadavg()[0])

                async def rounds() -> None:  # one event loop for all: grpc.aio binds to the first loop it runs in
                    for i in range(a.rounds):
                        await round_(i)
                        print(f"round {i + 1}: http triton {rates['triton_http'][-1]:.0f} / gateway "
                              f"{rates['gateway_http'][-1]:.0f} req/s; stream grpc {rates['grpc_stream'][-1]:.0f} / ws "
                              f"{rates['ws'][-1]:.0f} req/s; added p50 {added[-1]:.2f} ms; first event sse "
                              f"{first['sse'][-1]:.1f} ws {first['ws'][-1]:.1f} grpc {first['grpc'][-1]:.1f} ms; "
                              f"async {async_rates[-1]:.0f} req/s")  # fmt: skip

                asyncio.run(rounds())
            finally:
                r.close()
                for proc in procs:
                    proc.stop(timeout=15)
    http_ratio = [g / t for g, t in zip(rates["gateway_http"], rates["triton_http"], strict=True)]
    ws_ratio = [w / g for w, g in zip(rates["ws"], rates["grpc_stream"], strict=True)]

    def ceiling(direct: str, through: str) -> list[float]:
        """Per round, the ratio the CPU per request allows when the 2 cores are the bound: direct costs client +
        Triton, through the gateway client + gateway + Triton."""
        return [(d["client"] + d["triton"]) / (g["client"] + g["gateway"] + g["triton"])
                for d, g in zip(cpu[direct], cpu[through], strict=True)]  # fmt: skip

    tab = h.Table(["figure", "median", "range", "goal"])
    tab.add("Triton HTTP /infer, req/s at c=16", f"{h.med(rates['triton_http']):,.0f}", h.rng(rates["triton_http"]), "")
    tab.add("gateway /infer, req/s at c=16", f"{h.med(rates['gateway_http']):,.0f}", h.rng(rates["gateway_http"]), "")
    tab.add("**gateway ÷ Triton HTTP**", f"**{h.med(http_ratio):.2f}**", h.rng(http_ratio, "{:.2f}"), "≥ 0.7")
    tab.add("ceiling from CPU per request (below)", f"{h.med(ceiling('triton_http', 'gateway_http')):.2f}",
            h.rng(ceiling("triton_http", "gateway_http"), "{:.2f}"), "")  # fmt: skip
    tab.add(
        "direct gRPC streaming, req/s at c=16", f"{h.med(rates['grpc_stream']):,.0f}", h.rng(rates["grpc_stream"]), ""
    )
    tab.add("gateway WebSocket, req/s at c=16", f"{h.med(rates['ws']):,.0f}", h.rng(rates["ws"]), "")
    tab.add("**WebSocket ÷ gRPC streaming**", f"**{h.med(ws_ratio):.2f}**", h.rng(ws_ratio, "{:.2f}"), "≥ 0.7")
    tab.add("ceiling from CPU per request (below)", f"{h.med(ceiling('grpc_stream', 'ws')):.2f}",
            h.rng(ceiling("grpc_stream", "ws"), "{:.2f}"), "")  # fmt: skip
    tab.add("p50 at c=1, Triton HTTP (ms, 200 requests)", f"{h.med(p50['triton_http']):.2f}",
            h.rng(p50["triton_http"], "{:.2f}"), "")  # fmt: skip
    tab.add("p50 at c=1, gateway (ms, 200 requests)", f"{h.med(p50['gateway_http']):.2f}",
            h.rng(p50["gateway_http"], "{:.2f}"), "")  # fmt: skip
    tab.add("**p50 added by the gateway at c=1 (ms)**", f"**{h.med(added):.2f}**", h.rng(added, "{:.2f}"), "≤ 0.5")
    for name, label in (("sse", "SSE"), ("ws", "WebSocket"), ("grpc", "direct gRPC stream")):
        tab.add(f"time to first event, {label} (ms; p50 of {a.first_n} per round)", f"{h.med(first[name]):.2f}",
                h.rng(first[name], "{:.2f}"), "")  # fmt: skip
    for name, label in (("sse", "SSE"), ("ws", "WebSocket")):
        over = [x - g for x, g in zip(first[name], first["grpc"], strict=True)]
        tab.add(f"first event: {label} − direct gRPC (ms, within a round)", f"{h.med(over):+.2f}",
                h.rng(over, "{:+.2f}"), "")  # fmt: skip
    tab.add("async, 600 requests, 2 workers: req/s submit→last answer", f"{h.med(async_rates):,.0f}",
            h.rng(async_rates), "")  # fmt: skip

    spread = h.Table(["all first-event samples (ms)", "p10", "p50", "p90", "max"])
    for name, label in (("sse", "SSE"), ("ws", "WebSocket"), ("grpc", "direct gRPC stream")):
        q = np.percentile(first_all[name], [10, 50, 90, 100])
        spread.add(label, *(f"{v:.2f}" for v in q))

    def per_req(name: str, proc: str) -> str:
        values = [t[proc] for t in cpu[name]]
        return f"{h.med(values):,.0f} ({h.rng(values)})"

    split = h.Table(["CPU µs per request at c=16, median (range)", "client", "gateway", "Triton + stubs"])
    for name, label in (("triton_http", "direct: Triton HTTP /infer"), ("gateway_http", "gateway /infer → gRPC unary"),
                        ("grpc_stream", "direct: gRPC stream"), ("ws", "gateway WebSocket → gRPC")):  # fmt: skip
        split.add(label, per_req(name, "client"), per_req(name, "gateway") if "direct" not in label else "-",
                  per_req(name, "triton"))  # fmt: skip
    md = "\n".join([
        "## Gateway: its cost next to Triton's own HTTP and gRPC, time to first event, the queue",
        "",
        f"Machine: {h.machine_text(load_at_start=load_start)}. "
        f"1-min load after each round: {', '.join(f'{x:.1f}' for x in loads)}.",
        "",
        f"{a.rounds} rounds, alternating order, {a.seconds:g} s per throughput trial; model `double` (Python backend,",
        "Y = 2X on 4 floats, 2 instances) and the decoupled `streamer` from tests/data/gateway; one asyncio client",
        "process (aiohttp, websockets, tritonclient.grpc.aio) on the same 2 cores as tritonserver, the gateway, 2 workers and redis-server.",
        f"Time to first event: `streamer` sends {a.stream_count} responses; per round {a.first_n} requests per protocol,",
        "interleaved (SSE, WS, gRPC, then WS, gRPC, SSE, ...), each read to its end; from sending the request to",
        "reading the first event. SSE is a new HTTP request each (aiohttp keeps the connection), WebSocket one",
        "connection for all, direct gRPC a new stream on one channel (as the gateway opens one per request).",
        f"Direct gRPC streams dropped by the server during the trials (replaced, counted): {len(dropped)}"
        + (f" ({', '.join(sorted(set(dropped)))})" if dropped else "") + ".",
        "",
        tab.markdown(),
        "",
        spread.markdown(),
        "",
        "CPU from /proc over each c=16 trial, per process, ÷ requests answered (the 2 workers and redis-server idle).",
        "The ceiling row is (client + Triton direct) ÷ (client + gateway + Triton through the gateway), per round.",
        "",
        split.markdown(),
    ])  # fmt: skip
    print(tab.text())
    print(spread.text())
    print(split.text())
    h.update_results("gateway", md)


def test_gateway_bench() -> None:
    main(["--rounds", "3"])


if __name__ == "__main__":
    main()
