"""Where the gateway's time goes on the HTTP `/infer` and WebSocket paths (issue 24's bench misses its goals: throughput
ratio ≥ 0.7 at c=16 and ≤ 0.5 ms added p50 at c=1).

One tritonserver serves tests/data/gateway's `double`; the gateway runs under cProfile (`python -m cProfile`) while
one asyncio client drives `/infer` or the WebSocket at concurrency 16, then is stopped with SIGTERM (a graceful
exit, so the profile is written). Alongside, each process's CPU seconds per request (from /proc) say who spends the
2 cores: the client, the gateway or Triton (its stubs included).

    .venv/bin/python bench/profile_gateway.py [--seconds 8] [--top 25]

Prints the top functions by own time and by cumulative time, and the CPU split; writes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
    if kind == "http":
        async with aiohttp.ClientSession() as http:

            async def loop() -> None:
                nonlocal done
                while time.perf_counter() < stop_at:
                    async with http.post(f"{base}/v2/models/double/infer", json=V2) as r:
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--kinds", default="http,ws")
    p.add_argument("--no-profile", action="store_true", help="only the CPU split (cProfile itself costs CPU)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="repoforge-gw-profile-") as tmp:
        work = Path(tmp)
        (work / "s.log").touch()
        with TritonServer(make_repo(work, work / "s.log")) as triton:
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
