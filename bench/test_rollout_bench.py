"""Rollout benchmark: what the router costs, and how fast a weight change (a rollback, a blue-green switch) lands.

One tritonserver serves `primary` and `candidate` (tests/data/rollout/candidate.py, Y = X) and a router (2
instances) between them. Per round, side by side under the same load loop (3 client threads, 4-row requests):
- requests/s straight to `primary` and through the router (which adds a BLS call and its per-route metrics);
- 10 weight switches between the routes under load: how long `set_weights` takes (the request, then the router's
  gauges confirming it), and how long until the last response from the old route (in-flight batches draining).
Cells are medians with the range over rounds.

    .venv/bin/python bench/test_rollout_bench.py [--rounds 5]        # about 2 minutes on 2 cores

Prints the table and rewrites the "rollout" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _serving_helpers as h
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SPEC = """\
version: 1
defaults: {max_batch_size: 64}
models:
  - {name: primary, format: python, path: candidate.py, inputs: [{name: X, dtype: FP32, dims: [4]}], outputs: [{name: Y, dtype: FP32, dims: [4]}]}
  - {name: candidate, format: python, path: candidate.py, inputs: [{name: X, dtype: FP32, dims: [4]}], outputs: [{name: Y, dtype: FP32, dims: [4]}]}
  - name: router
    format: python
    instance_groups: [{kind: cpu, count: 2}]
    plugin: {kind: router, routes: [{model: primary, weight: 1}, {model: candidate, weight: 0}]}
"""


class Loop:
    """Client threads sending 4-row requests; each response's time and route (ROUTE output, or -1 direct)."""

    def __init__(self, url: str, model: str, threads: int = 3) -> None:
        self.url, self.model, self.stop = url, model, threading.Event()
        self.events: list[tuple[float, int]] = []
        self.errors = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        from tritonclient import http

        client = http.InferenceServerClient(self.url, network_timeout=30)
        x = np.ones((4, 4), dtype=np.float32)
        inp = http.InferInput("X", [4, 4], "FP32")
        inp.set_data_from_numpy(x)
        while not self.stop.is_set():
            try:
                res = client.infer(self.model, [inp])
                route = int(res.as_numpy("ROUTE")[0, 0]) if self.model == "router" else -1
                with self.lock:
                    self.events.append((time.perf_counter(), route))
            except Exception:  # noqa: BLE001 - counted
                with self.lock:
                    self.errors += 1
        client.close()

    def __enter__(self) -> Loop:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def _rate(url: str, model: str, seconds: float) -> tuple[float, int]:
    with Loop(url, model) as loop:
        time.sleep(1.0)  # warm
        n0, t0 = len(loop.events), time.perf_counter()
        time.sleep(seconds)
        n1, t1 = len(loop.events), time.perf_counter()
    return (n1 - n0) / (t1 - t0), loop.errors


def _switches(server: object, url: str, metrics: str, n: int = 10) -> tuple[list[float], list[float], int, int]:
    from repoforge.rollout.server import RouterServer

    rs = RouterServer(url, metrics, "router")
    took, drain = [], []
    with Loop(url, "router") as loop:
        time.sleep(1.0)
        for i in range(n):
            new = i % 2  # 1: all to the candidate, 0: back to primary
            t0 = time.perf_counter()
            rs.set_weights({"primary": 1.0 - new, "candidate": float(new)})
            t1 = time.perf_counter()
            took.append((t1 - t0) * 1000)
            time.sleep(0.5)
            with loop.lock:
                old = [t for t, r in loop.events if t >= t0 and r == 1 - new]
            drain.append(max(0.0, (max(old) - t1) * 1000) if old else 0.0)
        sent = len(loop.events)
    rs.set_weights({"primary": 1.0, "candidate": 0.0})
    return took, drain, loop.errors, sent


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=4.0)
    a = ap.parse_args(argv)
    from repoforge.build import build
    from repoforge.servers.triton import TritonServer

    load_start = h.load_average()
    ratios, direct, routed, took, drain = [], [], [], [], []
    errors = sent = 0
    with h.workdir("rf-rollout-bench-") as root:
        shutil.copy(ROOT / "tests" / "data" / "rollout" / "candidate.py", root / "candidate.py")
        (root / "spec.yaml").write_text(SPEC)
        repo = build(root / "spec.yaml", root / "repo", device="cpu").output
        with TritonServer(repo) as server:
            metrics = server.metrics_url.split("://")[-1].removesuffix("/metrics")
            for r in range(a.rounds):
                order = ["primary", "router"] if r % 2 == 0 else ["router", "primary"]
                got = {}
                for model in order:
                    got[model], e = _rate(server.http_url, model, a.seconds)
                    errors += e
                direct.append(got["primary"])
                routed.append(got["router"])
                ratios.append(got["router"] / got["primary"])
                t, d, e, s = _switches(server, server.http_url, metrics)
                took += t
                drain += d
                errors += e
                sent += s
                print(f"round {r + 1}: direct {got['primary']:.0f} req/s, router {got['router']:.0f} req/s, "
                      f"switch {h.med(t):.1f} ms, drain {h.med(d):.1f} ms")  # fmt: skip
    tab = h.Table(["figure", "median", "range"])
    tab.add("requests/s straight to primary (4 rows each)", f"{h.med(direct):,.0f}", h.rng(direct))
    tab.add("requests/s through the router", f"{h.med(routed):,.0f}", h.rng(routed))
    tab.add("router ÷ direct", f"{h.med(ratios):.2f}", h.rng(ratios, "{:.2f}"))
    tab.add(f"weight change, set and confirmed (ms, {len(took)} switches)", f"{h.med(took):.1f}", h.rng(took, "{:.1f}"))
    tab.add("last old-route answer after the change (ms)", f"{h.med(drain):.1f}", h.rng(drain, "{:.1f}"))
    md = "\n".join([
        "## Rollout: the router's cost and how fast a weight change lands",
        "",
        f"Machine: {h.machine_text(load_at_start=load_start)}.",
        "",
        f"{a.rounds} rounds, alternating order; 3 client threads of 4-row requests; the router has 2 instances.",
        f"Load-loop requests during the switches: {sent:,}; failed: {errors}.",
        "",
        tab.markdown(),
    ])  # fmt: skip
    print(tab.text())
    print(f"failed requests: {errors} of {sent:,} during switches")
    h.update_results("rollout", md)


def test_rollout_bench() -> None:
    main(["--rounds", "3"])


if __name__ == "__main__":
    main()
