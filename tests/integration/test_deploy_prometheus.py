"""`deploy k8s` queries against real servers: a real Prometheus (1 s scrapes, free port, temp data) scraping the
session's real tritonserver evaluates every PromQL expression of the ScaledObject, the alerts and the dashboard
(each must return data), and the autoscaling query rises under bounded load and falls after it. Then a Triton
serving the response cache and the cache/router plugins, started with the flags the pods get (cache, metrics,
`--trace-config` OpenTelemetry), answers every query of its own build's dashboard, and sends spans to a local
OTLP/HTTP receiver (decoded with opentelemetry-proto)."""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from plugin_specs import scale_model
from tritonclient import http as triton_http
from tritonclient.utils import InferenceServerException

from repoforge.deploy.command import deploy_k8s
from repoforge.deploy.dashboard import queries
from repoforge.servers.ports import free_port
from repoforge.servers.prometheus import PrometheusServer
from repoforge.servers.triton import TritonServer

pytestmark = pytest.mark.integration
WINDOW_S = 5  # the rate() window the test deploys with: 5 scrapes of 1 s
LOAD_S = 8.0


@pytest.fixture(scope="module")
def deployed(built_examples: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deploy") / "k8s"
    return deploy_k8s(built_examples["ensemble"], out, sets=[f"autoscale.window={WINDOW_S}s", "slo.p99_ms=50"]).output


@pytest.fixture(scope="module")
def prometheus(triton: TritonServer, deployed: Path) -> Iterator[PrometheusServer]:
    """Scrapes the session's Triton with the labels a ServiceMonitor target gets; the generated rules loaded."""
    labels = {"job": "ensemble-metrics", "namespace": "default", "pod": "ensemble-0"}
    server = PrometheusServer(
        [(f"127.0.0.1:{triton.metrics_port}", labels)], rule_files=[deployed / "alerts.rules.yml"]
    )
    with server:
        deadline = time.monotonic() + 30
        while not server.targets_up():
            assert time.monotonic() < deadline, f"Triton never scraped:\n{server.log_tail()}"
            time.sleep(0.5)
        yield server


def _scalar(result: list[dict[str, Any]]) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])


def _alert_queries(rules_file: Path) -> list[tuple[str, str]]:
    """Each alert's query without its threshold: `(q) > N` or `absent(q)`."""
    out = []
    for rule in yaml.safe_load(rules_file.read_text())["groups"][0]["rules"]:
        m = re.fullmatch(r"\((.*)\) [<>] [-0-9.e+]+", rule["expr"]) or re.fullmatch(r"absent\((.*)\)", rule["expr"])
        assert m, f"{rule['alert']}: expr is neither `(query) > N` nor `absent(query)`: {rule['expr']}"
        out.append((rule["alert"], m[1]))
    return out


def _load(triton: TritonServer, seconds: float, workers: int = 8) -> int:
    """Bounded load on the ensemble (a Python step with one instance, so requests queue): `workers` clients for
    `seconds`, every request with a timeout. Returns the number of answers."""
    x = np.random.default_rng(0).random((4, 8), dtype=np.float32)
    stop = time.monotonic() + seconds

    def client() -> int:
        c = triton_http.InferenceServerClient(triton.http_url, connection_timeout=10, network_timeout=10)
        n = 0
        try:
            while time.monotonic() < stop:
                inp = triton_http.InferInput("RAW", list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                c.infer("pipeline", [inp], timeout=10)
                n += 1
        finally:
            c.close()
        return n

    with ThreadPoolExecutor(workers) as pool:
        return sum(pool.map(lambda _i: client(), range(workers)))


def test_every_query_returns_data_and_autoscaling_follows_load(
    triton: TritonServer, deployed: Path, prometheus: PrometheusServer, built_examples: dict[str, Path]
) -> None:
    so = yaml.safe_load((deployed / "scaledobject.yaml").read_text())
    autoscale = so["spec"]["triggers"][0]["metadata"]["query"]
    args = yaml.safe_load((deployed / "deployment.yaml").read_text())["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    assert "--metrics-config=summary_latencies=true" in args  # what the session server runs with (conftest)
    time.sleep(WINDOW_S + 1)  # a full window of idle scrapes
    idle = _scalar(prometheus.query(autoscale))

    every = [("ScaledObject", autoscale)]
    for metric in ("pending_requests", "request_rate"):  # the other metrics a CPU build may scale on
        alt = deploy_k8s(
            built_examples["ensemble"],
            deployed.parent / metric,
            sets=[f"autoscale.window={WINDOW_S}s", f"autoscale.metric={metric}"],
        ).output
        every.append((f"ScaledObject ({metric})", yaml.safe_load((alt / "scaledobject.yaml").read_text())["spec"]["triggers"][0]["metadata"]["query"]))  # fmt: skip
    every += _alert_queries(deployed / "alerts.rules.yml")
    every += queries(json.loads((deployed / "dashboard.json").read_text()))
    with ThreadPoolExecutor(1) as bg:
        answered = bg.submit(_load, triton, LOAD_S)
        time.sleep(LOAD_S - 2)
        busy = _scalar(prometheus.query(autoscale))
        empty = [(where, q) for where, q in every if not prometheus.query(q)]
        assert answered.result(timeout=60) > 0
    time.sleep(WINDOW_S + 2)
    after = _scalar(prometheus.query(autoscale))
    print(f"autoscale query (queue µs per request × pods): idle {idle:.0f}, under load {busy:.0f}, after {after:.0f}")
    assert not empty, "queries that returned no data:\n" + "\n".join(f"{w}: {q}" for w, q in empty)
    assert busy > idle and busy > 0
    assert after < busy
    # a deployment Prometheus does not scrape (an outage, a broken ServiceMonitor) answers nothing, never 0: KEDA
    # then errors (ignoreNullValues: false) and holds its fallback instead of scaling down (kedacore/keda#3065)
    assert prometheus.query(autoscale.replace('job="ensemble-metrics"', 'job="not-scraped"')) == []
    # the rules loaded into Prometheus parse and evaluate there too
    assert all(r.get("health") == "ok" for g in prometheus.rules() for r in g["rules"]), prometheus.rules()


class _Receiver(http.server.BaseHTTPRequestHandler):
    """OTLP/HTTP: POST /v1/traces, JSON (Triton's exporter) or protobuf; answers an empty export response."""

    bodies: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:
        n = int(self.headers.get("content-length", 0))
        type(self).bodies.append((self.headers.get("content-type", ""), self.rfile.read(n)))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


def _attrs(items: list[dict[str, Any]]) -> dict[str, Any]:
    """OTLP/JSON key-values ({"key": k, "value": {"stringValue": v}}; int64 as a string in "intValue")."""
    out: dict[str, Any] = {}
    for kv in items:
        value = kv.get("value", {})
        out[kv["key"]] = value.get("stringValue") or (int(value["intValue"]) if "intValue" in value else None)
    return out


def _spans(bodies: list[tuple[str, bytes]]) -> list[tuple[str, dict[str, Any]]]:
    """(span name, resource + span attributes) of every span in OTLP/HTTP JSON bodies (what Triton 2.51 sends).

    Decoded as plain JSON: opentelemetry-proto would make Ray believe OpenTelemetry is installed, and its
    dashboard agent then fails to start (`from opentelemetry import metrics`), so the Ray engine's tests hang."""
    out = []
    for ctype, body in bodies:
        assert "json" in ctype, f"expected OTLP/HTTP JSON from tritonserver, got content-type {ctype!r}"
        for rs in json.loads(body).get("resourceSpans", []):
            resource = _attrs(rs.get("resource", {}).get("attributes", []))
            for ss in rs.get("scopeSpans", []):
                for sp in ss.get("spans", []):
                    out.append((sp["name"], {**resource, **_attrs(sp.get("attributes", []))}))
    return out


PLUGINS_SPEC = """\
version: 1
repository: observed
defaults:
  max_batch_size: 64
models:
  - name: model_a
    format: python
    path: {scale}
    parameters: {{factor: 1}}
    response_cache: true
    inputs: [{{name: KEY, dtype: BYTES, dims: [1]}}, {{name: X, dtype: FP32, dims: [4]}}]
    outputs: [{{name: Y, dtype: FP32, dims: [4]}}]
  - name: model_b
    format: python
    path: {scale}
    parameters: {{factor: 2}}
    inputs: [{{name: KEY, dtype: BYTES, dims: [1]}}, {{name: X, dtype: FP32, dims: [4]}}]
    outputs: [{{name: Y, dtype: FP32, dims: [4]}}]
  - name: cached
    format: python
    plugin: {{kind: result_cache, model: model_a, max_entries: 100, ttl_s: 60}}
  - name: semantic
    format: python
    plugin: {{kind: semantic_cache, model: model_a, embedding: X, threshold: 0.999, max_entries: 8}}
  - name: router
    format: python
    plugin: {{kind: router, routes: [{{model: model_a}}], shadow: {{model: model_b}}}}
"""

#: Flags of the pod that a local server must not take: its ports, repository and lifecycle are the fixture's.
_POD_ONLY = ("--model-repository", "--model-control-mode", "--http-port", "--grpc-port", "--metrics-port", "--exit-")


def _request(model: str, x: np.ndarray) -> list[triton_http.InferInput]:
    key = triton_http.InferInput("KEY", [len(x), 1], "BYTES")
    key.set_data_from_numpy(np.array([[f"k{i}".encode()] for i in range(len(x))], dtype=np.object_))
    val = triton_http.InferInput("X", list(x.shape), "FP32")
    val.set_data_from_numpy(x)
    return [key, val]


def test_cache_and_plugin_panels_and_tracing_on_a_server_run_with_the_generated_flags(tmp_path: Path) -> None:
    """A build with Triton's response cache and the result cache, semantic cache and router (with a shadow)
    plugins, served with the flags deploy k8s gives its pods (cache, metrics, OpenTelemetry tracing pointed at a
    local OTLP/HTTP receiver): spans arrive for sampled requests with the model's name, and every query of that
    build's dashboard, alerts and ScaledObject returns data from a Prometheus scraping it."""
    from repoforge.build import build

    spec = tmp_path / "spec.yaml"
    spec.write_text(PLUGINS_SPEC.format(scale=(Path(__file__).parents[1] / "data" / "plugins" / "scale.py").as_posix()))
    repo = build(spec, tmp_path / "repo", device="cpu").output
    port = free_port()
    _Receiver.bodies = []
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        out = deploy_k8s(
            repo,
            tmp_path / "k8s",
            sets=[
                f"tracing={{otlp_endpoint: 'http://127.0.0.1:{port}/v1/traces', rate: 1}}",
                f"autoscale.window={WINDOW_S}s",
                "slo.p99_ms=50",
            ],
        ).output
        args = yaml.safe_load((out / "deployment.yaml").read_text())["spec"]["template"]["spec"]["containers"][0][
            "args"
        ]
        flags = [a.replace("$(POD_NAME)", "test-pod") for a in args if not a.startswith(_POD_ONLY)]
        assert "--trace-config=mode=opentelemetry" in flags and any(a.startswith("--cache-config=local") for a in flags)
        # Triton's batch span processor waits 5 s by default; export sooner so the test stays short
        flags.append("--trace-config=opentelemetry,bsp_schedule_delay=200")
        # why the pods do not get histogram_latencies: with it, Triton 2.51 still exports no histogram (below)
        flags.append("--metrics-config=histogram_latencies=true")
        with TritonServer(repo, extra_args=flags) as server:
            labels = {"job": "observed-metrics", "namespace": "default", "pod": "observed-0"}
            with PrometheusServer([(f"127.0.0.1:{server.metrics_port}", labels)]) as prom:
                x = np.random.default_rng(0).random((4, 4), dtype=np.float32)
                c = triton_http.InferenceServerClient(server.http_url, connection_timeout=10, network_timeout=10)
                deadline = time.monotonic() + 30
                every = [
                    (
                        "ScaledObject",
                        yaml.safe_load((out / "scaledobject.yaml").read_text())["spec"]["triggers"][0]["metadata"][
                            "query"
                        ],
                    )
                ]
                every += _alert_queries(out / "alerts.rules.yml")
                every += queries(json.loads((out / "dashboard.json").read_text()))
                try:
                    while True:  # requests (the same rows again: cache hits) until every query has data
                        for model in ("model_a", "cached", "semantic", "router"):
                            c.infer(model, _request(model, x), timeout=10)
                        empty = [(w, q) for w, q in every if not prom.query(q)]
                        if not empty or time.monotonic() > deadline:
                            break
                        time.sleep(0.5)
                finally:
                    c.close()
                assert not empty, "queries that returned no data:\n" + "\n".join(f"{w}: {q}" for w, q in empty)
                exported = {r["metric"]["__name__"] for r in prom.query('{job="observed-metrics"}')}
                assert not [n for n in exported if "histogram" in n], "Triton exports histograms now: add a panel"
            titles = {t for t, _ in every}
            assert {"Response cache hit rate", "Result cache hit rate (plugin)", "Semantic cache hit rate (plugin)",
                    "Router split (plugin)", "Shadow agreement (plugin)"} <= titles  # fmt: skip
            deadline = time.monotonic() + 15
            while not [s for s in _spans(_Receiver.bodies) if s[1].get("triton.model_name") == "model_a"]:
                assert time.monotonic() < deadline, f"no span for model_a arrived: {_spans(_Receiver.bodies)[:5]}"
                time.sleep(0.2)
    finally:
        receiver.shutdown()
        receiver.server_close()
    named = [a for n, a in _spans(_Receiver.bodies) if a.get("triton.model_name") == "model_a"]
    assert named and all(a.get("service.name") == "observed" and a.get("k8s.pod.name") == "test-pod" for a in named)


ROLLOUT_SPEC = """\
version: 1
repository: released
defaults:
  max_batch_size: 64
models:
{scale_models}  - name: router
    format: python
    plugin:
      kind: router
      routes: [{{model: model_a}}]
      canary: {{model: model_b, percent: 50}}
      shadow: {{model: model_b}}
rollout:
  router: router
  candidate: model_b
  max_p99_ms: 1000
  min_requests: 20
"""
#: A pod name of the new revision as Flagger names it (`<target>-<replicaset hash>-<id>`), and a primary one.
CANARY_POD, PRIMARY_POD = "released-7d9f8b6c5-x2k4q", "released-primary-5c6d7e8f9-a1b2c"
NEW_METRICS = ("repoforge_router_errors_total", "repoforge_router_latency_us_bucket")


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], PrometheusServer]]:
    """A router build with `rollout:` served by Triton, scraped as a canary pod; rows sent until the candidate
    has min_requests in the window. Yields the Flagger checks (template variables substituted) and Prometheus."""
    from repoforge.build import build

    root = tmp_path_factory.mktemp("released")
    spec = root / "spec.yaml"
    scale = (Path(__file__).parents[1] / "data" / "plugins" / "scale.py").as_posix()
    spec.write_text(
        ROLLOUT_SPEC.format(scale_models=scale_model("model_a", 1, scale) + scale_model("model_b", 1, scale))
    )
    repo = build(spec, root / "repo", device="cpu").output
    out = deploy_k8s(repo, root / "k8s").output
    _canary, *templates = [d for d in yaml.safe_load_all((out / "rollout-flagger.yaml").read_text()) if d]
    window = "10s"  # scrapes every 1 s here (15 s in pods, hence the 1m there)
    checks = {
        t["metadata"]["name"].removeprefix("released-"): t["spec"]["query"]
        .replace("{{ namespace }}", "default")
        .replace("{{ target }}", "released")
        .replace("{{ interval }}", window)
        for t in templates
    }
    with TritonServer(repo) as server:
        labels = {"job": "released-metrics", "namespace": "default", "pod": CANARY_POD}
        with PrometheusServer([(f"127.0.0.1:{server.metrics_port}", labels)]) as prom:
            deadline = time.monotonic() + 30
            while not prom.targets_up():
                assert time.monotonic() < deadline, f"Triton never scraped:\n{prom.log_tail()}"
                time.sleep(0.5)
            assert prom.query(checks["error-rate"]) == [], "no rows yet must be no data, not a pass"
            c = triton_http.InferenceServerClient(server.http_url, connection_timeout=10, network_timeout=10)
            x = np.random.default_rng(0).random((8, 4), dtype=np.float32)
            try:
                deadline = time.monotonic() + 40
                while not prom.query(checks["error-rate"]):
                    assert time.monotonic() < deadline, "the candidate never reached min_requests in the window"
                    c.infer("router", _request("router", x), timeout=10)
                    time.sleep(0.05)
                for _ in range(20):  # keep rows flowing while the test reads
                    c.infer("router", _request("router", x), timeout=10)
            finally:
                c.close()
            yield checks, prom


def _value(prom: PrometheusServer, expr: str) -> float:
    result = prom.query(expr)
    assert len(result) == 1, f"{expr} -> {result}"
    return float(result[0]["value"][1])


def test_rollout_checks_on_a_real_router(released: tuple[dict[str, str], PrometheusServer]) -> None:
    """The release checks whose series the router exports today (rows, shadow outcomes): one value each, within
    the policy's bounds for a healthy candidate; the error rate reads 0 while the errors counter is absent (or 0).
    A pod name of the primary revision selects nothing: Flagger then sees no data, a failed check."""
    checks, prom = released
    assert set(checks) == {"error-rate", "latency-p99", "shadow-agreement"}
    assert _value(prom, checks["error-rate"]) == 0
    assert _value(prom, checks["shadow-agreement"]) >= 0.99  # model_b answers as model_a does
    primary = checks["error-rate"].replace('pod=~"released-', 'pod=~"released-primary-')
    assert prom.query(primary) == []
    # the ServiceMonitor's pod label is what the regex sees: a primary pod's series would not match it
    assert re.fullmatch("released-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)", CANARY_POD)
    assert not re.fullmatch("released-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)", PRIMARY_POD)


def test_rollout_latency_and_errors_once_the_router_exports_them(
    released: tuple[dict[str, str], PrometheusServer],
) -> None:
    """repoforge_router_errors_total and the repoforge_router_latency_us histogram (the router change in
    progress): skipped until the router exports them, then the p99 check returns a value under the bound."""
    checks, prom = released
    exported = {
        r["metric"]["__name__"] for r in prom.query('{job="released-metrics", __name__=~"repoforge_router_.*"}')
    }
    missing = [m for m in NEW_METRICS if m not in exported]
    if "repoforge_router_latency_us_bucket" not in exported:
        pytest.skip(f"the router does not export {', '.join(missing)} yet")
    p99 = _value(prom, checks["latency-p99"])
    assert 0 < p99 < 1000, p99
    errors = prom.query('sum(repoforge_router_errors_total{job="released-metrics", model="router", route="model_b"})')
    # healthy candidate: no failed route calls (a counter created at its first error may not exist yet, which the
    # error-rate check reads as 0)
    assert all(float(e["value"][1]) == 0 for e in errors)


FAILING_SPEC = """\
version: 1
repository: released
defaults:
  max_batch_size: 64
models:
  - name: model_a
    format: python
    path: {model}
    inputs: [{{name: X, dtype: FP32, dims: [4]}}]
    outputs: [{{name: Y, dtype: FP32, dims: [4]}}]
  - name: model_b
    format: python
    path: {model}
    parameters: {{fail_every: 4}}
    inputs: [{{name: X, dtype: FP32, dims: [4]}}]
    outputs: [{{name: Y, dtype: FP32, dims: [4]}}]
  - name: router
    format: python
    plugin:
      kind: router
      routes: [{{model: model_a}}]
      canary: {{model: model_b, percent: 50}}
rollout:
  router: router
  candidate: model_b
  min_requests: 20
"""


def test_a_failing_candidate_breaks_the_error_rate_check(tmp_path: Path) -> None:
    """A candidate that answers every 4th call with an error: the error-rate check (Flagger's query, variables
    substituted) reads about 25 %, above max_error_rate, so Flagger halts and Argo's failureCondition holds.
    Triton's own failure counter for the candidate is printed alongside (the reason it is not used)."""
    from repoforge.build import build

    spec = tmp_path / "spec.yaml"
    model = Path(__file__).parents[1] / "data" / "rollout" / "candidate.py"
    spec.write_text(FAILING_SPEC.format(model=model.as_posix()))
    out = deploy_k8s(build(spec, tmp_path / "repo", device="cpu").output, tmp_path / "k8s").output
    _canary, template = [d for d in yaml.safe_load_all((out / "rollout-flagger.yaml").read_text()) if d]
    query = (
        template["spec"]["query"]
        .replace("{{ namespace }}", "default")
        .replace("{{ target }}", "released")
        .replace("{{ interval }}", "10s")
    )
    argo, _rollout = [d for d in yaml.safe_load_all((out / "rollout-argo.yaml").read_text()) if d]
    failure = argo["spec"]["metrics"][0]["failureCondition"]
    with TritonServer(tmp_path / "repo") as server:
        labels = {"job": "released-metrics", "namespace": "default", "pod": CANARY_POD}
        with PrometheusServer([(f"127.0.0.1:{server.metrics_port}", labels)]) as prom:
            c = triton_http.InferenceServerClient(server.http_url, connection_timeout=10, network_timeout=10)
            x = np.random.default_rng(0).random((1, 4), dtype=np.float32)
            deadline = time.monotonic() + 40
            try:
                while not prom.query(query):
                    assert time.monotonic() < deadline, "the candidate never reached min_requests in the window"
                    inp = triton_http.InferInput("X", list(x.shape), "FP32")
                    inp.set_data_from_numpy(x)
                    try:
                        c.infer("router", [inp], timeout=10)
                    except InferenceServerException:
                        pass  # the requests the failing route touched are answered with its error
            finally:
                c.close()
            rate = _value(prom, query)
            triton_failures = prom.query('sum(nv_inference_request_failure{model="model_b"})')
    print(f"candidate error rate {rate:.3f}; Triton's nv_inference_request_failure for it: {triton_failures}")
    assert 0.1 < rate < 0.5, rate
    assert rate > 0.01  # max_error_rate: the check fails
    assert eval(failure.replace("&&", "and").replace("||", "or"), {"len": len}, {"result": [rate]})


PICKY = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    \"\"\"Answers a request holding a negative value with an error response, as a model validating its input does.\"\"\"

    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            if (x < 0).any():
                out.append(pb_utils.InferenceResponse(error=pb_utils.TritonError("negative values are not allowed")))
            else:
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", (x * 2).astype(np.float32))]))
        return out
"""


def test_error_alert_reads_a_python_models_failed_requests(tmp_path: Path) -> None:
    """The error-rate alert's query reads a rate above zero from a real Prometheus scraping a real Triton whose
    user Python model answers some requests with errors. Triton counts those answers as successes
    (nv_inference_request_failure stays 0), so the rate comes from the model's own repoforge_model_errors_total."""
    from repoforge.build import build

    (tmp_path / "picky.py").write_text(PICKY)
    (tmp_path / "spec.yaml").write_text(
        "version: 1\nrepository: picky\nmodels:\n  - name: picky\n    format: python\n    path: picky.py\n"
        "    max_batch_size: 8\n    inputs: [{name: X, dtype: FP32, dims: [1]}]\n"
        "    outputs: [{name: Y, dtype: FP32, dims: [1]}]\n"
    )
    repo = build(tmp_path / "spec.yaml", tmp_path / "repo", device="cpu").output
    out = deploy_k8s(repo, tmp_path / "k8s", sets=[f"autoscale.window={WINDOW_S}s", "slo.error_rate=0.01"]).output
    alert = dict(_alert_queries(out / "alerts.rules.yml"))["PickyErrorRateHigh"]
    assert "repoforge_model_errors_total" in alert
    labels = {"job": "picky-metrics", "namespace": "default", "pod": "picky-0"}
    with TritonServer(repo) as triton:
        with PrometheusServer([(f"127.0.0.1:{triton.metrics_port}", labels)], rule_files=[out / "alerts.rules.yml"]) as prom:  # fmt: skip
            deadline = time.monotonic() + 30
            while not prom.targets_up():
                assert time.monotonic() < deadline, f"Triton never scraped:\n{prom.log_tail()}"
                time.sleep(0.5)
            client = triton_http.InferenceServerClient(triton.http_url, connection_timeout=10, network_timeout=10)
            failed = 0
            result: list[dict[str, Any]] = []

            def picky_share() -> float:
                return max((float(r["value"][1]) for r in result if r["metric"].get("model") == "picky"), default=0.0)

            try:
                # one request in three fails until the alert's query reads the errors (a rate needs two scrapes of
                # them in its window: a few seconds; waiting a whole window and more each run cost about 6 s), or
                # for a bounded time on a slow host
                stop = time.monotonic() + 4 * WINDOW_S + 10
                next_query = time.monotonic() + 2
                i = 0
                while time.monotonic() < stop:
                    x = np.array([[-1.0 if i % 3 == 0 else 1.0]], dtype=np.float32)
                    inp = triton_http.InferInput("X", [1, 1], "FP32")
                    inp.set_data_from_numpy(x)
                    try:
                        client.infer("picky", [inp], timeout=10)
                    except InferenceServerException:
                        failed += 1
                    i += 1
                    if time.monotonic() >= next_query:
                        result, next_query = prom.query(alert), time.monotonic() + 0.5
                        if picky_share() > 0.0:
                            break
                    time.sleep(0.05)
            finally:
                client.close()
            assert failed > 0
            triton_failures = prom.query('sum(nv_inference_request_failure{job="picky-metrics", model="picky"})')
    print(f"{failed} failed of {i} requests; alert query {result}; nv_inference_request_failure {triton_failures}")
    assert result, "the alert's query returned nothing"
    share = {r["metric"].get("model"): float(r["value"][1]) for r in result}
    assert share.get("picky", 0.0) > 0.0, share
