"""Rollout benchmark: what the router costs, and how fast a weight change (a rollback, a blue-green switch) lands.

One tritonserver serves `primary` and `candidate` (tests/data/rollout/candidate.py, Y = X) and a router (2
instances) between them. Per round, side by side under the same load loop (3 client threads, 4-row requests):
- requests/s straight to `primary` and through the router (which adds a BLS call and its per-route metrics);
- 10 weight switches between the routes under load: how long `set_weights` takes (the request, then the router's
  gauges confirming it), and how long until the last response from the old route (in-flight batches draining).
Cells are medians with the range over rounds.

    .venv/bin/python bench/test_rollout_bench.py [--rounds 5]        # about 2 minutes on 2 cores

Prints the table and rewrites the "rollout" section of bench/RESULTS.md.

The router's cost at the issue's measure (`--router-cost`, issue 26.1): the small MLP served directly, through a router
that runs it in its own stub (in_process, the default for an ONNX route of the same build) and through a router that
calls it by BLS (in_process: false), side by side in one tritonserver. perf_analyzer gRPC, 1 row per request,
concurrency 16 (infer/s) and concurrency 1 (p50), the three in alternating order each round. Besides the figures it
records where the time goes: Triton's per-model statistics (compute time of the router's execute, of the route
model's own execute under BLS), the router's route-call latency metric, and the CPU each process used per request.
Rewrites the "router" section of bench/RESULTS.md.

    .venv/bin/python bench/test_rollout_bench.py --router-cost [--rounds 5]   # about 5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
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


ROUTER_SPEC = """\
version: 1
models:
  - {name: mlp, format: onnx, path: small.onnx}
  - {name: router, format: python, plugin: {kind: router, routes: [{model: mlp}]}}
  - {name: router_bls, format: python, plugin: {kind: router, routes: [{model: mlp}], in_process: false}}
"""
#: The three ways to the small MLP, by model name: direct, through the in-process router, through the BLS router.
WAYS = {"mlp": "direct", "router": "router, in process", "router_bls": "router, BLS"}


def _stats(http_url: str) -> dict[str, dict[str, float]]:
    """Per model: inference and execution counts and the ns totals of Triton's inference statistics."""
    out = {}
    for m in WAYS:
        s = h.get_json(f"http://{http_url}/v2/models/{m}/stats")["model_stats"][0]
        d = {"inferences": float(s["inference_count"]), "executions": float(s["execution_count"])}
        for k in ("queue", "compute_input", "compute_infer", "compute_output"):
            d[k] = float(s["inference_stats"][k]["ns"])
        out[m] = d
    return out


def _route_calls(metrics_url: str) -> dict[str, tuple[float, float]]:
    """Per router: (count, sum µs) of its route-call latency histogram."""
    from repoforge.metrics import scrape

    got = scrape(metrics_url, "repoforge_router_latency_us")
    return {
        r: (got.get(f'repoforge_router_latency_us_count{{model="{r}",route="mlp"}}', 0.0),
            got.get(f'repoforge_router_latency_us_sum{{model="{r}",route="mlp"}}', 0.0))
        for r in ("router", "router_bls")
    }  # fmt: skip


def _breakdown(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], model: str) -> dict[str, float]:
    """µs per request of `model`'s queue / compute stages over a point (Triton sums a batch's requests' times)."""
    n = after[model]["inferences"] - before[model]["inferences"]
    if n <= 0:
        return {}
    out = {
        k: (after[model][k] - before[model][k]) / n / 1e3
        for k in ("queue", "compute_input", "compute_infer", "compute_output")
    }
    out["rows_per_exec"] = n / max(1.0, after[model]["executions"] - before[model]["executions"])
    return out


def router_cost(rounds: int, interval_ms: int) -> str:
    """Direct vs router (in process) vs router (BLS), alternating, one server: the markdown of the "router" section."""
    from repoforge.build import build
    from repoforge.servers.triton import TritonServer

    load_start = h.load_average()
    tput: dict[str, list[float]] = {m: [] for m in WAYS}
    p50: dict[str, list[float]] = {m: [] for m in WAYS}
    ratio: dict[str, list[float]] = {m: [] for m in WAYS if m != "mlp"}
    added: dict[str, list[float]] = {m: [] for m in WAYS if m != "mlp"}
    cpu16: dict[str, dict[str, list[float]]] = {m: {} for m in WAYS}  # µs of CPU per request by process, c=16
    time1: dict[str, dict[str, list[float]]] = {m: {} for m in WAYS}  # µs per request at c=1, by stage
    loads = []
    with h.workdir("rf-router-bench-") as root:
        h.make_models(root, ["small"])
        (root / "spec.yaml").write_text(ROUTER_SPEC)
        repo = build(root / "spec.yaml", root / "repo", device="cpu").output
        with TritonServer(repo) as server:
            metrics = server.metrics_url
            for r in range(rounds):
                order = list(WAYS) if r % 2 == 0 else list(reversed(WAYS))
                got: dict[tuple[str, int], h.Point] = {}
                for model in order:
                    for c in (16, 1):
                        s0, l0 = _stats(server.http_url), _route_calls(metrics)
                        p = h.measure(server.http_url, server.grpc_url, model, c, interval_ms=interval_ms)
                        s1, l1 = _stats(server.http_url), _route_calls(metrics)
                        got[(model, c)] = p
                        if c == 16:
                            for proc in ("server", "stub", "client"):
                                cpu16[model].setdefault(proc, []).append(p.cpu.get(proc, 0.0) / p.throughput * 1e6)
                            continue
                        stages = time1[model]
                        b = _breakdown(s0, s1, model)
                        stages.setdefault(f"{model}: Triton compute_infer", []).append(b.get("compute_infer", 0.0))
                        stages.setdefault(f"{model}: Triton queue + input + output", []).append(
                            b.get("queue", 0.0) + b.get("compute_input", 0.0) + b.get("compute_output", 0.0)
                        )
                        if model in l1:
                            n = l1[model][0] - l0[model][0]
                            stages.setdefault(f"{model}: route call (its latency metric)", []).append(
                                (l1[model][1] - l0[model][1]) / n if n else 0.0
                            )
                        if model == "router_bls":
                            bm = _breakdown(s0, s1, "mlp")
                            stages.setdefault("mlp (called by BLS): Triton compute_infer", []).append(
                                bm.get("compute_infer", 0.0)
                            )
                for m in WAYS:
                    tput[m].append(got[(m, 16)].throughput)
                    p50[m].append(got[(m, 1)].p50_ms)
                for m in ratio:
                    ratio[m].append(got[(m, 16)].throughput / got[("mlp", 16)].throughput)
                    added[m].append(got[(m, 1)].p50_ms - got[("mlp", 1)].p50_ms)
                loads.append(os.getloadavg()[0])
                print(f"round {r + 1} ({' '.join(order)}): " + ", ".join(
                    f"{m} {got[(m, 16)].throughput:,.0f}/s c16, p50 {got[(m, 1)].p50_ms:.3f} ms c1" for m in WAYS))  # fmt: skip

    tab = h.Table(["small MLP, 1 row per request", *WAYS.values()])
    tab.add("concurrency 16, infer/s", *(f"{h.med(tput[m]):,.0f} ({h.rng(tput[m])})" for m in WAYS))
    tab.add("concurrency 1, p50 ms", *(f"{h.med(p50[m]):.3f} ({h.rng(p50[m], '{:.3f}')})" for m in WAYS))
    tab.add(
        "÷ direct at concurrency 16 (goal ≥ 0.8)",
        "1",
        *(f"**{h.med(ratio[m]):.2f}** ({h.rng(ratio[m], '{:.2f}')})" for m in ratio),
    )
    tab.add(
        "added p50 at concurrency 1, ms (goal ≤ 0.3)",
        "0",
        *(f"**{h.med(added[m]):+.3f}** ({h.rng(added[m], '{:+.3f}')})" for m in added),
    )
    for proc in ("server", "stub", "client"):
        tab.add(f"CPU per request at c=16, µs: {proc}", *(f"{h.med(cpu16[m].get(proc, [])):.0f}" for m in WAYS))
    where = h.Table(["concurrency 1, µs per request", "median", "range"])
    for m in WAYS:
        for k, v in time1[m].items():
            where.add(k, f"{h.med(v):.0f}", h.rng(v, "{:.0f}"))
    goal = {m: h.med(ratio[m]) >= 0.8 and h.med(added[m]) <= 0.3 for m in ratio}
    return "\n".join([
        "## Router: its cost at 1 row per request (issue 26.1)",
        "",
        f"Machine: {h.machine_text(load_at_start=load_start)}. 1-min load after each round: "
        f"{', '.join(f'{x:.1f}' for x in loads)}.",
        "",
        f"{rounds} rounds; each round measures direct, router in process and router by BLS (alternating order: "
        f"forward, then reversed), each at concurrency 16 then 1; perf_analyzer gRPC, {interval_ms} ms windows, 1 row "
        "per request, one tritonserver. Cells: median (range over rounds); ratios and added p50 are taken within a "
        "round. The CPU rows are the cores each process used during the point ÷ its requests/s.",
        "",
        tab.markdown(),
        "",
        "Where the time goes at concurrency 1 (Triton's per-model statistics, mean µs per request; the router's "
        "compute_infer is its whole `execute` seen from the server: the stub hop, the routing and the route call):",
        "",
        where.markdown(),
        "",
        f"Goal (≥ 0.8 at c=16 and ≤ 0.3 ms added at c=1): router in process "
        f"{'met' if goal['router'] else 'not met'}; router by BLS {'met' if goal['router_bls'] else 'not met'}.",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--router-cost", action="store_true", help="the router's cost at 1 row per request (issue 26.1)")
    ap.add_argument("--interval-ms", type=int, default=3000)
    a = ap.parse_args(argv)
    if a.router_cost:
        md = router_cost(a.rounds, a.interval_ms)
        print(md)
        h.update_results("router", md)
        return
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


def test_router_cost_bench() -> None:
    main(["--router-cost", "--rounds", "3"])


if __name__ == "__main__":
    main()
