"""Plugin benchmark: what a result-cache hit costs next to the model it saves, and what the features
plugin costs next to a Python model that does nothing, side by side in one run against a real
tritonserver (and a real redis-server for the Redis variants). `test_features_pipeline` (its own run and
section of the results) puts the features plugin in front of SMALL_MLP, as an ensemble and with the
plugin's `model:` (in process and through BLS), against SMALL_MLP alone.

1. Cache: COMPUTE_MLP (1024-4096-4096-16, repoforge.modelgen; ONNX through repoforge's CPU runner)
   measured directly, then through `result_cache` in memory and in Redis. perf_analyzer sends the
   same random tensor every time, so after the first request every request through a cache is a hit
   (checked on /metrics). Goal: cache-hit p50 / model p50 <= 0.2.
2. Features: the `features` plugin of examples/plugins, without its lookup (8 ops, 28 outputs) and
   with it (11 ops, 31 outputs, one Redis MGET per batch; perf_analyzer's random user ids are not in
   Redis, so every row takes the defaults), against `noop` -- a Python model with the same inputs and
   the same FEATURES output that reads its inputs and answers zeros -- at batch 1 and batch 64
   (perf_analyzer -b). The overhead is features p50 - noop p50 per request (and per row). Strings are
   16 random bytes (an id); the same pair is also measured with perf_analyzer's default 128 bytes,
   because the hash ops cost grows with string length.

Everything is perf_analyzer over gRPC at concurrency 1 (the latency of one request). Every round
measures every contender once (order rotated per round); medians and ranges are over rounds, and
each ratio is taken within a round. Not part of CI.

    .venv/bin/pytest bench/test_plugins.py::test_plugins_side_by_side -s   # about 3-4 minutes on 2 cores
    .venv/bin/pytest bench/test_plugins.py::test_features_pipeline -s      # about 4 minutes (5 rounds)
    .venv/bin/python bench/test_plugins.py [--rounds 3] [--interval-ms 1000]

Both print the tables and rewrite bench/PLUGINS_RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _serving_helpers as h
import pytest

RESULTS = h.HERE / "PLUGINS_RESULTS.md"
ROOT = h.ROOT
CACHE_GOAL = 0.2

NOOP_MODEL = '''"""Benchmark baseline: the features plugin's inputs and output, no work (reads inputs, answers zeros)."""
import numpy as np
import triton_python_backend_utils as pb_utils

INPUTS = {inputs!r}
DIM = {dim}


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            rows = [pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in INPUTS]
            zeros = np.zeros((rows[0].shape[0], DIM), dtype=np.float32)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("FEATURES", zeros)]))
        return out
'''

SPEC = """version: 1
repository: plugins-bench
defaults:
  max_batch_size: 64
  dynamic_batching: {{max_queue_delay_us: 0}}
  instance_groups: [{{kind: cpu, count: 1}}]
models:
  - name: compute
    format: onnx
    path: {compute}
    response_cache: false
  - name: compute_cached
    format: python
    plugin: {{kind: result_cache, model: compute, max_entries: 1000, ttl_s: 600}}
  - name: compute_cached_redis
    format: python
    plugin: {{kind: result_cache, model: compute, backend: redis, ttl_s: 600, near_cache_entries: 0, redis: {{url: {redis_url}, prefix: "bench:"}}}}
  - name: compute_cached_near
    format: python
    plugin: {{kind: result_cache, model: compute, backend: redis, ttl_s: 600, redis: {{url: {redis_url}, prefix: "bench-near:"}}}}
  - name: compute_cached_miss
    format: python
    plugin: {{kind: result_cache, model: compute, max_entries: 1, ttl_s: 600}}
  - name: compute_cached_miss_bls
    format: python
    plugin: {{kind: result_cache, model: compute, max_entries: 1, ttl_s: 600, in_process: false}}
  - name: small
    format: onnx
    path: {small}
    response_cache: false
  - name: small_cached_miss
    format: python
    plugin: {{kind: result_cache, model: small, max_entries: 1, ttl_s: 600}}
  - name: small_cached_miss_bls
    format: python
    plugin: {{kind: result_cache, model: small, max_entries: 1, ttl_s: 600, in_process: false}}
  - name: feats
    format: python
    plugin:
{feats}
  - name: feats_redis
    format: python
    plugin:
{feats_redis}
  - name: noop
    format: python
    path: noop.py
    inputs: [{noop_inputs}]
    outputs: [{{name: FEATURES, dtype: FP32, dims: [{dim}]}}]
"""

CACHE = ["compute", "compute_cached", "compute_cached_redis", "compute_cached_near"]
#: Misses: one LRU entry and perf_analyzer alternating two inputs (write_miss_data), so every request misses
#: and goes to the model -- in the cache's stub (default) or through BLS (`in_process: false`). Each target is
#: measured next to its two caches (a block), because the host's noise moves a 3 ms model by more than 0.3 ms
#: within a minute; SMALL_MLP (tens of µs) shows the fixed cost of a miss without the large model's noise.
MISS_BLOCKS = {t: [t, f"{t}_cached_miss", f"{t}_cached_miss_bls"] for t in ("compute", "small")}
MISS = [m for block in MISS_BLOCKS.values() for m in block[1:]]
MISS_GOAL_MS = 0.3
FEATS = ["noop", "feats", "feats_redis"]
#: The same two without lookup, fed perf_analyzer's default 128-byte random strings instead of 16-byte ones.
LONG = ["noop@s128", "feats@s128"]
BATCHES = (1, 64)
#: perf_analyzer --string-length: 16 bytes is an id-sized string (perf_analyzer's default is 128).
STRING_LENGTH = 16


# --------------------------------------------------------------------------------------------
# Setup
# --------------------------------------------------------------------------------------------
def _yaml_block(obj: Any, indent: int) -> str:
    import yaml

    text = yaml.safe_dump(obj, sort_keys=False, default_flow_style=None, width=200)
    return "\n".join(" " * indent + line for line in text.splitlines())


def write_spec(root: Path, redis_url: str) -> Path:
    """The bench spec (+ ONNX model and noop.py) under ``root``."""
    from repoforge.spec import load_spec
    from repoforge.spec.plugins import FeaturesPlugin, output_dim

    example = load_spec(ROOT / "examples" / "plugins" / "spec.yaml").spec
    fp = next(m.plugin for m in example.models if isinstance(m.plugin, FeaturesPlugin))
    base = fp.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    base["kind"] = "features"
    lookup = base.pop("lookup")
    lookup["url"] = redis_url
    lookup.pop("url_env", None)  # the bench's own Redis, whatever the environment says
    with_lookup = {**base, "lookup": lookup}
    looked_up = {f["name"] for f in lookup["fields"]} | {lookup.get("found")}
    base["features"] = [op for op in base["features"]  # no lookup: the ops on looked-up columns go too
                        if not ({op.get("column"), *op.get("columns", [])} & looked_up)]  # fmt: skip
    dim = output_dim(FeaturesPlugin.model_validate(base))
    models = h.make_models(root, ("compute", "small"))
    dtypes = {c.name: c.dtype for c in fp.columns}
    (root / "noop.py").write_text(NOOP_MODEL.format(inputs=list(dtypes), dim=dim))
    noop_inputs = ", ".join(f"{{name: {n}, dtype: {d}, dims: [1]}}" for n, d in dtypes.items())
    spec = root / "spec.yaml"
    spec.write_text(SPEC.format(compute=models["compute"], small=models["small"], redis_url=redis_url, feats=_yaml_block(base, 6),
                                feats_redis=_yaml_block(with_lookup, 6), noop_inputs=noop_inputs, dim=dim))  # fmt: skip
    return spec


def _metrics(url: str) -> dict[str, float]:
    from repoforge.metrics import scrape

    return scrape(url, "repoforge_")


def cache_counts(metrics_url: str, model: str) -> tuple[float, float]:
    m = _metrics(metrics_url)
    return (m.get(f'repoforge_cache_requests_total{{model="{model}",result="hit"}}', 0.0),
            m.get(f'repoforge_cache_requests_total{{model="{model}",result="miss"}}', 0.0))  # fmt: skip


class LoadSampler:
    """1-minute load average every 2 s while the benchmark runs (other jobs share the machine)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(2.0)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------
def write_miss_data(path: Path, config: Any) -> Path:
    """perf_analyzer --input-data with two different random rows: requests alternate between them, so a
    one-entry LRU misses every time."""
    import json

    import numpy as np

    rng = np.random.default_rng(0)
    steps = [{t.name: rng.random(int(np.prod(list(t.dims)))).astype(np.float32).round(6).tolist() for t in config.input}
             for _ in range(2)]  # fmt: skip
    path.write_text(json.dumps({"data": steps}))
    return path


def measure(grpc_url: str, model: str, config: Any, batch: int, interval_ms: int, string_length: int,
            input_data: Path | None = None) -> Any:  # fmt: skip
    """One perf_analyzer point at concurrency 1 (random data, generated once: every request is the same,
    unless `input_data` gives perf_analyzer several rows to cycle through)."""
    from repoforge.perf.analyzer import PerfError, PerfOptions, run

    extra = ["--string-length", str(string_length)] + (["--input-data", str(input_data)] if input_data else [])
    opts = PerfOptions(model=model, url=grpc_url, concurrency=[1], batch_size=batch, measurement_interval_ms=interval_ms,
                       stability_percentage=30.0, max_trials=5, extra_args=extra)  # fmt: skip
    try:
        p = run(opts, config)[0]
        p.stable = True  # type: ignore[attr-defined]
    except PerfError as exc:
        if "stable measurement" not in str(exc):
            raise
        opts.stability_percentage = 1000.0
        p = run(opts, config)[0]
        p.stable = False  # type: ignore[attr-defined]
    return p


def run_bench(rounds: int = 3, interval_ms: int = 1000, write: bool = True) -> dict[str, Any]:
    from repoforge.build import build
    from repoforge.servers.redis import RedisServer
    from repoforge.servers.triton import TritonServer

    started = time.monotonic()
    load_before = os.getloadavg()
    # `compute` is measured once a round, in its miss block (the hit ratios use that measurement)
    # `compute` is measured once a round, in its miss block (the hit ratios use that measurement too)
    blocks = [[(m, 1) for m in CACHE[1:]]] + [[(m, 1) for m in b] for b in MISS_BLOCKS.values()]
    blocks += [[(m, b) for m in FEATS + LONG] for b in BATCHES]
    lat: dict[tuple[str, int], list[float]] = defaultdict(list)
    p99: dict[tuple[str, int], list[float]] = defaultdict(list)
    unstable: set[tuple[str, int]] = set()
    per_round: list[dict[tuple[str, int], float]] = []
    hits: dict[str, tuple[float, float]] = {}
    load = LoadSampler()
    with h.workdir("repoforge-plugins-bench-") as root, RedisServer() as redis_server:
        import redis

        spec = write_spec(root, redis_url=redis_server.url)
        repo = build(spec, root / "repo", device="cpu").output
        with TritonServer(repo, workdir=root / "triton") as server:
            configs = {m: h.model_config(server.http_url, m) for m in CACHE + MISS + ["small"] + FEATS}
            miss_data = {m: write_miss_data(root / f"{t}-miss.json", configs[t])
                         for t, b in MISS_BLOCKS.items() for m in b[1:]}  # fmt: skip
            before = {m: cache_counts(server.metrics_url, m) for m in CACHE[1:] + MISS}
            load.start()
            for r in range(rounds):
                # every block measured together, its order rotated per round (A B C, B C A, ...)
                order = [j for b in blocks for j in b[r % len(b) :] + b[: r % len(b)]]
                this: dict[tuple[str, int], float] = {}
                for label, batch in order:
                    model, _, s = label.partition("@s")
                    p = measure(server.grpc_url, model, configs[model], batch, interval_ms, int(s or STRING_LENGTH),
                                miss_data.get(model))  # fmt: skip
                    lat[(label, batch)].append(p.p50_ms)
                    p99[(label, batch)].append(p.p99_ms)
                    if not p.stable:
                        unstable.add((label, batch))
                    this[(label, batch)] = p.p50_ms
                    print(f"  round {r + 1} {label:<22} b{batch:<3} p50 {p.p50_ms:8.3f} ms  p99 {p.p99_ms:8.3f} ms"
                          f"{'' if p.stable else ' (unstable)'}  load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
                per_round.append(this)
            load.stop()
            for m in CACHE[1:] + MISS:
                after = cache_counts(server.metrics_url, m)
                hits[m] = (after[0] - before[m][0], after[1] - before[m][1])
            redis_keys = len(redis.Redis.from_url(redis_server.url).keys("bench*:*"))
            tritonserver_version = h.get_json(f"http://{server.http_url}/v2").get("version")
    result = {
        "rounds": rounds, "interval_ms": interval_ms, "lat": lat, "p99": p99, "unstable": unstable,
        "per_round": per_round, "hits": hits, "redis_keys": redis_keys, "load_before": load_before,
        "load_after": os.getloadavg(), "load_samples": load.samples, "seconds": time.monotonic() - started,
        "machine": h.machine_text(tritonserver_version),
    }  # fmt: skip
    result["ratios"] = ratios(result)
    text = report(result)
    kept = _sections(RESULTS)
    print("\n" + text)
    if write:
        RESULTS.write_text(text + "\n", encoding="utf-8")
        for section, block in kept.items():  # the pipeline bench's section, measured by its own run
            h.update_results(section, block, path=RESULTS)
        print(f"\nwrote {RESULTS}")
    return result


def ratios(result: dict[str, Any]) -> dict[str, tuple[float, list[float]]]:
    """name -> (median over rounds of the per-round value, per-round values)."""
    out: dict[str, tuple[float, list[float]]] = {}
    rounds = result["per_round"]

    def add(name: str, per: list[float]) -> None:
        out[name] = (h.med(per), per)

    for m in CACHE[1:]:
        add(f"{m} hit p50 / compute p50", [r[(m, 1)] / r[("compute", 1)] for r in rounds])
        # what a hit costs whatever the model: above the floor of any Python model (the no-op)
        add(f"{m} hit p50 - noop p50 µs", [(r[(m, 1)] - r[("noop", 1)]) * 1000 for r in rounds])
    for t, block in MISS_BLOCKS.items():
        for m in block[1:]:
            add(f"{m} miss p50 - {t} p50 µs", [(r[(m, 1)] - r[(t, 1)]) * 1000 for r in rounds])
    for b in BATCHES:
        for m, base in [(m, "noop") for m in FEATS[1:]] + [("feats@s128", "noop@s128")]:
            add(f"{m} p50 / {base} p50 @b{b}", [r[(m, b)] / r[(base, b)] for r in rounds])
            add(f"{m} overhead µs/request @b{b}", [(r[(m, b)] - r[(base, b)]) * 1000 for r in rounds])
    return out


def report(result: dict[str, Any]) -> str:
    lat, p99, ra = result["lat"], result["p99"], result["ratios"]
    samples = result["load_samples"] or [float("nan")]
    load_line = (f"1-minute load average during the run: {min(samples):.1f}–{max(samples):.1f} (median {h.med(samples):.1f}); "
                 f"before {result['load_before'][0]:.1f}, after {result['load_after'][0]:.1f}. "
                 "The 2 vCPUs are shared with other engineers' benchmarks, so read the ranges, not only the medians.")  # fmt: skip
    lines = [
        "# Plugin benchmark results",
        "",
        (
            f"Measured by `bench/test_plugins.py` in one run ({result['rounds']} rounds, {result['seconds']:.0f} s, "
            f"perf_analyzer gRPC, concurrency 1, {result['interval_ms']} ms windows, stability 30 %)."
        ),
        "",
        f"Machine: {result['machine']}.",
        "",
        load_line,
        "",
        "## Ratios (median over rounds; per-round range in brackets)",
        "",
    ]
    t = h.Table(["ratio", "value", "goal", "met"])
    for m in CACHE[1:]:
        name = f"{m} hit p50 / compute p50"
        v, per = ra[name]
        above, _ = ra[f"{m} hit p50 - noop p50 µs"]
        t.add(name, f"{v:.3f} ({h.rng(per, '{:.3f}')}); a hit is {above:+,.0f} µs above a no-op Python model",
              f"<= {CACHE_GOAL}", "yes" if v <= CACHE_GOAL else "NO")  # fmt: skip
    for tm, m in [(tm, m) for tm, block in MISS_BLOCKS.items() for m in block[1:]]:
        v, per = ra[f"{m} miss p50 - {tm} p50 µs"]
        t.add(f"{m} miss p50 - {tm} p50", f"{v:+,.0f} µs ({h.rng(per, '{:+,.0f}')})", f"<= {MISS_GOAL_MS * 1000:.0f} µs",
              "yes" if v <= MISS_GOAL_MS * 1000 else "NO")  # fmt: skip
    for b in BATCHES:
        for m, base in [(m, "noop") for m in FEATS[1:]] + [("feats@s128", "noop@s128")]:
            v, per = ra[f"{m} p50 / {base} p50 @b{b}"]
            ov, ovper = ra[f"{m} overhead µs/request @b{b}"]
            t.add(f"{m} p50 / {base} p50 @b{b}", f"{v:.2f} ({h.rng(per, '{:.2f}')}); overhead {ov:+,.0f} µs/request "
                  f"({h.rng(ovper, '{:+,.0f}')}) = {ov / b:+,.1f} µs/row", "(no goal set)", "")  # fmt: skip
    lines += [t.markdown(), ""]
    lines += ["## Latencies (ms, median over rounds; range in brackets; * = a round with no 3 stable windows)", ""]
    t2 = h.Table(["model", "batch", "what", "p50", "p99"])
    what = {
        "compute": "COMPUTE_MLP direct (ONNX, repoforge CPU runner)",
        "compute_cached": "result_cache (memory) → compute: hits",
        "compute_cached_redis": "result_cache (Redis, near cache off) → compute: hits, each a Redis round trip",
        "compute_cached_near": "result_cache (Redis, default near cache) → compute: hits",
        "compute_cached_miss": "result_cache (memory) → compute: every request a miss, compute in the cache's stub",
        "compute_cached_miss_bls": "result_cache (memory, `in_process: false`) → compute: every request a miss, via BLS",
        "small": "SMALL_MLP direct (ONNX, repoforge CPU runner)",
        "small_cached_miss": "result_cache (memory) → small: every request a miss, small in the cache's stub",
        "small_cached_miss_bls": "result_cache (memory, `in_process: false`) → small: every request a miss, via BLS",
        "noop": "Python model: same inputs/output as feats, answers zeros",
        "feats": "features plugin (examples/plugins ops), no lookup",
        "feats_redis": "features plugin + Redis lookup (one MGET per batch)",
        "noop@s128": "noop, 128-byte strings",
        "feats@s128": "feats, 128-byte strings",
    }
    names = CACHE + [m for b in MISS_BLOCKS.values() for m in b if m != "compute"] + FEATS + LONG
    for key in sorted(lat, key=lambda k: (k[1], names.index(k[0]))):
        star = "*" if key in result["unstable"] else ""
        t2.add(f"`{key[0]}`{star}", key[1], what[key[0]], f"{h.med(lat[key]):.3f} ({h.rng(lat[key], '{:.3f}')})",
               f"{h.med(p99[key]):.3f} ({h.rng(p99[key], '{:.3f}')})")  # fmt: skip
    lines += [t2.markdown(), ""]
    lines += [
        (
            "Notes: result_cache hits are measured with perf_analyzer repeating one random input (the first request "
            "is the only miss). `feats_redis` is compared with the same `noop` (28 outputs; it returns 31). "
            f"Random strings are {STRING_LENGTH} bytes unless marked `@s128`. Overhead = features p50 − noop p50 "
            "within a round; negative values mean the difference is below the noise. The cache goal is relative "
            "to `compute`'s p50, which falls when the model gets faster: since `intra_op_threads: auto` gave it 2 "
            "threads its p50 is about half of the 1-thread runs, so the same hit cost is a larger share of it."
        ),
        "",
    ]
    hop, _ = ra["small_cached_miss_bls miss p50 - small p50 µs"]
    local, _ = ra["small_cached_miss miss p50 - small p50 µs"]
    lines += [
        (
            "Where a miss's time goes (issue 26 item 2: a miss <= 0.3 ms over the model alone). Measured on SMALL_MLP, "
            "whose tens of µs of compute leave the plugin's own cost visible; COMPUTE_MLP's p50 moves by more than "
            "0.3 ms between rounds on this host, so its miss rows only show that a miss in process is not slower than "
            f"the model alone. Through BLS a miss costs {hop:+,.0f} µs over the model: the cache's Python work (hash the "
            "inputs, LRU get/put, build the response: a hit costs this much above a no-op Python model, see the hit "
            "rows) plus one BLS round trip (the request goes from the cache's stub through the core's scheduler to "
            f"the model's stub and back). In process (`in_process: true`, the default) it costs {local:+,.0f} µs: the "
            f"BLS hop, about {hop - local:,.0f} µs, is gone and the Python work is what remains. In process applies "
            "where the router's does (`runtime/plugins/local_model.py`: an ONNX model of the same build on repoforge's "
            "onnxruntime runner, CPU); any other target still pays the hop. Those misses do not appear in the "
            "target's own Triton statistics, and each cache instance holds its own copy of the model. Here the features "
            "plugin is measured against a no-op Python model (its overhead is its ops' Python work); in front of a "
            "model it is measured by `test_features_pipeline`, in the section below."
        ),
        "",
    ]
    hit_text = "; ".join(f"`{m}` {int(hv):,} hits / {int(mv):,} misses" for m, (hv, mv) in result["hits"].items())
    lines += [
        f"Cache outcomes over the run (from /metrics): {hit_text}; Redis keys written: {result['redis_keys']}.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
@pytest.mark.timeout(900)  # about 4-5 minutes; more on a loaded host than pytest's default 300 s
def test_plugins_side_by_side() -> None:
    rounds = int(os.environ.get("REPOFORGE_BENCH_ROUNDS", "3"))
    result = run_bench(rounds=rounds, interval_ms=int(os.environ.get("REPOFORGE_BENCH_INTERVAL_MS", "1000")))
    for m in MISS:
        hv, mv = result["hits"][m]
        assert mv > 0 and hv <= rounds + 1, f"{m}: {hv} hits, {mv} misses: perf_analyzer's requests were repeated"
    for m in CACHE[1:]:
        hv, mv = result["hits"][m]
        assert hv > 0 and mv <= rounds + 1, f"{m}: {hv} hits, {mv} misses: perf_analyzer's requests were not repeated"
    if os.environ.get("REPOFORGE_BENCH_STRICT") == "1":  # the goal as an assertion (noisy shared hosts: off by default)
        for m in CACHE[1:]:
            v = result["ratios"][f"{m} hit p50 / compute p50"][0]
            assert v <= CACHE_GOAL, f"{m}: cache hit / model = {v:.3f} > {CACHE_GOAL}"


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--interval-ms", type=int, default=1000)
    p.add_argument("--no-write", action="store_true", help="do not rewrite bench/PLUGINS_RESULTS.md")
    a = p.parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    run_bench(rounds=a.rounds, interval_ms=a.interval_ms, write=not a.no_write)


# --------------------------------------------------------------------------------------------
# Features in front of a model (issue 26 item 2): `test_features_pipeline`, its own run and section
# --------------------------------------------------------------------------------------------
PIPE_SECTION = "features-pipeline"
#: user_id hashed into 236 one-hot buckets instead of 8: the example's other ops give 20 values, so the row is
#: 256 wide and the model behind it is SMALL_MLP itself (256-512-512-16).
PIPE_HASH_BUCKETS = 236
PIPE_SPEC = """version: 1
repository: features-pipeline-bench
defaults:
  max_batch_size: 64
  dynamic_batching: {{max_queue_delay_us: 0}}
  instance_groups: [{{kind: cpu, count: 1}}]
models:
  - name: small
    format: onnx
    path: {small}
    response_cache: false
  - name: feats
    format: python
    plugin:
{feats}
  - name: pipe
    format: ensemble
    steps:
      - {{model: feats, inputs: {{{mapping}}}, outputs: {{FEATURES: f}}}}
      - {{model: small, inputs: {{x: f}}, outputs: {{y: y}}}}
  - name: fused
    format: python
    plugin:
{fused}
  - name: fused_bls
    format: python
    plugin:
{fused_bls}
"""
#: measured side by side, order rotated per round: SMALL_MLP alone, then features in front of it three ways
PIPE = ["small", "pipe", "fused", "fused_bls"]
PIPE_WHAT = {
    "small": "SMALL_MLP alone (ONNX, repoforge CPU runner): 256 random floats in",
    "pipe": "before: ensemble feats → small (the only way until now): two Python stubs",
    "fused": "after: features plugin with `model: small`, small run in the plugin's stub (default)",
    "fused_bls": "features plugin with `model: small, in_process: false`: small through BLS",
}


def _sections(path: Path) -> dict[str, str]:
    """The `<!-- name:start -->` blocks of a results file (their markdown), to keep across a rewrite."""
    import re

    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return {m[1]: m[2] for m in re.finditer(r"<!-- (\S+):start -->\n(.*?)\n<!-- \1:end -->", text, re.DOTALL)}


def write_pipe_spec(root: Path) -> Path:
    from repoforge.spec import load_spec
    from repoforge.spec.plugins import FeaturesPlugin, output_dim

    example = load_spec(ROOT / "examples" / "plugins" / "spec.yaml").spec
    fp = next(m.plugin for m in example.models if isinstance(m.plugin, FeaturesPlugin))
    base = fp.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    base["kind"] = "features"
    lookup = base.pop("lookup")
    looked_up = {f["name"] for f in lookup["fields"]} | {lookup.get("found")}
    base["features"] = [op for op in base["features"] if not ({op.get("column"), *op.get("columns", [])} & looked_up)]
    for op in base["features"]:
        if op["op"] == "hash" and op["column"] == "user_id":
            op["buckets"] = PIPE_HASH_BUCKETS
    dim = output_dim(FeaturesPlugin.model_validate(base))
    assert dim == h.input_width("small"), f"features width {dim} is not SMALL_MLP's input"
    models = h.make_models(root, ("small",))
    mapping = ", ".join(f"{c.name}: {c.name}" for c in fp.columns)
    spec = root / "spec.yaml"
    spec.write_text(PIPE_SPEC.format(small=models["small"], feats=_yaml_block(base, 6), mapping=mapping,
                                     fused=_yaml_block({**base, "model": "small"}, 6),
                                     fused_bls=_yaml_block({**base, "model": "small", "in_process": False}, 6)))  # fmt: skip
    return spec


STAT_KINDS = ("queue", "compute_input", "compute_infer", "compute_output")


def triton_stats(http_url: str, models: Sequence[str]) -> dict[str, dict[str, float]]:
    """model -> {requests, <kind>_ns...}: Triton's cumulative per-model statistics (all versions)."""
    out: dict[str, dict[str, float]] = {}
    for m in models:
        st: dict[str, float] = defaultdict(float)
        for v in h.get_json(f"http://{http_url}/v2/models/{m}/stats")["model_stats"]:
            inf = v.get("inference_stats", {})
            st["requests"] += int(inf.get("success", {}).get("count", 0))
            st["success_ns"] += int(inf.get("success", {}).get("ns", 0))
            for k in STAT_KINDS:
                st[f"{k}_ns"] += int(inf.get(k, {}).get("ns", 0))
        out[m] = dict(st)
    return out


def run_pipeline_bench(rounds: int = 5, interval_ms: int = 1000, write: bool = True) -> dict[str, Any]:
    from repoforge.build import build
    from repoforge.servers.triton import TritonServer

    started = time.monotonic()
    load_before = os.getloadavg()
    pts: dict[tuple[str, int], list[Any]] = defaultdict(list)
    # per c=1 point: Triton's statistics of every model over it (µs per request of the measured model)
    stats: dict[str, list[dict[str, dict[str, float]]]] = defaultdict(list)
    load = LoadSampler()
    extra = ["--string-length", str(STRING_LENGTH)]
    with h.workdir("repoforge-features-pipeline-") as root:
        repo = build(write_pipe_spec(root), root / "repo", device="cpu").output
        with TritonServer(repo, workdir=root / "triton") as server:
            log = Path(server.log_path).read_text() if server.log_path else ""
            assert "fused: the features feed small in process" in log, "fused did not run small in process"
            configs = {m: h.model_config(server.http_url, m) for m in PIPE}
            every = [*PIPE, "feats"]
            load.start()
            for r in range(rounds):
                order = PIPE[r % len(PIPE) :] + PIPE[: r % len(PIPE)]
                for conc in (1, 16):
                    for m in order:
                        s0 = triton_stats(server.http_url, every)
                        p = h.measure(server.http_url, server.grpc_url, m, conc, interval_ms=interval_ms,
                                      config=configs[m], extra_args=extra)  # fmt: skip
                        s1 = triton_stats(server.http_url, every)
                        pts[(m, conc)].append(p)
                        if conc == 1:
                            stats[m].append({n: {k: s1[n][k] - s0[n].get(k, 0.0) for k in s1[n]} for n in every})
                        print(f"  round {r + 1} c{conc:<2} {m:<10} p50 {p.p50_ms:7.3f} ms  {p.throughput:8,.0f} infer/s"
                              f"{'' if p.stable else ' (unstable)'}  load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
            load.stop()
            tritonserver_version = h.get_json(f"http://{server.http_url}/v2").get("version")
    ops = ops_side_by_side()
    result = {"rounds": rounds, "interval_ms": interval_ms, "pts": pts, "stats": stats, "ops": ops, "load_before": load_before,
              "load_after": os.getloadavg(), "load_samples": load.samples, "seconds": time.monotonic() - started,
              "machine": h.machine_text(tritonserver_version)}  # fmt: skip
    text = pipe_report(result)
    print("\n" + text)
    if write:
        h.update_results(PIPE_SECTION, text, path=RESULTS)
        print(f"\nwrote {RESULTS}")
    return result


def _per_request_us(st: dict[str, dict[str, float]], measured: str) -> dict[str, float]:
    """µs per request of the measured model, from Triton's statistics over one point: each model's
    queue + compute, divided by the measured model's requests."""
    n = max(1.0, st[measured].get("requests", 0.0))
    out = {}
    for m, v in st.items():
        if v.get("requests", 0.0) > 0:
            out[m] = sum(v.get(f"{k}_ns", 0.0) for k in STAT_KINDS) / n / 1000
    return out


def pipe_report(result: dict[str, Any]) -> str:
    pts, rounds = result["pts"], result["rounds"]
    samples = result["load_samples"] or [float("nan")]
    p50 = {m: [p.p50_ms for p in pts[(m, 1)]] for m in PIPE}
    thr = {m: [p.throughput for p in pts[(m, 16)]] for m in PIPE}
    lines = [
        "## Features in front of a model (issue 26 item 2)",
        "",
        f"Measured by `bench/test_plugins.py::test_features_pipeline` in one run ({rounds} rounds, "
        f"{result['seconds']:.0f} s): one tritonserver serving the four models below side by side, perf_analyzer "
        f"gRPC, 1 row per request, {result['interval_ms']} ms windows, random data ({STRING_LENGTH}-byte strings); "
        "every round measures each model at concurrency 1 then 16, the order rotated per round.",
        "",
        f"Machine: {result['machine']}.",
        "",
        f"1-minute load average during the run: {min(samples):.1f}–{max(samples):.1f} (median {h.med(samples):.1f}); "
        f"before {result['load_before'][0]:.1f}, after {result['load_after'][0]:.1f}.",
        "",
        "The features are examples/plugins' ops without the lookup, user_id hashed into "
        f"{PIPE_HASH_BUCKETS} one-hot buckets so the row is 256 wide: the model is SMALL_MLP (256-512-512-16) itself.",
        "",
    ]
    t = h.Table(["model", "what", "p50 ms @c1", "p50 − small µs (goal ≤ 300)", "infer/s @c16", "÷ small @c16"])
    for m in PIPE:
        add = [(a - b) * 1000 for a, b in zip(p50[m], p50["small"], strict=True)]
        ratio = [a / b for a, b in zip(thr[m], thr["small"], strict=True)]
        star = "*" if any(not p.stable for p in pts[(m, 1)] + pts[(m, 16)]) else ""
        goal = "" if m == "small" else (" yes" if h.med(add) <= 300 else " NO")
        t.add(f"`{m}`{star}", PIPE_WHAT[m], f"{h.med(p50[m]):.3f} ({h.rng(p50[m], '{:.3f}')})",
              "" if m == "small" else f"{h.med(add):+,.0f} ({h.rng(add, '{:+,.0f}')}){goal}",
              f"{h.med(thr[m]):,.0f} ({h.rng(thr[m])})",
              "" if m == "small" else f"{h.med(ratio):.2f} ({h.rng(ratio, '{:.2f}')})")  # fmt: skip
    lines += [t.markdown(), "", "Medians over rounds, per-round range in brackets; the differences and ratios are "
              "taken within a round. * = a point with no 3 windows within 30 %.", ""]  # fmt: skip
    # where the time goes: Triton's statistics at c=1, and CPU per request by process at c=16
    lines += ["Where the time goes at concurrency 1 (Triton's per-model statistics over each point: queue + compute "
              "per request of the measured model, µs, median over rounds; `feats`/`small` under `pipe` are its "
              "steps; an in-process `small` adds nothing to Triton's `small`):", ""]  # fmt: skip
    t2 = h.Table(["measured", "p50 µs", *[f"`{n}` µs" for n in [*PIPE, "feats"]]])
    for m in PIPE:
        per = [_per_request_us(st, m) for st in result["stats"][m]]
        cells = []
        for n in [*PIPE, "feats"]:
            vals = [d[n] for d in per if n in d]
            cells.append(f"{h.med(vals):,.0f}" if vals and len(vals) == len(per) else "")
        t2.add(f"`{m}`", f"{h.med(p50[m]) * 1000:,.0f}", *cells)
    lines += [t2.markdown(), ""]
    lines += ["CPU per request at concurrency 16 (µs of each process's CPU per request, median over rounds; "
              "client = perf_analyzer, server = tritonserver, stub = the Python backend stubs):", ""]  # fmt: skip
    t3 = h.Table(["measured", "infer/s", "host busy", "client µs", "server µs", "stub µs", "total µs"])
    for m in PIPE:
        ps = [p for p in pts[(m, 16)] if p.cpu and p.throughput]

        def us(label: str, ps: list[Any] = ps) -> float:
            return h.med([p.cpu.get(label, 0.0) / p.throughput * 1e6 for p in ps])

        tot = us("client") + us("server") + us("stub")
        t3.add(f"`{m}`", f"{h.med([p.throughput for p in ps]):,.0f}", f"{h.med([p.cpu['busy'] for p in ps]):.2f}",
               f"{us('client'):,.0f}", f"{us('server'):,.0f}", f"{us('stub'):,.0f}", f"{tot:,.0f}")  # fmt: skip
    lines += [t3.markdown(), ""]

    def st(m: str, n: str) -> float:
        vals = [d[n] for d in (_per_request_us(x, m) for x in result["stats"][m]) if n in d]
        return h.med(vals) if vals else float("nan")

    def cpu(m: str, label: str) -> float:
        return h.med([p.cpu.get(label, 0.0) / p.throughput * 1e6 for p in pts[(m, 16)] if p.cpu and p.throughput])

    add = {m: h.med([(a - b) * 1000 for a, b in zip(p50[m], p50["small"], strict=True)]) for m in PIPE[1:]}
    lines += [
        f"Where the time goes. The ensemble (`pipe`, {add['pipe']:+,.0f} µs) runs two Python stubs one after the "
        f"other: Triton counts {st('pipe', 'feats'):,.0f} µs per request in `feats` and {st('pipe', 'small'):,.0f} µs "
        f"in `small`, against {st('small', 'small'):,.0f} µs for `small` alone, and at concurrency 16 it costs "
        f"{cpu('pipe', 'server') - cpu('small', 'server'):+,.0f} µs of tritonserver CPU and "
        f"{cpu('pipe', 'stub') - cpu('small', 'stub'):+,.0f} µs of stub CPU per request more than `small` (the "
        "ensemble scheduler's second request, and a second stub's shared-memory round trip). With `model:` "
        f"(`fused`, {add['fused']:+,.0f} µs) one stub computes the features and runs SMALL_MLP "
        f"({st('fused', 'fused'):,.0f} µs per request in `fused`): the second hop is gone, and what remains over "
        "the model alone is the features' own Python work (the ops line below) and their raw inputs (four tensors, two "
        f"of them strings, where `small` takes one). Through BLS (`fused_bls`, {add['fused_bls']:+,.0f} µs) the "
        "model's request goes back through the core to `small`'s stub "
        f"({'more' if add['fused_bls'] > add['pipe'] else 'no more'} than the ensemble's hop), so `in_process: false` "
        "is for a model that cannot "
        "run in process (the router's rules: `runtime/plugins/local_model.py`). Rows run in process do not appear in "
        "`small`'s own Triton statistics.",
        "",
    ]
    ops = result.get("ops")
    if ops:
        ratio = [a / b for a, b in zip(ops["after"], ops["before"], strict=True)]
        lines += [
            f"The features' ops alone, one row, in process (`ops_side_by_side`: today's ops against those of {OPS_BEFORE}, "
            f"before they were trimmed, alternating in one process, {len(ratio)} rounds): before "
            f"{h.med(ops['before']):,.0f} µs ({h.rng(ops['before'])}), after {h.med(ops['after']):,.0f} µs "
            f"({h.rng(ops['after'])}), after ÷ before {h.med(ratio):.2f} ({h.rng(ratio, '{:.2f}')}); same outputs. "
            "Every row above already runs today's ops: before both changes, features in front of a model was `pipe` "
            "with the old ops, about the difference of these two figures slower than `pipe` here.",
            "",
        ]
    return "\n".join(lines)


@pytest.mark.timeout(900)  # about 4 minutes (5 rounds), more on a loaded host
def test_features_pipeline() -> None:
    rounds = int(os.environ.get("REPOFORGE_BENCH_ROUNDS", "5"))
    result = run_pipeline_bench(rounds=rounds, interval_ms=int(os.environ.get("REPOFORGE_BENCH_INTERVAL_MS", "1000")))
    assert all(len(result["pts"][(m, c)]) == rounds for m in PIPE for c in (1, 16))


#: the commit before the ops were trimmed (f76a4f1): its runtime is loaded beside today's for `ops_side_by_side`
OPS_BEFORE = "786e9ab"


def ops_side_by_side(rounds: int = 7, n: int = 2000) -> dict[str, list[float]] | None:
    """µs per 1-row `transform` of the bench's features, today's ops against OPS_BEFORE's, alternating A B A B in
    one process (the runtime package is self-contained: its old copy is loaded from git under another name).
    None when git cannot show that commit (e.g. a shallow clone)."""
    import importlib
    import subprocess
    import tempfile

    import numpy as np

    from repoforge.runtime.config import parse_plugin_config

    with tempfile.TemporaryDirectory(prefix="repoforge-ops-") as d:
        spec = write_pipe_spec(Path(d))
        from repoforge.spec import load_spec

        plugin = next(m.plugin for m in load_spec(spec).spec.models if m.name == "feats")
        cfg_json = plugin.model_dump_json()
        pkg = Path(d) / "oldrt"
        try:
            tree = subprocess.run(["git", "-C", str(ROOT), "archive", OPS_BEFORE, "src/repoforge/runtime"],
                                  capture_output=True, check=True, timeout=60).stdout  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return None
        import io
        import tarfile

        with tarfile.open(fileobj=io.BytesIO(tree)) as tar:
            tar.extractall(pkg, filter="data")
        sys.path.insert(0, str(pkg / "src" / "repoforge"))
        try:
            old_mod = importlib.import_module("runtime.pipeline")
            old_cfg = importlib.import_module("runtime.config")
        finally:
            sys.path.pop(0)
        from repoforge.runtime.pipeline import FeaturePipeline

        new = FeaturePipeline(parse_plugin_config(cfg_json))
        old = old_mod.FeaturePipeline(old_cfg.parse_plugin_config(cfg_json))
        feed = {"user_id": np.array([[b"u-4f1c2a9e7b3d5c6"]], dtype=object), "age": np.array([[33.0]], np.float32),
                "city": np.array([[b"paris"]], dtype=object), "ts": np.array([[1_700_000_000]], np.int64)}  # fmt: skip
        assert np.array_equal(new.transform(feed), old.transform(feed))
        out: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(rounds):
            for label, p in (("before", old), ("after", new)):
                for _ in range(200):
                    p.transform(feed)
                t0 = time.perf_counter()
                for _ in range(n):
                    p.transform(feed)
                out[label].append((time.perf_counter() - t0) / n * 1e6)
        return out


if __name__ == "__main__":
    main()
