"""Drift benchmark: what `drift:` adds to a features plugin per request, side by side in one tritonserver.

`feats` and `feats_drift` are the same features plugin (3 columns, 3 ops), the second with `drift:` on a
profile of in-distribution data. Each round sends R requests at batch 1 and at batch 64 to each model in
turn (tritonclient HTTP, concurrency 1, the order alternating per round); the latency per request is the
median of the round, the overhead is drift − plain within a round, and medians/ranges are over rounds. Also
the in-process cost of `DriftMonitor.observe()` per call at batch 1 and 64 (flushes included, amortised).
Host load (os.getloadavg) before/after. Rewrites the `drift` section of bench/RESULTS.md.

    .venv/bin/python bench/test_drift_bench.py [--rounds 5] [--requests 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

import _serving_helpers as h

MODELS = ["feats", "feats_drift"]
BATCHES = (1, 64)
PLUGIN = """      kind: features
      columns: [{name: age, dtype: FP32}, {name: income, dtype: FP32}, {name: city, dtype: BYTES}]
      features:
        - {op: standardize, column: age, mean: 40, std: 10}
        - {op: log1p, column: income}
        - {op: hash, column: city, buckets: 8}
"""
SPEC = (
    "version: 1\ndefaults: {max_batch_size: 64, dynamic_batching: {max_queue_delay_us: 0}}\nmodels:\n"
    f"  - name: feats\n    format: python\n    plugin:\n{PLUGIN}"
    f"  - name: feats_drift\n    format: python\n    plugin:\n{PLUGIN}      drift: {{reference: ref.json, window: 10000}}\n"
)


def in_process(calls: int = 3000) -> dict[int, list[float]]:
    """µs per observe() call (5 repeats each), inline flushes every 1024 rows included."""
    from test_drift_serving import _rows

    from repoforge.drift.online import DriftMonitor, InputInfo, match_features
    from repoforge.drift.profile import make_profile

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        np.savez(Path(d) / "ref.npz", **_rows(rng, 20000))
        prof = make_profile(Path(d) / "ref.npz", "feats")
    infos = [InputInfo("age", "FP32", (1,)), InputInfo("income", "FP32", (1,)), InputInfo("city", "BYTES", (1,))]
    sources, _, _ = match_features(prof["features"], infos)
    out: dict[int, list[float]] = {}
    for b in BATCHES:
        r = _rows(rng, b)
        feed = {
            "age": r["age"].astype(np.float32).reshape(-1, 1),
            "income": r["income"].astype(np.float32).reshape(-1, 1),
            "city": np.array([[s.encode()] for s in r["city"]], dtype=object),
        }
        out[b] = []
        for _ in range(5):
            mon = DriftMonitor(prof, sources, 10000)
            t0 = time.perf_counter()
            for _ in range(calls):
                mon.observe(feed)
            out[b].append((time.perf_counter() - t0) / calls * 1e6)
    return out


def served(rounds: int, requests: int) -> dict[str, Any]:
    from test_drift_serving import _rows
    from tritonclient import http

    from repoforge.build import build
    from repoforge.drift.profile import make_profile, write_profile
    from repoforge.servers.triton import TritonServer

    rng = np.random.default_rng(1)
    lat: dict[tuple[str, int], list[float]] = {(m, b): [] for m in MODELS for b in BATCHES}
    with h.workdir("repoforge-drift-bench-") as root:
        np.savez(root / "ref.npz", **_rows(rng, 20000))
        write_profile(make_profile(root / "ref.npz", "feats"), root / "ref.json")
        (root / "spec.yaml").write_text(SPEC)
        repo = build(root / "spec.yaml", root / "repo", device="cpu").output
        with TritonServer(repo, workdir=root / "triton") as server:
            client = http.InferenceServerClient(server.http_url, network_timeout=30)
            feeds = {}
            for b in BATCHES:
                r = _rows(rng, b)
                ins = []
                for name, v in r.items():
                    a = (np.array([[s.encode()] for s in v], dtype=object) if name == "city"
                         else v.astype(np.float32).reshape(-1, 1))  # fmt: skip
                    t = http.InferInput(name, list(a.shape), "BYTES" if name == "city" else "FP32")
                    t.set_data_from_numpy(a)
                    ins.append(t)
                feeds[b] = ins
            for m in MODELS:  # warm up (and fill the drift window past min_rows)
                for _ in range(200):
                    client.infer(m, feeds[64])
            for r in range(rounds):
                order = MODELS if r % 2 == 0 else MODELS[::-1]
                for b in BATCHES:
                    for m in order:
                        times = []
                        for _ in range(requests):
                            t0 = time.perf_counter()
                            client.infer(m, feeds[b])
                            times.append((time.perf_counter() - t0) * 1e6)
                        lat[(m, b)].append(statistics.median(times))
            version = h.get_json(f"http://{server.http_url}/v2").get("version")
    return {"lat": lat, "version": version}


def run(rounds: int, requests: int) -> str:
    load0 = h.load_average()
    t0 = time.monotonic()
    obs = in_process()
    sv = served(rounds, requests)
    lat = sv["lat"]
    lines = [
        "## Drift: `drift:` on a features plugin, added cost per request (`bench/test_drift_bench.py`)",
        "",
        f"Machine: {h.machine_text(sv['version'], load0)}.",
        f"{rounds} rounds × {requests} requests per model and batch, tritonclient HTTP, concurrency 1, order "
        f"alternating per round, {time.monotonic() - t0:.0f} s. Cells: median over rounds of the round's median "
        "latency (range over rounds); overhead = feats_drift − feats within a round.",
        "",
    ]
    t = h.Table(["batch", "feats µs", "feats_drift µs", "overhead µs/request", "overhead µs/row"])
    for b in BATCHES:
        ov = [d - p for d, p in zip(lat[("feats_drift", b)], lat[("feats", b)], strict=True)]
        t.add(b, f"{h.med(lat[('feats', b)]):,.0f} ({h.rng(lat[('feats', b)])})",
              f"{h.med(lat[('feats_drift', b)]):,.0f} ({h.rng(lat[('feats_drift', b)])})",
              f"{h.med(ov):+,.0f} ({h.rng(ov, '{:+,.0f}')})", f"{h.med(ov) / b:+,.2f}")  # fmt: skip
    lines += [t.markdown(), ""]
    t2 = h.Table(["batch", "observe() µs per call (5 repeats of 3000 calls)", "µs per row"])
    for b in BATCHES:
        t2.add(b, f"{h.med(obs[b]):.1f} ({h.rng(obs[b], '{:.1f}')})", f"{h.med(obs[b]) / b:.2f}")
    lines += [t2.markdown(), "", f"Load average (1/5/15 min): {load0} before, {h.load_average()} after."]
    text = "\n".join(lines)
    print(text)
    h.update_results("drift", text)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=300)
    a = p.parse_args()
    run(a.rounds, a.requests)


def test_drift_bench(long_bench: None) -> None:
    run(int(os.environ.get("REPOFORGE_BENCH_ROUNDS", "5")), 300)


if __name__ == "__main__":
    main()
