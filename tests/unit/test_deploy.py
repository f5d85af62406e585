"""`repoforge deploy k8s`: golden manifests for a GPU Triton build, a CPU build and a TorchServe build; every object
survives cloudcoil's typed models unchanged (a misspelt field would be dropped and show here), the core objects
pass kubernetes-validate, the rules pass `promtool check rules`, and `promtool test rules` makes every alert fire
and stay silent. Bad values and bad `--set`s are located errors and write nothing.

Regenerate the goldens after an intended change, then read the diff:

    REPOFORGE_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_deploy.py
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from deploy_helpers import assert_matches_golden

from repoforge.build import build
from repoforge.cli import main
from repoforge.deploy.command import KUBERNETES_VERSION, deploy_k8s
from repoforge.deploy.dashboard import queries
from repoforge.errors import BuildError, SpecError

ROOT = Path(__file__).resolve().parents[2]
TABULAR = ROOT / "examples" / "tabular" / "spec.yaml"
GPU_SETS = (
    "namespace=models",
    "replicas={min: 2, max: 8}",
    "resources={gpu: 1, cpu: '4', memory: 16Gi}",
    "autoscale={metric: queue_time_per_request_us, target: 2000, activation: 200, fallback_replicas: 4, cooldown_s: 120}",
    "slo={p99_ms: 50, error_rate: 0.01}",
    "spot={tolerate: true, on_demand_min: 1}",
    "tracing={otlp_endpoint: 'http://otel-collector:4318/v1/traces', rate: 100}",
    "model_repository={s3: 's3://models-bucket/golden', credentials_secret: models-s3}",
)
CPU_SETS = ("slo.p99_ms=50",)


def _torchserve_spec(root: Path) -> Path:
    spec = root / "spec.yaml"
    spec.write_text(
        "version: 1\nrepository: ts-tabular\nmodels:\n  - name: classifier\n    format: onnx\n"
        f"    path: {(ROOT / 'examples/tabular/models/classifier.onnx').as_posix()}\n    max_batch_size: 8\n"
        "deploy:\n  replicas: {min: 1, max: 3}\n  autoscale: {metric: request_rate, target: 50}\n",
        encoding="utf-8",
    )
    return spec


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("deploy")
    gpu = build(ROOT / "tests" / "golden" / "full.spec.yaml", root / "gpu-build", device="gpu").output
    cpu = build(TABULAR, root / "cpu-build", device="cpu").output
    ts = build(_torchserve_spec(root), root / "ts-build", target="torchserve", device="cpu").output
    return {
        "gpu": deploy_k8s(gpu, root / "gpu", sets=GPU_SETS).output,
        "cpu": deploy_k8s(cpu, root / "cpu", sets=CPU_SETS).output,
        "torchserve": deploy_k8s(ts, root / "torchserve").output,
    }


@pytest.mark.parametrize("kind", ["gpu", "cpu", "torchserve"])
def test_manifests_match_goldens(outputs: dict[str, Path], kind: str) -> None:
    assert_matches_golden(outputs[kind], kind)


def _docs(root: Path) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for f in sorted(root.glob("*.yaml")):
        if f.name == "kustomization.yaml":
            continue
        out += [(f.name, d) for d in yaml.safe_load_all(f.read_text(encoding="utf-8")) if d]
    return out


def _model_class(doc: dict[str, Any]) -> Any:
    from cloudcoil.models.keda import v1alpha1 as keda
    from cloudcoil.models.kubernetes.apps import v1 as apps
    from cloudcoil.models.kubernetes.core import v1 as core
    from cloudcoil.models.kubernetes.policy import v1 as policy
    from cloudcoil.models.prometheus_operator import v1 as monitoring

    return {
        "Deployment": apps.Deployment,
        "Service": core.Service,
        "ConfigMap": core.ConfigMap,
        "PodDisruptionBudget": policy.PodDisruptionBudget,
        "ServiceMonitor": monitoring.ServiceMonitor,
        "PrometheusRule": monitoring.PrometheusRule,
        "ScaledObject": keda.ScaledObject,
    }[doc["kind"]]


@pytest.mark.parametrize("kind", ["gpu", "cpu", "torchserve"])
def test_every_object_round_trips_through_its_typed_model(outputs: dict[str, Path], kind: str) -> None:
    docs = _docs(outputs[kind])
    kinds = {d["kind"] for _, d in docs}
    assert {"Deployment", "Service", "PodDisruptionBudget", "ServiceMonitor", "ScaledObject", "PrometheusRule"} <= kinds
    for name, doc in docs:
        again = _model_class(doc).model_validate(doc).model_dump(mode="json", by_alias=True, exclude_none=True)
        assert again == doc, f"{name}: {doc['kind']} {doc['metadata']['name']} changes through its model"


def test_round_trip_catches_a_misspelt_field(outputs: dict[str, Path]) -> None:
    """Why the round trip is a check: the models accept unknown fields silently, and drop them."""
    name, doc = next((n, d) for n, d in _docs(outputs["cpu"]) if d["kind"] == "Deployment")
    doc["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 45
    again = _model_class(doc).model_validate(doc).model_dump(mode="json", by_alias=True, exclude_none=True)
    assert again != doc


@pytest.mark.parametrize("kind", ["gpu", "cpu", "torchserve"])
def test_core_objects_pass_kubernetes_validate(outputs: dict[str, Path], kind: str) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    checked = 0
    for _name, doc in _docs(outputs[kind]):
        if doc["kind"] in ("Deployment", "Service", "ConfigMap", "PodDisruptionBudget"):
            kv.validate(doc, KUBERNETES_VERSION, strict=True)
            checked += 1
    assert checked >= 4


def test_gpu_build_manifests_say_what_the_issue_asks(outputs: dict[str, Path]) -> None:
    out = outputs["gpu"]
    deps = list(yaml.safe_load_all((out / "deployment.yaml").read_text()))
    assert [d["metadata"]["name"] for d in deps] == ["golden-on-demand", "golden"]
    on_demand, spot = (d["spec"]["template"]["spec"] for d in deps)
    assert deps[0]["spec"]["replicas"] == 1 and "replicas" not in deps[1]["spec"]  # KEDA owns the spot pool's count
    c = spot["containers"][0]
    assert c["resources"]["requests"]["nvidia.com/gpu"] == "1" and c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 600
    assert spot["terminationGracePeriodSeconds"] > 30 and "--exit-timeout-secs=30" in c["args"]
    assert any(t.get("key") == "karpenter.sh/capacity-type" for t in spot["tolerations"])
    assert not any(t.get("key") == "karpenter.sh/capacity-type" for t in on_demand["tolerations"])
    assert on_demand["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert {t["topologyKey"] for t in spot["topologySpreadConstraints"]} == {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }
    assert "--model-repository=s3://models-bucket/golden" in c["args"]
    assert c["envFrom"] == [{"secretRef": {"name": "models-s3"}}]
    assert "--trace-config=mode=opentelemetry" in c["args"]
    assert "--trace-config=opentelemetry,url=http://otel-collector:4318/v1/traces" in c["args"]
    assert "--trace-config=rate=100" in c["args"]
    assert c["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"  # gpu: native backends, own python models
    so = yaml.safe_load((out / "scaledobject.yaml").read_text())
    trig = so["spec"]["triggers"][0]
    assert trig["metadata"]["ignoreNullValues"] == "false" and trig["metricType"] == "AverageValue"
    assert so["spec"]["fallback"] == {"failureThreshold": 3, "replicas": 3}  # 4 pods, one of them on-demand
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (1, 7)
    assert "or vector(0)" not in trig["metadata"]["query"]


def test_triton_args_follow_the_build(outputs: dict[str, Path], tmp_path: Path) -> None:
    cpu = yaml.safe_load_all((outputs["cpu"] / "deployment.yaml").read_text())
    args = next(cpu)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(a.startswith("--cache-config") for a in args)  # tabular: response_cache false
    assert not any(a.startswith("--trace-config") for a in args)
    assert "--metrics-config=summary_latencies=true" in args
    spec = tmp_path / "spec.yaml"
    spec.write_text(TABULAR.read_text().replace("response_cache: false", "response_cache: true"))
    (tmp_path / "models").symlink_to(TABULAR.parent / "models")
    b = build(spec, tmp_path / "b", device="cpu").output
    out = deploy_k8s(b, tmp_path / "k", sets=["model_control_mode=poll"]).output
    args = yaml.safe_load((out / "deployment.yaml").read_text())["spec"]["template"]["spec"]["containers"][0]["args"]
    assert any(a.startswith("--cache-config=local,size=") for a in args)
    assert "--model-control-mode=poll" in args
    panels = [t for t, _ in queries(json.loads((out / "dashboard.json").read_text()))]
    assert "Response cache hit rate" in panels


def test_dashboard_has_the_panels(outputs: dict[str, Path]) -> None:
    gpu = {t for t, _ in queries(json.loads((outputs["gpu"] / "dashboard.json").read_text()))}
    assert {
        "Request rate",
        "Latency p50 / p99",
        "Queue vs compute time per request",
        "Batch size formed",
        "Error rate",
        "GPU utilization",
        "GPU memory used",
    } <= gpu
    cm = yaml.safe_load((outputs["gpu"] / "dashboard-configmap.yaml").read_text())
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(next(iter(cm["data"].values()))) == json.loads((outputs["gpu"] / "dashboard.json").read_text())


def test_kustomization_lists_every_manifest(outputs: dict[str, Path]) -> None:
    for out in outputs.values():
        k = yaml.safe_load((out / "kustomization.yaml").read_text())
        assert sorted(k["resources"]) == sorted(p.name for p in out.glob("*.yaml") if p.name != "kustomization.yaml")
        readme = (out / "README.md").read_text()
        assert all(f"`{r}`" in readme for r in k["resources"])


# --- promtool ----------------------------------------------------------------------------------------------------

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool missing: apt-get install prometheus")


@needs_promtool
@pytest.mark.parametrize("kind", ["gpu", "cpu", "torchserve"])
def test_promtool_checks_the_rules(outputs: dict[str, Path], kind: str, tmp_path: Path) -> None:
    assert PROMTOOL
    r = subprocess.run([PROMTOOL, "check", "rules", str(outputs[kind] / "alerts.rules.yml")], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    # the PrometheusRule carries the same groups
    rule = yaml.safe_load((outputs[kind] / "prometheusrule.yaml").read_text())
    plain = yaml.safe_load((outputs[kind] / "alerts.rules.yml").read_text())
    assert rule["spec"]["groups"] == plain["groups"]


def _expand(text: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m[1], ""), text)


@needs_promtool
def test_promtool_fires_each_alert_and_keeps_it_silent(outputs: dict[str, Path], tmp_path: Path) -> None:
    """Series for the CPU build (tabular, p99 SLO 50 ms, error rate 1 %, queue time target 2000 µs) that break
    every objective, series that keep all of them, and no series at all (metrics absent)."""
    assert PROMTOOL
    rules = outputs["cpu"] / "alerts.rules.yml"
    alerts = {r["alert"]: r for r in yaml.safe_load(rules.read_text())["groups"][0]["rules"]}
    assert set(alerts) == {
        "TabularMetricsAbsent",
        "TabularP99LatencyHigh",
        "TabularErrorRateHigh",
        "TabularAutoscalingSaturated",
    }
    base = 'job="tabular-metrics", namespace="default", model="classifier", version="1", pod="p0"'

    def series(queue_per_s: int, failures_per_s: int, p99_us: int) -> list[dict[str, str]]:
        return [
            {"series": f"nv_inference_request_success{{{base}}}", "values": "0+150x120"},  # 10 req/s
            {"series": f'nv_inference_request_failure{{{base}, reason="BACKEND"}}', "values": f"0+{failures_per_s * 15}x120"},
            {"series": f"nv_inference_queue_duration_us{{{base}}}", "values": f"0+{queue_per_s * 15}x120"},
            {"series": f'nv_inference_request_summary_us{{{base}, quantile="0.99"}}', "values": f"{p99_us}x120"},
        ]  # fmt: skip

    def exp(name: str, labels: dict[str, str]) -> dict[str, Any]:
        a = alerts[name]
        full = {**labels, **a["labels"]}
        return {
            "exp_labels": full,
            "exp_annotations": {k: _expand(v, full) for k, v in a["annotations"].items()},
        }

    model = {"model": "classifier"}
    sel = {"job": "tabular-metrics", "namespace": "default"}
    tests = [
        {  # every objective broken: 100 ms queue per request, 2 failures/s of 12, p99 80 ms
            "interval": "15s",
            "input_series": series(100_000, 2, 80_000),
            "alert_rule_test": [
                {"eval_time": "20m", "alertname": "TabularP99LatencyHigh", "exp_alerts": [exp("TabularP99LatencyHigh", model)]},
                {"eval_time": "20m", "alertname": "TabularErrorRateHigh", "exp_alerts": [exp("TabularErrorRateHigh", model)]},
                {"eval_time": "20m", "alertname": "TabularAutoscalingSaturated", "exp_alerts": [exp("TabularAutoscalingSaturated", {})]},
                {"eval_time": "20m", "alertname": "TabularMetricsAbsent", "exp_alerts": []},
                {"eval_time": "3m", "alertname": "TabularP99LatencyHigh", "exp_alerts": []},  # `for: 5m` not yet over
            ],
        },
        {  # healthy: 10 µs queue per request, no failures, p99 10 ms
            "interval": "15s",
            "input_series": series(100, 0, 10_000),
            "alert_rule_test": [
                {"eval_time": "20m", "alertname": n, "exp_alerts": []} for n in alerts
            ],
        },
        {  # nothing scraped: only the absence alert fires
            "interval": "15s",
            "input_series": [{"series": 'up{job="other"}', "values": "1x120"}],
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": "TabularMetricsAbsent", "exp_alerts": [exp("TabularMetricsAbsent", sel)]},
                {"eval_time": "10m", "alertname": "TabularAutoscalingSaturated", "exp_alerts": []},
            ],
        },
    ]  # fmt: skip
    shutil.copy(rules, tmp_path / "alerts.rules.yml")
    (tmp_path / "test.yml").write_text(yaml.safe_dump({"rule_files": ["alerts.rules.yml"], "tests": tests}))
    r = subprocess.run([PROMTOOL, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_error_alert_fires_on_a_python_models_own_error_count(outputs: dict[str, Path], tmp_path: Path) -> None:
    """Triton 2.51 counts a Python model's error responses as successes (nv_inference_request_failure stays 0):
    the alert adds the model's own repoforge_model_errors_total. A native model without that counter still alerts
    on Triton's failures, and a Python model with no errors stays silent."""
    assert PROMTOOL
    rules = outputs["cpu"] / "alerts.rules.yml"
    rule = next(
        r for r in yaml.safe_load(rules.read_text())["groups"][0]["rules"] if r["alert"] == "TabularErrorRateHigh"
    )
    assert "repoforge_model_errors_total" in rule["expr"]

    def base(model: str) -> str:
        return f'job="tabular-metrics", namespace="default", model="{model}", version="1", pod="p0"'

    def case(own_per_s: int | None, triton_per_s: int, fires: bool) -> dict[str, Any]:
        series = [
            {"series": f"nv_inference_request_success{{{base('classifier')}}}", "values": "0+150x120"},  # 10 req/s
            {"series": f'nv_inference_request_failure{{{base("classifier")}, reason="BACKEND"}}', "values": f"0+{triton_per_s * 15}x120"},
        ]  # fmt: skip
        if own_per_s is not None:
            series.append({"series": f"repoforge_model_errors_total{{{base('classifier')}}}", "values": f"0+{own_per_s * 15}x120"})  # fmt: skip
        labels = {"model": "classifier", **rule["labels"]}
        expected = [{"exp_labels": labels, "exp_annotations": {k: _expand(v, labels) for k, v in rule["annotations"].items()}}]  # fmt: skip
        return {
            "interval": "15s",
            "input_series": series,
            "alert_rule_test": [
                {"eval_time": "20m", "alertname": rule["alert"], "exp_alerts": expected if fires else []}
            ],
        }

    tests = [
        case(own_per_s=3, triton_per_s=0, fires=True),  # a Python model answering 3 of 10 requests with errors
        case(own_per_s=None, triton_per_s=2, fires=True),  # a native model: Triton's own failures
        case(own_per_s=0, triton_per_s=0, fires=False),
    ]
    shutil.copy(rules, tmp_path / "alerts.rules.yml")
    (tmp_path / "test.yml").write_text(yaml.safe_dump({"rule_files": ["alerts.rules.yml"], "tests": tests}))
    r = subprocess.run([PROMTOOL, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


# --- errors ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cpu_build(outputs: dict[str, Path]) -> Path:
    return outputs["cpu"].parent / "cpu-build"


@pytest.mark.parametrize(
    ("sets", "expect"),
    [
        (["replicas.max=0"], "--set replicas.max=0 deploy.replicas.max: Input should be greater than or equal to 1"),
        (
            ["replicas={min: 5, max: 2}"],
            "--set replicas={min: 5, max: 2} deploy.replicas.max: max 2 is less than min 5",
        ),
        (["autoscale.metric=qps"], "--set autoscale.metric=qps deploy.autoscale.metric: Input should be"),
        (["slo.p99_ms=fast"], "--set slo.p99_ms=fast deploy.slo.p99_ms: Input should be a valid number"),
        (["replicas.maxx=3"], "unknown field 'maxx' (did you mean 'max'?)"),
        (["autoscale.metric=gpu_utilization"], "gpu_utilization has no data on a --device cpu build"),
    ],
)
def test_bad_override_is_located_and_writes_nothing(
    cpu_build: Path, tmp_path: Path, sets: list[str], expect: str
) -> None:
    with pytest.raises(SpecError) as info:
        deploy_k8s(cpu_build, tmp_path / "out", sets=sets)
    assert expect in str(info.value)
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def test_cli_usage_errors_and_refusals(cpu_build: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(main, ["deploy", "k8s", str(cpu_build), "-o", str(tmp_path / "o"), "--set", "novalue"])
    assert r.exit_code == 2 and "expected KEY=VALUE" in r.output
    r = runner.invoke(main, ["deploy", "k8s", str(tmp_path / "missing"), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "repoforge build" in r.output
    r = runner.invoke(main, ["deploy", "k8s", str(cpu_build), "-o", str(tmp_path / "o"), "--set", "replicas.max=12"])
    assert r.exit_code == 0, r.output
    d = next(yaml.safe_load_all((tmp_path / "o" / "scaledobject.yaml").read_text()))
    assert d["spec"]["maxReplicaCount"] == 12
    r = runner.invoke(main, ["deploy", "k8s", str(cpu_build), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--force" in r.output
    r = runner.invoke(main, ["deploy", "k8s", str(cpu_build), "-o", str(tmp_path / "o"), "--force", "--json"])
    assert r.exit_code == 0 and "README.md" in json.loads(r.output)["files"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(BuildError):
        deploy_k8s(cpu_build, tmp_path / "mine", force=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_doctor_says_whether_promtool_and_tracing_are_there() -> None:
    from repoforge.doctor import doctor

    checks = {c.name: c for c in doctor()}
    assert checks["promtool"].ok == (PROMTOOL is not None)
    assert "promtool" in checks and "prometheus" in checks
    # the bundled tritonserver 2.51 (nvidia-pytriton 0.7.0) has the OpenTelemetry trace mode; the integration
    # test proves spans arrive
    assert checks["tracing (otel)"].ok, checks["tracing (otel)"].detail


def test_torchserve_build_refuses_triton_only_deploy_settings(tmp_path: Path) -> None:
    spec = _torchserve_spec(tmp_path)
    spec.write_text(
        spec.read_text().replace(
            "  autoscale: {metric: request_rate, target: 50}\n",
            "  autoscale: {metric: pending_requests}\n  tracing: {otlp_endpoint: 'http://otel:4318/v1/traces'}\n",
        )
    )
    with pytest.raises(SpecError) as info:
        build(spec, tmp_path / "out", target="torchserve", device="cpu")
    text = str(info.value)
    assert (
        "spec.yaml:10:" in text and "deploy.autoscale.metric: TorchServe exports no metric for pending_requests" in text
    )
    assert "deploy.tracing: TorchServe has no OpenTelemetry export" in text
    assert not (tmp_path / "out").exists()
