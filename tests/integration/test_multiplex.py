"""Hundreds of models on one server (issue 25): 200 tiny ONNX models built into one repository with `serving:`,
`repoforge gateway` on the build (it starts tritonserver with explicit model control), real HTTP clients.

The load runs for DURATION_S = 20 s once the gateway holds 20 models (not the issue's 60 s, unless
REPOFORGE_MUX_TEST_SECONDS=60), to keep CI within its budget on a 2-core host where each cold load takes about 2 s
(one Python stub process per model). Every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from google.protobuf import text_format
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import model_config_pb2 as mc

from repoforge import modelgen
from repoforge.build import build
from repoforge.gateway.multiplex import tree_rss
from repoforge.servers.ports import free_port
from repoforge.servers.process import ManagedProcess

pytestmark = pytest.mark.integration

N_MODELS = 200
MAX_LOADED = 20
CLIENTS = 16
# with the cache full; the issue says 60 s, 20 s keeps CI under budget (REPOFORGE_MUX_TEST_SECONDS=60 runs the
# issue's length)
DURATION_S = float(os.environ.get("REPOFORGE_MUX_TEST_SECONDS", "20"))
WARMUP_S = 150.0  # at most, until MAX_LOADED models are loaded (about 2 s per cold load on a 2-core host)
ZIPF_S = 1.1
BODY = {"inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
                   {"name": "b", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 1, 1]}]}  # fmt: skip
EXPECTED = [4.0, 6.0, 8.0, 10.0]  # (a + b) * 2


def _name(i: int) -> str:
    return f"m{i:03d}"


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One spec of 200 ONNX models (one small file, 200 model entries) with `serving: {max_loaded: 20}`."""
    root = tmp_path_factory.mktemp("multiplex")
    (root / "models").mkdir()
    modelgen.save(modelgen.add_mul(4), root / "models" / "add_mul.onnx")
    lines = ["version: 1", "repository: many", f"serving: {{max_loaded: {MAX_LOADED}}}", "models:"]
    for i in range(N_MODELS):
        lines += [f"  - name: {_name(i)}", "    format: onnx", "    path: models/add_mul.onnx",
                  "    max_batch_size: 8", "    instance_groups: [{kind: cpu, count: 1}]"]  # fmt: skip
    (root / "spec.yaml").write_text("\n".join(lines) + "\n")
    build(root / "spec.yaml", root / "out", device="cpu")
    lock = json.loads((root / "out" / "repoforge.lock.json").read_text())
    assert lock["serving"]["max_loaded"] == MAX_LOADED
    # one model whose load fails in Triton (added after the build, which would refuse it)
    broken = mc.ModelConfig(name="broken", backend="no_such_backend", max_batch_size=0,
                            input=[mc.ModelInput(name="a", data_type=mc.TYPE_FP32, dims=[4])],
                            output=[mc.ModelOutput(name="y", data_type=mc.TYPE_FP32, dims=[4])])  # fmt: skip
    (root / "out" / "broken" / "1").mkdir(parents=True)
    (root / "out" / "broken" / "config.pbtxt").write_text(text_format.MessageToString(broken))
    return root / "out"


@dataclass
class Gateway:
    proc: ManagedProcess
    base: str
    server_pid: int
    server_log: Path

    def metrics(self) -> dict[str, float]:
        text = httpx.get(f"{self.base}/metrics", timeout=10).text
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = sample.name + "".join(f"{{{k}={v}}}" for k, v in sorted(sample.labels.items()))
                out[key] = sample.value
        return out

    def index(self) -> dict[str, object]:
        found: dict[str, object] = httpx.get(f"{self.base}/v2/repository/index", timeout=10).json()
        return found


@pytest.fixture()
def start_gateway(build_dir: Path, tmp_path: Path) -> Iterator[object]:
    started: list[ManagedProcess] = []

    def start(*extra: str, build: Path | None = None, env: dict[str, str] | None = None) -> Gateway:
        port = free_port("127.0.0.1")
        log = tmp_path / f"gateway-{uuid.uuid4().hex[:6]}.log"
        proc = ManagedProcess([sys.executable, "-m", "repoforge", "gateway", str(build or build_dir), "--port",
                               str(port), "--timeout", "30", *extra], log_path=log, env={**os.environ, **(env or {})},
                              name="repoforge gateway")  # fmt: skip
        proc.start()
        started.append(proc)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.alive, proc.log_tail()
            try:
                if httpx.get(f"{base}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError(f"gateway not ready within 120 s\n{proc.log_tail()}")
        found = re.search(r"tritonserver pid (\d+), log (\S+)", log.read_text())
        assert found, log.read_text()
        return Gateway(proc, base, int(found[1]), Path(found[2]))

    yield start
    for proc in started:
        proc.stop(timeout=30)


@dataclass
class Load:
    """Results of a closed-loop load: each client sends its next request when the previous one is answered."""

    ok: int = 0
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def run_load(base: str, weights: np.ndarray, clients: int, seconds: float, stop_at: list[float] | None = None) -> Load:
    """`clients` closed-loop clients over the models with these weights, until `stop_at[0]` (monotonic; another
    thread may move it) or for `seconds`."""
    load = Load()
    stop_at = stop_at or [time.monotonic() + seconds]
    p = weights / weights.sum()

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        with httpx.Client(timeout=180) as http:
            while time.monotonic() < stop_at[0]:
                model = _name(int(rng.choice(len(p), p=p)))
                try:
                    r = http.post(f"{base}/v2/models/{model}/infer", json=BODY)
                    good = r.status_code == 200 and r.json()["outputs"][0]["data"] == EXPECTED
                    why = "" if good else f"{model}: {r.status_code} {r.text[:300]}"
                except httpx.HTTPError as exc:
                    good, why = False, f"{model}: {type(exc).__name__} {exc}"
                with load.lock:
                    if good:
                        load.ok += 1
                    else:
                        load.failures.append(why)

    threads = [threading.Thread(target=client, args=(seed,), daemon=True) for seed in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(stop_at[0] - time.monotonic(), 0) + 300)
        assert not t.is_alive(), "a client did not finish within its bound"
    return load


def _settled(gw: Gateway, timeout: float = 60) -> dict[str, float]:
    """Metrics once no load or unload is in progress (the last eviction may still be finishing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        index = gw.index()
        states = {row["state"] for row in index["models"]}  # type: ignore[index, union-attr]
        if not states & {"LOADING", "UNLOADING"}:
            return gw.metrics()
        time.sleep(0.2)
    raise AssertionError("the gateway kept loading or unloading")


def _unloads_in_log(path: Path, timeout: float = 30, want: int = 0) -> int:
    """'successfully unloaded' lines in tritonserver's log (Triton writes them when the unload really ends)."""
    deadline = time.monotonic() + timeout
    while True:
        count = len(re.findall(r"successfully unloaded '", path.read_text(errors="replace")))
        if count >= want or time.monotonic() > deadline:
            return count
        time.sleep(0.2)


def test_200_models_under_max_loaded_with_16_zipf_clients(start_gateway: object) -> None:
    """The clients run until the gateway holds MAX_LOADED models (the warm-up, at most WARMUP_S), then DURATION_S
    more: every request from then on competes for a full cache."""
    gw: Gateway = start_gateway()  # type: ignore[operator]
    peak_seen: list[float] = []
    stop = threading.Event()
    stop_at = [time.monotonic() + WARMUP_S]
    full_at: list[float] = []

    def scrape() -> None:
        while not stop.is_set():
            m = gw.metrics()
            if not full_at and m["repoforge_gateway_models_loaded"] >= MAX_LOADED:
                full_at.append(time.monotonic())
                stop_at[0] = full_at[0] + DURATION_S
            peak_seen.append(m["repoforge_gateway_models_loaded"])
            index = gw.index()
            loaded = sum(1 for r in index["models"] if r["state"] != "UNLOADED")  # type: ignore[index, union-attr]
            peak_seen.append(float(loaded))
            stop.wait(0.25)

    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    weights = 1.0 / np.arange(1, N_MODELS + 1) ** ZIPF_S
    try:
        load = run_load(gw.base, weights, CLIENTS, DURATION_S, stop_at)
    finally:
        stop.set()
        scraper.join(timeout=30)
    assert full_at, f"the gateway never held {MAX_LOADED} models within the {WARMUP_S:g} s warm-up"
    assert not load.failures, f"{len(load.failures)} of {load.ok + len(load.failures)} failed: {load.failures[:5]}"
    assert load.ok > 0
    assert peak_seen and max(peak_seen) <= MAX_LOADED, f"scrapes saw {max(peak_seen)} loaded"
    m = _settled(gw)
    assert m["repoforge_gateway_models_loaded_peak"] <= MAX_LOADED  # between scrapes too
    evictions = m.get("repoforge_gateway_model_evictions_total{reason=max_loaded}", 0.0)
    assert evictions > 0, "the Zipf mix over 200 models should have forced evictions"
    # no unload while its model had a request in flight: the gateway counts such unloads (must be none), and the
    # server unloaded exactly the models the gateway evicted (no unload the gateway did not decide)
    assert m["repoforge_gateway_model_unloads_in_flight_total"] == 0
    assert _unloads_in_log(gw.server_log, want=int(evictions)) == evictions
    assert m["repoforge_gateway_model_hits_total"] > 0
    assert m["repoforge_gateway_model_load_seconds_count"] == m["repoforge_gateway_model_loads_total{outcome=ok}"]
    print(f"\n{load.ok} requests, {int(evictions)} evictions, "
          f"{int(m['repoforge_gateway_model_loads_total{outcome=ok}'])} loads, "
          f"hits {int(m['repoforge_gateway_model_hits_total'])}")  # fmt: skip


def test_memory_budget_bounds_the_servers_rss(start_gateway: object) -> None:
    """The budget leaves room for about four models: the server's RSS (tritonserver + its stub processes) never
    passes the budget by more than one model."""
    budget = 400 * 1024 * 1024
    gw: Gateway = start_gateway("--max-loaded", str(N_MODELS), "--memory-budget", "400MiB")  # type: ignore[operator]
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(tree_rss(gw.server_pid))
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        load = run_load(gw.base, np.ones(10), 4, 12.0)
    finally:
        stop.set()
        sampler.join(timeout=30)
    assert not load.failures, load.failures[:5]
    index = gw.index()
    measured = [r["bytes"] for r in index["models"] if r.get("bytes_measured")]  # type: ignore[index, union-attr]
    one_model = max(measured, default=0)
    assert one_model > 0
    m = _settled(gw)
    assert m.get("repoforge_gateway_model_evictions_total{reason=memory_budget}", 0) > 0
    assert max(samples) <= budget + one_model, (
        f"peak RSS {max(samples) / 2**20:.0f} MiB over budget {budget / 2**20:.0f} MiB + one model "
        f"{one_model / 2**20:.0f} MiB"
    )


def test_concurrent_first_requests_share_one_load_and_its_failure(start_gateway: object) -> None:
    gw: Gateway = start_gateway()  # type: ignore[operator]

    async def burst(model: str, n: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as http:
            return list(await asyncio.gather(*(http.post(f"{gw.base}/v2/models/{model}/infer", json=BODY)
                                               for _ in range(n))))  # fmt: skip

    good = asyncio.run(burst(_name(150), 8))
    assert [r.status_code for r in good] == [200] * 8
    m = gw.metrics()
    assert m["repoforge_gateway_model_loads_total{outcome=ok}"] == 1  # eight first requests, one load
    assert m["repoforge_gateway_model_misses_total"] + m["repoforge_gateway_model_load_joins_total"] >= 8
    bad = asyncio.run(burst("broken", 8))
    assert all(r.status_code == 503 and "no_such_backend" in r.json()["error"] for r in bad), [r.text for r in bad]
    assert 1 <= gw.metrics()["repoforge_gateway_model_loads_total{outcome=failed}"] < 8  # waiters shared a load
    index = gw.index()
    states = {r["name"]: r["state"] for r in index["models"]}  # type: ignore[index, union-attr]
    assert states[_name(150)] == "LOADED" and states["broken"] == "UNLOADED"
    assert httpx.post(f"{gw.base}/v2/models/nope/infer", json=BODY, timeout=10).status_code == 404


def test_tenants_401_429_with_retry_after_and_concurrency(start_gateway: object, tmp_path: Path) -> None:
    """Keys from the environment; an unknown key is a 401; a tenant sending at 3x its rate gets 429s with
    Retry-After for the excess; another tenant's requests meanwhile all pass; max_concurrency is a 429 too."""
    (tmp_path / "models").mkdir()
    modelgen.save(modelgen.add_mul(4), tmp_path / "models" / "add_mul.onnx")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "version: 1\nserving:\n  max_loaded: 4\n  tenants:\n"
        "    - {name: noisy, api_key_env: T_NOISY_KEY, rate: 5/s, burst: 5}\n"
        "    - {name: calm, api_key_env: T_CALM_KEY, rate: 100/s}\n"
        "    - {name: single, api_key_env: T_SINGLE_KEY, max_concurrency: 1}\nmodels:\n"
        + "".join(f"  - {{name: {_name(i)}, format: onnx, path: models/add_mul.onnx, max_batch_size: 8}}\n"
                  for i in range(3))
    )  # fmt: skip
    out = build(spec, tmp_path / "out", device="cpu").output
    keys = {"T_NOISY_KEY": "noisy-" + uuid.uuid4().hex, "T_CALM_KEY": "calm-" + uuid.uuid4().hex,
            "T_SINGLE_KEY": "single-" + uuid.uuid4().hex}  # fmt: skip
    assert all(k not in (out / "repoforge.lock.json").read_text() for k in keys.values())
    gw: Gateway = start_gateway(build=out, env=keys)  # type: ignore[operator]
    url = f"{gw.base}/v2/models/{_name(0)}/infer"

    def auth(var: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {keys[var]}"}

    assert httpx.post(url, json=BODY, timeout=10).status_code == 401
    wrong = httpx.post(url, json=BODY, headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{gw.base}/v2/health/ready", timeout=10).status_code == 200  # health stays open
    assert httpx.post(url, json=BODY, headers=auth("T_CALM_KEY"), timeout=120).status_code == 200  # loads it

    # noisy sends 15/s (3x its rate) for 3 s while calm sends 5/s
    noisy: list[httpx.Response] = []
    calm: list[httpx.Response] = []
    with httpx.Client(timeout=30) as http:
        start = time.monotonic()
        for i in range(45):
            time.sleep(max(0.0, start + i / 15 - time.monotonic()))
            noisy.append(http.post(url, json=BODY, headers=auth("T_NOISY_KEY")))
            if i % 3 == 0:
                calm.append(http.post(url, json=BODY, headers=auth("T_CALM_KEY")))
    elapsed = time.monotonic() - start
    limited = [r for r in noisy if r.status_code == 429]
    assert all(r.status_code in (200, 429) for r in noisy)
    assert all(int(r.headers["retry-after"]) >= 1 for r in limited)
    # its budget is the burst (5) plus 5/s over the time the requests took: the rest is refused
    allowed = 5 + 5 * elapsed
    assert len(noisy) - len(limited) <= allowed + 1 and len(limited) >= 45 - allowed - 1, (len(limited), elapsed)
    assert limited, "3x its rate must be refused in part"
    assert [r.status_code for r in calm] == [200] * len(calm)

    async def two_at_once() -> list[int]:
        async with httpx.AsyncClient(timeout=120) as http:
            cold = f"{gw.base}/v2/models/{_name(2)}/infer"  # a cold load keeps the first one in flight
            rs = await asyncio.gather(*(http.post(cold, json=BODY, headers=auth("T_SINGLE_KEY")) for _ in range(2)))
            return sorted(r.status_code for r in rs)

    assert asyncio.run(two_at_once()) == [200, 429]
    m = gw.metrics()
    assert m["repoforge_gateway_tenant_requests_total{outcome=rate_limited}{tenant=noisy}"] == len(limited)
    assert m["repoforge_gateway_tenant_requests_total{outcome=concurrency_limited}{tenant=single}"] == 1


SLOW_MODEL = Path(__file__).resolve().parents[1] / "data" / "gateway" / "double.py"  # Y = 2X, SLEEP_MS optional


def _slow_body(sleep_ms: int) -> dict[str, object]:
    return {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 1], "data": [1.0]},
                       {"name": "SLEEP_MS", "datatype": "INT32", "shape": [1, 1], "data": [sleep_ms]}]}  # fmt: skip


def test_tenant_priorities_reach_triton_and_order_its_queue(start_gateway: object, tmp_path: Path) -> None:
    """`build` wrote priority levels, a per-level queue policy and a rate limiter; the gateway started Triton with
    --rate-limit and sends each tenant's requests at its level. Under contention (one instance, 50 ms per request,
    six bronze clients keeping its queue full) gold's requests jump the queue: gold's p99 is below bronze's."""
    shutil.copy(SLOW_MODEL, tmp_path / "double.py")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "version: 1\nserving:\n  max_loaded: 2\n  tenants:\n"
        "    - {name: gold, api_key_env: T_GOLD_KEY, priority: 1}\n"
        "    - {name: bronze, api_key_env: T_BRONZE_KEY, priority: 2}\n"
        "  priority_queue_policy: {2: {max_queue_size: 64}}\n"
        "  rate_limiter: {resources: [{name: slots, count: 1}], priority: 1}\n"
        "  rate_limit_resources: [{name: slots, count: 1}]\n"
        "models:\n  - name: slow\n    format: python\n    path: double.py\n    max_batch_size: 1\n"
        "    instance_groups: [{kind: cpu, count: 1}]\n"
        "    inputs: [{name: X, dtype: FP32, dims: [-1]}, {name: SLEEP_MS, dtype: INT32, dims: [1], optional: true}]\n"
        "    outputs: [{name: Y, dtype: FP32, dims: [-1]}]\n"
    )  # fmt: skip
    out = build(spec, tmp_path / "out", device="cpu").output
    config = text_format.Parse((out / "slow" / "config.pbtxt").read_text(), mc.ModelConfig())
    assert config.dynamic_batching.priority_levels == 2 and config.dynamic_batching.default_priority_level == 2
    assert config.instance_group[0].rate_limiter.resources[0].name == "slots"
    keys = {"T_GOLD_KEY": "gold-" + uuid.uuid4().hex, "T_BRONZE_KEY": "bronze-" + uuid.uuid4().hex}
    gw: Gateway = start_gateway(build=out, env=keys)  # type: ignore[operator]
    with open(f"/proc/{gw.server_pid}/cmdline", "rb") as f:
        argv = f.read().decode().split("\0")
    assert "--rate-limit=execution_count" in argv and "--rate-limit-resource=slots:1" in argv, argv
    url = f"{gw.base}/v2/models/slow/infer"
    gold, bronze = ({"Authorization": f"Bearer {keys[k]}"} for k in ("T_GOLD_KEY", "T_BRONZE_KEY"))
    first = httpx.post(url, json=_slow_body(0), headers=gold, timeout=120)  # the cold load
    assert first.status_code == 200 and first.json()["outputs"][0]["data"] == [2.0], first.text

    async def contend() -> tuple[list[float], list[float]]:
        stop = asyncio.Event()
        times: dict[str, list[float]] = {"gold": [], "bronze": []}

        async def one(http: httpx.AsyncClient, who: str, headers: dict[str, str]) -> None:
            started = time.perf_counter()
            r = await http.post(url, json=_slow_body(50), headers=headers)
            assert r.status_code == 200, r.text
            times[who].append(time.perf_counter() - started)

        async def flood(http: httpx.AsyncClient) -> None:
            while not stop.is_set():
                await one(http, "bronze", bronze)

        async with httpx.AsyncClient(timeout=60) as http:
            flooders = [asyncio.create_task(flood(http)) for _ in range(6)]
            await asyncio.sleep(1.0)  # the queue fills
            for _ in range(15):
                await one(http, "gold", gold)
                await asyncio.sleep(0.05)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*flooders), 60)
        return times["gold"], times["bronze"]

    gold_s, bronze_s = asyncio.run(contend())
    p99 = {who: float(np.percentile(s, 99)) for who, s in (("gold", gold_s), ("bronze", bronze_s))}
    p50 = {who: float(np.percentile(s, 50)) for who, s in (("gold", gold_s), ("bronze", bronze_s))}
    print(f"\ngold p50 {p50['gold'] * 1000:.0f} ms p99 {p99['gold'] * 1000:.0f} ms ({len(gold_s)}); bronze p50 "
          f"{p50['bronze'] * 1000:.0f} ms p99 {p99['bronze'] * 1000:.0f} ms ({len(bronze_s)})")  # fmt: skip
    assert p99["gold"] < p99["bronze"], (p50, p99)


def test_perf_models_spreads_a_zipf_load_through_the_gateway(tmp_path: Path) -> None:
    """`repoforge perf BUILD --models 'm*' --distribution zipf --json`: the gateway is started on the build for the
    run; 10 models under max_loaded 3, so the mix has hits and cold loads, and each request is counted as one. Two
    levels: on a busy 2-core host a cold load can take longer than a whole level (a first level of loads and joins
    only, no hit, failed a landing), so the second one meets a filled cache."""
    (tmp_path / "models").mkdir()
    modelgen.save(modelgen.add_mul(4), tmp_path / "models" / "add_mul.onnx")
    spec = tmp_path / "spec.yaml"
    spec.write_text("version: 1\nserving: {max_loaded: 3}\nmodels:\n" + "".join(
        f"  - {{name: {_name(i)}, format: onnx, path: models/add_mul.onnx, max_batch_size: 8}}\n"
        for i in range(10)))  # fmt: skip
    out = build(spec, tmp_path / "out", device="cpu").output
    report_dir = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "repoforge", "perf", str(out), "--models", "m00*",
                           "--distribution", "zipf:1.2", "--concurrency", "2,4", "--duration", "10", "-o",
                           str(report_dir), "--json"], capture_output=True, text=True, timeout=400, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["models"] == [_name(i) for i in range(10)] and report["distribution"] == "zipf:1.2"
    points = report["points"]
    assert [p["concurrency"] for p in points] == [2, 4]
    for point in points:
        assert point["errors"] == {} and point["ok"] == point["requests"] > 0
        assert point["hits"] + point["loads"] + point["joins"] == point["ok"]
        assert point["latency_ms"]["cold"]["n"] == point["loads"] + point["joins"]
    hits, loads = sum(p["hits"] for p in points), sum(p["loads"] for p in points)
    assert hits > 0 and loads >= 3, (hits, loads)
    both = [p for p in points if p["hits"] and p["loads"]]
    assert all(p["latency_ms"]["cold"]["p50"] > p["latency_ms"]["warm"]["p50"] for p in both)  # a load is no hit
    assert max(points, key=lambda p: p["ok"])["top_models"][0][0] == _name(0)  # rank 1 is asked for most
    assert report["gateway"]["model_loads_total{ok}"] == loads
    assert (report_dir / "report.json").is_file() and "hit ratio" in (report_dir / "report.md").read_text()


def test_the_sidecar_command_line_of_deploy_k8s(tmp_path: Path) -> None:
    """What `deploy k8s` runs in a server pod with `serving:`: Triton in explicit mode with nothing loaded, and
    `repoforge gateway 127.0.0.1:<grpc> --serving serving.json` beside it with the tenants' keys in its environment.
    The gateway finds tritonserver's pid by its command line (as in a pod sharing its process namespace), so the
    memory budget is measured, and it loads on demand for a tenant."""
    from repoforge.deploy.command import deploy_k8s
    from repoforge.targets.triton.serve import make_server

    (tmp_path / "models").mkdir()
    modelgen.save(modelgen.add_mul(4), tmp_path / "models" / "add_mul.onnx")
    spec = tmp_path / "spec.yaml"
    spec.write_text("version: 1\nserving:\n  max_loaded: 2\n  memory_budget: 2GiB\n  tenants:\n"
                    "    - {name: gold, api_key_env: T_SIDECAR_KEY}\nmodels:\n"
                    + "".join(f"  - {{name: {_name(i)}, format: onnx, path: models/add_mul.onnx, max_batch_size: 8}}\n"
                              for i in range(3)))  # fmt: skip
    out = build(spec, tmp_path / "out", device="cpu").output
    manifests = deploy_k8s(out, tmp_path / "k8s", sets=["gateway={image: 'r/repoforge:1'}"]).output
    docs = [d for d in yaml.safe_load_all((manifests / "gateway.yaml").read_text()) if d]
    serving = tmp_path / "serving.json"
    serving.write_text(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["serving.json"])
    (dep,) = [d for d in yaml.safe_load_all((manifests / "deployment.yaml").read_text()) if d]
    triton_args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--model-control-mode=explicit" in triton_args
    key = "sidecar-" + uuid.uuid4().hex
    with make_server(out, model_control="explicit", load_models=[]) as server:
        assert server.model_states() == [] or all(s["state"] != "READY" for s in server.model_states())
        port = free_port("127.0.0.1")
        log = tmp_path / "sidecar.log"
        proc = ManagedProcess([sys.executable, "-m", "repoforge", "gateway", server.grpc_url, "--port", str(port),
                               "--serving", str(serving)], log_path=log, env={**os.environ, "T_SIDECAR_KEY": key},
                              name="repoforge gateway")  # fmt: skip
        proc.start()
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                assert proc.alive, proc.log_tail()
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{base}/v2/health/ready", timeout=1).status_code == 200:
                        break
                time.sleep(0.2)
            assert f"measuring the memory of tritonserver pid {server.pid}" in log.read_text(), log.read_text()
            url = f"{base}/v2/models/{_name(1)}/infer"
            assert httpx.post(url, json=BODY, timeout=30).status_code == 401
            r = httpx.post(url, json=BODY, headers={"Authorization": f"Bearer {key}"}, timeout=120)
            assert r.status_code == 200 and r.headers["x-repoforge-model-load"] == "load", r.text
            index = httpx.get(f"{base}/v2/repository/index", timeout=10).json()
            row = next(m for m in index["models"] if m["name"] == _name(1))
            assert row["state"] == "LOADED" and row["bytes_measured"] and index["server_rss"] > 0
        finally:
            proc.stop(timeout=30)
