"""Where the gateway's time goes on the HTTP `/infer` and WebSocket paths (issue 24's bench misses its goals: throughput
ratio ≥ 0.7 at c=16 and ≤ 0.5 ms added p50 at c=1).

One tritonserver serves tests/data/gateway's `double`; the gateway runs under cProfile (`python -m cProfile`) while
one asyncio client drives `/infer` or the WebSocket at concurrency 16, then is stopped with SIGTERM (a graceful
exit, so the profile is written). Alongside, each process's CPU seconds per request (from /proc) say who spends the
2 cores: the client, the gateway or Triton (its stubs included).

    .venv/bin/python bench/profile_gateway.py [--seconds 8] [--top 25]
    .venv/bin/python bench/profile_gateway.py --rounds 5 --seconds 4 --kinds http,live,ws   # CPU split, no profiler
    .venv/bin/python bench/profile_gateway.py --grpc-client 4 --seconds 4   # unary vs one multiplexed stream

Prints the top functions by own time and by cumulative time, and the CPU split; writes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

import aiohttp
import httpx
from test_gateway import make_repo

from repoforge.servers.ports import free_port
from repoforge.servers.triton import TritonServer

V2 = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 2.0, 3.0, 4.0]}]}
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """utime + stime of `pid` and its children that exited (seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / TICK


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of `pid` and its live descendants (Triton's Python backend stubs are its children)."""
    total = cpu_s(pid)
    for child in Path(f"/proc/{pid}/task").glob("*/children"):
        for c in child.read_text().split():
            try:
                total += tree_cpu_s(int(c))
            except (FileNotFoundError, ProcessLookupError):
                pass
    return total


async def drive(base: str, kind: str, clients: int, seconds: float) -> int:
    done = 0
    stop_at = time.perf_counter() + seconds
    if kind in ("http", "live"):  # live: GET /v2/health/live, the HTTP server's own floor (no gRPC, no JSON)
        async with aiohttp.ClientSession() as http:

            async def loop() -> None:
                nonlocal done
                while time.perf_counter() < stop_at:
                    if kind == "http":
                        async with http.post(f"{base}/v2/models/double/infer", json=V2) as r:
                            await r.read()
                            assert r.status == 200
                    else:
                        async with http.get(f"{base}/v2/health/live") as r:
                            await r.read()
                            assert r.status == 200
                    done += 1

            await asyncio.gather(*(loop() for _ in range(clients)))
        return done
    import websockets

    request = json.dumps({"X": [1.0, 2.0, 3.0, 4.0]})

    async def ws_loop() -> None:
        nonlocal done
        async with websockets.connect(f"{base.replace('http', 'ws')}/v2/models/double/stream") as ws:
            while time.perf_counter() < stop_at:
                await ws.send(request)
                await ws.recv()
                await ws.recv()
                done += 1

    await asyncio.gather(*(ws_loop() for _ in range(clients)))
    return done


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def split(triton: TritonServer, kinds: list[str], rounds: int, seconds: float, clients: int) -> None:
    """CPU µs per request of client, gateway and Triton for each kind, on one gateway, kinds alternating A B C,
    C B A, ... over `rounds` (no profiler)."""
    port = free_port("127.0.0.1")
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "repoforge", "gateway", triton.grpc_url, "--port", str(port)],
                            stderr=subprocess.DEVNULL)  # fmt: skip
    assert triton.pid is not None
    rows: dict[str, list[tuple[float, float, float, float]]] = {k: [] for k in kinds}
    loads = []
    try:
        _wait_ready(base, proc)
        for kind in kinds:
            asyncio.run(drive(base, kind, clients, 1.0))  # warm-up
        for i in range(rounds):
            for kind in kinds if i % 2 == 0 else kinds[::-1]:
                me, gw, tr = cpu_s(os.getpid()), cpu_s(proc.pid), tree_cpu_s(triton.pid)
                t0 = time.perf_counter()
                n = asyncio.run(drive(base, kind, clients, seconds))
                wall = time.perf_counter() - t0
                me, gw, tr = cpu_s(os.getpid()) - me, cpu_s(proc.pid) - gw, tree_cpu_s(triton.pid) - tr
                rows[kind].append((n / wall, me / n * 1e6, gw / n * 1e6, tr / n * 1e6))
            loads.append(os.getloadavg()[0])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    print(f"\nCPU µs per request at c={clients}, median (range) of {rounds} alternating runs; 1-min load after each "
          f"round: {', '.join(f'{x:.1f}' for x in loads)}")  # fmt: skip
    for kind, values in rows.items():
        rate, me, gw, tr = (list(c) for c in zip(*values, strict=True))
        print(f"  {kind:5s} req/s {_spread(rate)}; client {_spread(me)}, gateway {_spread(gw)}, "
              f"triton+stubs {_spread(tr)}")  # fmt: skip


async def _grpc_client(url: str, triton_pid: int, rounds: int, seconds: float, clients: int) -> None:
    """Client CPU per request of the ways the gateway could carry `/infer` to Triton: a unary call each
    (tritonclient's `infer`, or upstream.infer: its stub with a hand-built message) or one long-lived
    bi-directional stream multiplexing every request (tritonclient's `stream_infer`, or the raw stub with
    one writer at a time), matched to their answers by request id."""
    import itertools

    import grpc
    import numpy as np
    from tritonclient.grpc import InferInput
    from tritonclient.grpc.aio import InferenceServerClient

    from repoforge.gateway import upstream
    from repoforge.gateway.codec import Request

    client = InferenceServerClient(url)
    x = np.array([[1, 2, 3, 4]], dtype=np.float32)
    ids = itertools.count()

    def inputs() -> list[Any]:
        item = InferInput("X", [1, 4], "FP32")
        item.set_data_from_numpy(x)
        return [item]

    async def tc_unary() -> None:
        await client.infer("double", inputs(), client_timeout=10)

    async def gw_unary() -> None:
        await upstream.infer(client, Request("double", {"X": x}, {"X": "FP32"}), 10)

    requests: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    waiting: dict[str, asyncio.Future[Any]] = {}

    async def feed() -> Any:
        while True:
            yield await requests.get()

    responses = client.stream_infer(feed())

    async def read_tc() -> None:
        async for result, error in responses:
            assert error is None, error
            waiting.pop(result.get_response().id).set_result(result)

    async def tc_stream() -> None:
        rid = str(next(ids))
        answer = waiting[rid] = asyncio.get_running_loop().create_future()
        requests.put_nowait({"model_name": "double", "inputs": inputs(), "request_id": rid})
        await asyncio.wait_for(answer, 10)

    call = client._client_stub.ModelStreamInfer()
    write_lock = asyncio.Lock()  # grpc.aio allows one write in flight per call

    async def read_raw() -> None:
        while (message := await call.read()) is not grpc.aio.EOF:
            assert not message.error_message, message.error_message
            waiting.pop(message.infer_response.id).set_result(message)

    async def raw_stream() -> None:
        rid = str(next(ids))
        answer = waiting[rid] = asyncio.get_running_loop().create_future()
        message = upstream._message(Request("double", {"X": x}, {"X": "FP32"}, id=rid))
        async with write_lock:
            await call.write(message)
        await asyncio.wait_for(answer, 10)

    readers = [asyncio.create_task(read_tc()), asyncio.create_task(read_raw())]
    ways = {"tritonclient unary": tc_unary, "gateway unary (upstream.infer)": gw_unary,
            "tritonclient stream_infer, multiplexed": tc_stream, "raw stub stream, multiplexed": raw_stream}  # fmt: skip
    rows: dict[str, list[tuple[float, float, float]]] = {k: [] for k in ways}
    names = list(ways)

    async def run(one: Any, secs: float) -> tuple[float, float, float]:
        done, stop_at = 0, time.perf_counter() + secs

        async def loop() -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                await one()
                done += 1

        t0, c0, tr0 = time.perf_counter(), time.process_time(), tree_cpu_s(triton_pid)
        await asyncio.gather(*(loop() for _ in range(clients)))
        wall, cpu, tr = time.perf_counter() - t0, time.process_time() - c0, tree_cpu_s(triton_pid) - tr0
        return done / wall, cpu / done * 1e6, tr / done * 1e6

    try:
        for name in names:
            await run(ways[name], 0.5)
        for i in range(rounds):
            for name in names if i % 2 == 0 else names[::-1]:
                rows[name].append(await run(ways[name], seconds))
    finally:
        for task in readers:
            task.cancel()
        responses.cancel()
        call.cancel()
        await client.close()
    print(f"\ngRPC client to Triton, c={clients}, median (range) of {rounds} alternating runs; load "
          f"{os.getloadavg()[0]:.1f}")  # fmt: skip
    for name, values in rows.items():
        rate, me, tr = (list(c) for c in zip(*values, strict=True))
        print(f"  {name:40s} req/s {_spread(rate)}; client µs {_spread(me)}; triton+stubs µs {_spread(tr)}")


def _wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--kinds", default="http,ws")
    p.add_argument("--no-profile", action="store_true", help="only the CPU split (cProfile itself costs CPU)")
    p.add_argument("--rounds", type=int, default=0,
                   help="the CPU split only: one gateway, --kinds alternating over this many runs (e.g. --kinds "
                        "http,live: /infer next to the HTTP server's floor)")  # fmt: skip
    p.add_argument("--grpc-client", type=int, default=0, metavar="ROUNDS",
                   help="only the client side of gRPC: unary calls vs one multiplexed stream, alternating")  # fmt: skip
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="repoforge-gw-profile-") as tmp:
        work = Path(tmp)
        (work / "s.log").touch()
        with TritonServer(make_repo(work, work / "s.log")) as triton:
            assert triton.pid is not None
            if a.grpc_client:
                asyncio.run(_grpc_client(triton.grpc_url, triton.pid, a.grpc_client, a.seconds, a.clients))
                return
            if a.rounds:
                split(triton, a.kinds.split(","), a.rounds, a.seconds, a.clients)
                return
            for kind in a.kinds.split(","):
                port = free_port("127.0.0.1")
                prof = work / f"{kind}.prof"
                profile = [] if a.no_profile else ["-m", "cProfile", "-o", str(prof)]
                proc = subprocess.Popen([sys.executable, *profile, "-m", "repoforge", "gateway", triton.grpc_url,
                                         "--port", str(port)], stderr=subprocess.DEVNULL)  # fmt: skip
                base = f"http://127.0.0.1:{port}"
                try:
                    deadline = time.monotonic() + 60
                    while True:
                        try:
                            if httpx.get(f"{base}/v2/health/ready", timeout=1).status_code == 200:
                                break
                        except httpx.HTTPError:
                            pass
                        assert time.monotonic() < deadline and proc.poll() is None
                        time.sleep(0.2)
                    asyncio.run(drive(base, kind, a.clients, 1.0))  # warm-up
                    me, gw, tr = cpu_s(os.getpid()), cpu_s(proc.pid), tree_cpu_s(triton.pid)
                    load = os.getloadavg()
                    t0 = time.perf_counter()
                    n = asyncio.run(drive(base, kind, a.clients, a.seconds))
                    wall = time.perf_counter() - t0
                    me, gw, tr = cpu_s(os.getpid()) - me, cpu_s(proc.pid) - gw, tree_cpu_s(triton.pid) - tr
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=60)
                us = 1e6 / n
                print(f"\n=== {kind}: {n / wall:,.0f} req/s at c={a.clients}; load {load[0]:.2f}; CPU µs per request: "
                      f"client {me * us:.0f}, gateway {gw * us:.0f}, triton+stubs {tr * us:.0f}")  # fmt: skip
                if a.no_profile:
                    continue
                stats = pstats.Stats(str(prof))
                stats.sort_stats("tottime").print_stats(a.top)
                stats.sort_stats("cumulative").print_stats(a.top)


if __name__ == "__main__":
    main()
