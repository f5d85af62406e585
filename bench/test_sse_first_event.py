"""SSE's time to first event, this checkout's gateway next to another revision's, with WebSocket and direct gRPC as
references (bench/RESULTS.md's gateway section: SSE 4.27 ms, WebSocket 3.23, gRPC 2.19).

One tritonserver serves tests/data/gateway's decoupled `streamer` (--stream-count responses per request). Two
`repoforge gateway` processes serve it: BEFORE, run from a temporary git worktree of --before (its src/ first on
PYTHONPATH), and AFTER, this checkout. One asyncio client (aiohttp for SSE, keeping its connections; websockets;
tritonclient.grpc.aio) sends, per round, --n requests of each kind interleaved request by request with the order
rotating (SSE before, SSE after, WS after, gRPC, then SSE after, WS after, gRPC, SSE before, ...), each read to its
end; a sample is the time from sending the request to reading the first event. Cells: the median over rounds of
each round's p50, with the range; the difference is taken within each round. Host load (os.getloadavg) noted.

    .venv/bin/python bench/test_sse_first_event.py [--rounds 5] [--n 60] [--before REV]

Rewrites the `sse_first_event` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

import _serving_helpers as h
import aiohttp
import httpx
import numpy as np
import websockets
from test_gateway import make_repo
from tritonclient.grpc import InferInput
from tritonclient.grpc.aio import InferenceServerClient

from repoforge.servers.ports import free_port
from repoforge.servers.process import ManagedProcess
from repoforge.servers.triton import TritonServer

ROOT = Path(__file__).resolve().parents[1]


def _gateway(src: Path, grpc_url: str, port: int, log: Path) -> ManagedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-c", "from repoforge.cli import main; main()", "gateway", grpc_url, "--port", str(port)]
    return ManagedProcess(cmd, log_path=log, env=env, name=f"gateway {src}").start()


def _wait_ready(url: str, proc: ManagedProcess) -> None:
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, proc.log_tail()
        time.sleep(0.2)


async def _samples(before: str, after: str, grpc_url: str, n: int, count: int) -> dict[str, list[float]]:
    body = {"COUNT": count, "TAG": "bench"}
    async with aiohttp.ClientSession() as http:
        ws = await websockets.connect(f"{after.replace('http', 'ws')}/v2/models/streamer/stream")
        grpc = InferenceServerClient(grpc_url)
        inp = InferInput("COUNT", [1], "INT32")
        inp.set_data_from_numpy(np.array([count], dtype=np.int32))

        def sse(base: str) -> Callable[[], Awaitable[float]]:
            async def one() -> float:
                t0 = time.perf_counter()
                first, events = None, 0
                async with http.post(f"{base}/v2/models/streamer/generate_stream", json=body) as r:
                    async for line in r.content:
                        if line.startswith(b"data:"):
                            events += 1
                            if first is None:
                                first = time.perf_counter() - t0
                assert first is not None and events == count, events
                return first

            return one

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

        async def direct() -> float:
            async def one_request() -> Any:
                yield {"model_name": "streamer", "inputs": [inp],
                       "parameters": {"triton_enable_empty_final_response": True}}  # fmt: skip

            t0 = time.perf_counter()
            first = None
            responses = grpc.stream_infer(one_request())
            async for result, error in responses:
                assert error is None, error
                if first is None:
                    first = time.perf_counter() - t0
                if result.get_response().parameters["triton_final_response"].bool_param:
                    break
            responses.cancel()
            assert first is not None
            return first

        kinds: list[tuple[str, Callable[[], Awaitable[float]]]] = [
            ("sse_before", sse(before)), ("sse_after", sse(after)), ("ws", wsock), ("grpc", direct),
        ]  # fmt: skip
        out: dict[str, list[float]] = {name: [] for name, _ in kinds}
        try:
            for _ in range(5):  # warm-up: connections, the catalog, Triton's instances
                for _name, fn in kinds:
                    await fn()
            for i in range(n):
                k = i % len(kinds)
                for name, fn in kinds[k:] + kinds[:k]:
                    out[name].append((await fn()) * 1000)
        finally:
            await ws.close()
            await grpc.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--n", type=int, default=60, help="samples per kind and round")
    p.add_argument("--stream-count", type=int, default=5)
    p.add_argument("--before", default="HEAD", help="revision whose gateway is BEFORE (default HEAD: uncommitted "
                   "changes are AFTER's)")  # fmt: skip
    a = p.parse_args()
    load0 = os.getloadavg()
    rounds: dict[str, list[float]] = {}
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", a.before], capture_output=True, text=True,
                         check=True, timeout=30).stdout.strip()  # fmt: skip
    with h.workdir("repoforge-sse-bench-") as work:
        wt = work / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(wt), a.before], check=True,
                       capture_output=True, timeout=120)  # fmt: skip
        try:
            with TritonServer(make_repo(work, work / "streamer.log")) as triton:
                ports = free_port("127.0.0.1"), free_port("127.0.0.1")
                procs = [_gateway(wt / "src", triton.grpc_url, ports[0], work / "before.log"),
                         _gateway(ROOT / "src", triton.grpc_url, ports[1], work / "after.log")]  # fmt: skip
                urls = [f"http://127.0.0.1:{port}" for port in ports]
                try:
                    for url, proc in zip(urls, procs, strict=True):
                        _wait_ready(url, proc)
                    for r in range(a.rounds):
                        got = asyncio.run(_samples(urls[0], urls[1], triton.grpc_url, a.n, a.stream_count))
                        for name, xs in got.items():
                            rounds.setdefault(name, []).append(statistics.median(xs))
                        rounds.setdefault("after_minus_before", []).append(
                            statistics.median(got["sse_after"]) - statistics.median(got["sse_before"])
                        )
                        print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in rounds.items())
                              + f"; load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
                finally:
                    for proc in procs:
                        proc.stop()
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(wt)], capture_output=True,
                           timeout=120)  # fmt: skip
    load1 = os.getloadavg()
    labels = {"sse_before": f"SSE, gateway at {rev} (before)", "sse_after": "SSE, this checkout (after)",
              "ws": "WebSocket, this checkout", "grpc": "direct gRPC stream",
              "after_minus_before": "**SSE after − before (within a round)**"}  # fmt: skip
    rows = [f"| {labels[k]} | {h.med(v):+.2f} | {h.rng(v, '{:+.2f}')} |" if k == "after_minus_before"
            else f"| {labels[k]} | {h.med(v):.2f} | {h.rng(v, '{:.2f}')} |" for k, v in rounds.items()]  # fmt: skip
    md = "\n".join([
        "## SSE: time to first event, before and after (`bench/test_sse_first_event.py`)",
        "",
        f"{a.rounds} rounds of {a.n} requests per kind, interleaved request by request; `streamer` sends "
        f"{a.stream_count} responses; two gateways on one tritonserver, one client, 2 shared cores. Load "
        f"{load0[0]:.2f} / {load0[1]:.2f} at the start, {load1[0]:.2f} / {load1[1]:.2f} at the end (1 / 5 min).",
        "",
        "| time to first event (ms; median over rounds of each round's p50) | median | range |",
        "|---|---|---|",
        *rows,
    ])  # fmt: skip
    h.update_results("sse_first_event", md)
    print(md)


if __name__ == "__main__":
    main()
