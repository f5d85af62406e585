"""`deploy k8s` with `rollout:`: the Flagger and Argo Rollouts files match their goldens, use only fields their API
references define (allow-lists transcribed below, with the source of each), judge on the spec's thresholds, treat
no data as a failure (promtool evaluates the queries on synthetic series: too few rows, primary pods, an absent
errors counter), and the drift alert fires and stays silent.

No typed package exists for these CRDs (cloudcoil has none), hence the allow-lists. Sources read:
- Flagger: fluxcd/flagger artifacts/flagger/crd.yaml (canaries.flagger.app and metrictemplates.flagger.app,
  v1beta1 openAPIV3Schema), pkg/metrics/providers/prometheus.go (empty or NaN result: ErrNoValuesFound) and the
  scheduler's runAnalysis (a false check increments failedChecks).
- Argo Rollouts: argoproj/argo-rollouts pkg/apis/rollouts/v1alpha1/analysis_types.go (AnalysisTemplateSpec,
  Metric, MetricProvider, PrometheusMetric, Argument) and types.go (RolloutSpec, ObjectRef, RolloutStrategy,
  CanaryStrategy, CanaryStep, RolloutPause, BlueGreenStrategy, RolloutAnalysis(Background), RolloutAnalysisTemplate,
  AnalysisRunArgument, ArgumentValueFrom), metricproviders/prometheus/prometheus.go (a vector becomes []float64,
  empty when Prometheus returns nothing) and utils/evaluate/evaluate.go (both conditions set: neither true is
  Inconclusive; an evaluation error is a measurement Error).

Regenerate the goldens with REPOFORGE_UPDATE_GOLDEN=1, then read the diff.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import assert_matches_golden
from plugin_specs import scale_model

from repoforge.build import build
from repoforge.deploy.command import deploy_k8s
from repoforge.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]
SCALE = ROOT / "tests" / "data" / "plugins" / "scale.py"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool missing: apt-get install prometheus")

SPEC = """\
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
      canary: {{model: model_b, percent: 10}}
{extra_router}rollout:
{rollout}"""
CANARY = {
    "extra_router": "      shadow: {model: model_b}\n      drift: {reference: profile.json, window: 1000}\n",
    "rollout": "  router: router\n  candidate: model_b\n  max_p99_ms: 50\n  threshold: 3\n",
}
BLUE_GREEN = {
    "extra_router": "",
    "rollout": "  router: router\n  candidate: model_b\n  strategy: blue-green\n  interval: 2m\n  keep_blue: 15m\n",
}


def _build(root: Path, parts: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    import numpy as np

    from repoforge.drift.profile import make_profile, write_profile

    np.savez(root / "ref.npz", X=np.random.default_rng(0).normal(0, 1, (500, 4)))
    write_profile(make_profile(root / "ref.npz", "router"), root / "profile.json", force=True)
    spec = root / "spec.yaml"
    scale = SCALE.as_posix()
    models = scale_model("model_a", 1, scale) + scale_model("model_b", 2, scale)
    spec.write_text(SPEC.format(scale_models=models, **parts), encoding="utf-8")
    return build(spec, root / "build", device="cpu").output


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rollout")
    return {
        "rollout-canary": deploy_k8s(_build(root / "c", CANARY), root / "c" / "k8s").output,
        "rollout-bluegreen": deploy_k8s(_build(root / "b", BLUE_GREEN), root / "b" / "k8s").output,
    }


@pytest.mark.parametrize("kind", ["rollout-canary", "rollout-bluegreen"])
def test_manifests_match_goldens(outputs: dict[str, Path], kind: str) -> None:
    assert_matches_golden(outputs[kind], kind)


# --- fields against the API references ----------------------------------------------------------------------------

FREE = "*"  # a map with free keys (labels, annotations)
META = {"metadata": {"name", "namespace", "labels", "annotations"}, "metadata.labels": FREE}
#: dotted path ("[]" = each item of a list) → the keys the schema defines there
FLAGGER: dict[str, dict[str, Any]] = {
    "Canary": {
        "": {"apiVersion", "kind", "metadata", "spec"},
        **META,
        "spec": {"provider", "metricsServer", "progressDeadlineSeconds", "targetRef", "autoscalerRef", "ingressRef",
                 "routeRef", "upstreamRef", "service", "skipAnalysis", "revertOnDeletion", "suspend", "analysis"},
        "spec.targetRef": {"apiVersion", "kind", "name"},
        "spec.autoscalerRef": {"apiVersion", "kind", "name", "primaryScalerQueries", "primaryScalerReplicas"},
        "spec.service": {"name", "port", "portName", "appProtocol", "trafficDistribution", "targetPort",
                         "portDiscovery", "headless", "timeout", "backendTimeout", "meshName", "backends", "hosts",
                         "delegation", "match", "apex", "primary", "canary", "unmanagedMetadata"},
        "spec.analysis": {"interval", "iterations", "threshold", "maxWeight", "stepWeight", "stepWeights",
                          "stepWeightPromotion", "mirror", "mirrorWeight", "primaryReadyThreshold",
                          "canaryReadyThreshold", "match", "metrics", "alerts", "webhooks", "sessionAffinity"},
        "spec.analysis.metrics[]": {"name", "interval", "threshold", "thresholdRange", "query", "templateRef",
                                    "templateVariables"},
        "spec.analysis.metrics[].thresholdRange": {"min", "max"},
        "spec.analysis.metrics[].templateRef": {"name", "namespace"},
    },
    "MetricTemplate": {
        "": {"apiVersion", "kind", "metadata", "spec"},
        **META,
        "spec": {"provider", "query"},
        "spec.provider": {"type", "address", "headers", "secretRef", "region", "insecureSkipVerify"},
    },
}  # fmt: skip
_ANALYSIS = {"templates", "args", "dryRun", "measurementRetention", "analysisRunMetadata"}
_ARG = {"name", "value", "valueFrom"}
ARGO: dict[str, dict[str, Any]] = {
    "AnalysisTemplate": {
        "": {"apiVersion", "kind", "metadata", "spec"},
        **META,
        "spec": {"metrics", "args", "dryRun", "measurementRetention"},
        "spec.args[]": _ARG,
        "spec.metrics[]": {"name", "interval", "initialDelay", "count", "successCondition", "failureCondition",
                           "failureLimit", "inconclusiveLimit", "consecutiveErrorLimit", "provider"},
        "spec.metrics[].provider": {"prometheus", "kayenta", "web", "wavefront", "job"},
        "spec.metrics[].provider.prometheus": {"address", "query", "timeout", "headers"},
    },
    "Rollout": {
        "": {"apiVersion", "kind", "metadata", "spec"},
        **META,
        "spec": {"replicas", "selector", "template", "workloadRef", "minReadySeconds", "rollbackWindow", "strategy",
                 "revisionHistoryLimit", "paused", "progressDeadlineSeconds", "progressDeadlineAbort", "restartAt",
                 "analysis"},
        "spec.workloadRef": {"apiVersion", "kind", "name", "scaleDown"},
        "spec.strategy": {"blueGreen", "canary"},
        "spec.strategy.canary": {"canaryService", "stableService", "steps", "trafficRouting", "maxUnavailable",
                                 "maxSurge", "analysis", "antiAffinity", "canaryMetadata", "stableMetadata",
                                 "scaleDownDelaySeconds", "scaleDownDelayRevisionLimit", "abortScaleDownDelaySeconds",
                                 "dynamicStableScale", "pingPong", "minPodsPerReplicaSet"},
        "spec.strategy.canary.steps[]": {"setWeight", "pause", "experiment", "analysis", "setCanaryScale",
                                         "setHeaderRoute", "setMirrorRoute"},
        "spec.strategy.canary.steps[].pause": {"duration"},
        "spec.strategy.canary.analysis": {*_ANALYSIS, "startingStep"},
        "spec.strategy.canary.analysis.templates[]": {"templateName", "clusterScope"},
        "spec.strategy.canary.analysis.args[]": _ARG,
        "spec.strategy.canary.analysis.args[].valueFrom": {"podTemplateHashValue", "fieldRef"},
        "spec.strategy.blueGreen": {"activeService", "previewService", "previewReplicaCount", "autoPromotionEnabled",
                                    "autoPromotionSeconds", "maxUnavailable", "scaleDownDelaySeconds",
                                    "scaleDownDelayRevisionLimit", "prePromotionAnalysis", "antiAffinity",
                                    "postPromotionAnalysis", "previewMetadata", "activeMetadata",
                                    "abortScaleDownDelaySeconds"},
        "spec.strategy.blueGreen.postPromotionAnalysis": _ANALYSIS,
        "spec.strategy.blueGreen.postPromotionAnalysis.templates[]": {"templateName", "clusterScope"},
        "spec.strategy.blueGreen.postPromotionAnalysis.args[]": _ARG,
        "spec.strategy.blueGreen.postPromotionAnalysis.args[].valueFrom": {"podTemplateHashValue", "fieldRef"},
    },
}  # fmt: skip
SCHEMAS = {"flagger.app/v1beta1": FLAGGER, "argoproj.io/v1alpha1": ARGO}


def unknown_fields(doc: dict[str, Any]) -> list[str]:
    """Paths of keys the object's schema does not define, and of objects the allow-list does not cover."""
    schema = SCHEMAS[doc["apiVersion"]][doc["kind"]]
    bad: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, path + "[]")
            return
        if not isinstance(node, dict):
            return
        allowed = schema.get(path)
        if allowed is None:
            bad.append(f"{path or '<root>'}: an object the allow-list does not cover")
            return
        if allowed == FREE:
            return
        for key, value in node.items():
            if key not in allowed:
                bad.append(f"{path}.{key}" if path else key)
            else:
                walk(value, f"{path}.{key}" if path else key)

    walk(doc, "")
    return bad


def _docs(out: Path, name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((out / name).read_text(encoding="utf-8")) if d]


@pytest.mark.parametrize("kind", ["rollout-canary", "rollout-bluegreen"])
def test_every_field_is_in_the_api_reference(outputs: dict[str, Path], kind: str) -> None:
    docs = _docs(outputs[kind], "rollout-flagger.yaml") + _docs(outputs[kind], "rollout-argo.yaml")
    assert {d["kind"] for d in docs} == {"Canary", "MetricTemplate", "AnalysisTemplate", "Rollout"}
    for d in docs:
        assert unknown_fields(d) == [], f"{d['kind']} {d['metadata']['name']}"
        assert d["metadata"]["namespace"] == "default"


def test_field_check_catches_a_misspelt_field(outputs: dict[str, Path]) -> None:
    canary = _docs(outputs["rollout-canary"], "rollout-flagger.yaml")[0]
    canary["spec"]["analysis"]["stepWeight"] = 5  # valid
    canary["spec"]["analysis"]["metrics"][0]["thresholdrange"] = {"max": 1}
    canary["spec"]["analysis"]["webhooks"] = [{"name": "load", "url": "http://x"}]
    assert unknown_fields(canary) == [
        "spec.analysis.metrics[].thresholdrange",
        "spec.analysis.webhooks[]: an object the allow-list does not cover",
    ]


def test_flagger_schema_constraints(outputs: dict[str, Path]) -> None:
    """What the CRD's schema enforces besides field names: analysis oneOf, the interval pattern, enums, required."""
    for kind in outputs:
        canary, *templates = _docs(outputs[kind], "rollout-flagger.yaml")
        a = canary["spec"]["analysis"]
        assert {"interval", "threshold"} <= set(a) and sum(
            k in a for k in ("iterations", "stepWeight", "stepWeights")
        ) == 1
        for interval in [a["interval"], *(m["interval"] for m in a["metrics"])]:
            assert re.match(r"^[0-9]+(m|s)", interval), interval
        assert canary["spec"]["targetRef"]["kind"] in ("DaemonSet", "Deployment", "Service")
        assert canary["spec"]["autoscalerRef"]["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")
        assert "port" in canary["spec"]["service"]
        names = {t["metadata"]["name"] for t in templates}
        assert {m["templateRef"]["name"] for m in a["metrics"]} == names
        assert all(m["name"] not in ("request-success-rate", "request-duration") for m in a["metrics"])  # builtins
        for t in templates:
            assert t["spec"]["provider"]["type"] == "prometheus" and t["spec"]["query"]
    # the Argo side: arguments the template declares are the ones the Rollout passes
    for kind in outputs:
        template, rollout = _docs(outputs[kind], "rollout-argo.yaml")
        strategy = rollout["spec"]["strategy"]
        analysis = (
            strategy["canary"]["analysis"] if "canary" in strategy else strategy["blueGreen"]["postPromotionAnalysis"]
        )
        assert {a["name"] for a in analysis["args"]} == {a["name"] for a in template["spec"]["args"]}
        assert analysis["templates"] == [{"templateName": template["metadata"]["name"]}]
        for a in analysis["args"]:
            assert ("value" in a) != ("valueFrom" in a)
            assert a.get("valueFrom", {}).get("podTemplateHashValue", "Latest") in ("Stable", "Latest")  # fmt: skip


def test_policy_follows_the_spec(outputs: dict[str, Path]) -> None:
    canary, *templates = _docs(outputs["rollout-canary"], "rollout-flagger.yaml")
    a = canary["spec"]["analysis"]
    assert a["stepWeights"] == [5, 25, 50]  # steps without the final 100: Flagger promotes after the last
    assert (a["interval"], a["threshold"]) == ("30s", 3)
    bounds = {m["name"]: m["thresholdRange"] for m in a["metrics"]}
    assert bounds == {"error-rate": {"max": 0.01}, "latency-p99": {"max": 50.0}, "shadow-agreement": {"min": 0.99}}
    assert all(m["interval"] == "1m" for m in a["metrics"])  # the window: at least 4 scrapes
    for t in templates:
        q = t["spec"]["query"]
        assert "{{ namespace }}" in q and "{{ target }}" in q and "[{{ interval }}]" in q
        assert "nv_inference_request_failure" not in q
    template, rollout = _docs(outputs["rollout-canary"], "rollout-argo.yaml")
    for m in template["spec"]["metrics"]:
        assert (m["failureLimit"], m["consecutiveErrorLimit"], m["inconclusiveLimit"]) == (2, 0, 0)
        assert "count" not in m  # background analysis: runs until the rollout ends
        assert "{{args.canary-hash}}" in m["provider"]["prometheus"]["query"]
    steps = rollout["spec"]["strategy"]["canary"]["steps"]
    assert [s["setWeight"] for s in steps if "setWeight" in s] == [5, 25, 50]
    assert rollout["spec"]["workloadRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "released", "scaleDown": "onsuccess"}  # fmt: skip

    canary, *templates = _docs(outputs["rollout-bluegreen"], "rollout-flagger.yaml")
    a = canary["spec"]["analysis"]
    assert "stepWeights" not in a and a["iterations"] == 4 and a["mirror"] is True and a["interval"] == "2m"
    assert [m["name"] for m in a["metrics"]] == ["error-rate"]  # no p99 bound set, the candidate is not shadowed
    template, rollout = _docs(outputs["rollout-bluegreen"], "rollout-argo.yaml")
    bg = rollout["spec"]["strategy"]["blueGreen"]
    assert bg["scaleDownDelaySeconds"] == 900 and bg["activeService"] == "released"
    assert all(m["count"] == 4 and m["interval"] == "2m" for m in template["spec"]["metrics"])


def test_metrics_service_keeps_both_revisions_scraped(outputs: dict[str, Path]) -> None:
    svc = next(
        d for d in _docs(outputs["rollout-canary"], "services.yaml") if d["metadata"]["name"] == "released-metrics"
    )
    assert svc["spec"]["selector"] == {"app.kubernetes.io/instance": "released"}  # not the name Flagger renames
    k = yaml.safe_load((outputs["rollout-canary"] / "kustomization.yaml").read_text())
    assert "rollout-flagger.yaml" not in k["resources"] and "rollout-argo.yaml" not in k["resources"]
    readme = (outputs["rollout-canary"] / "README.md").read_text()
    assert "kubectl apply -f rollout-flagger.yaml" in readme and "kubectl apply -f rollout-argo.yaml" in readme


def _argo_eval(condition: str, result: list[float]) -> bool:
    """The conditions in Python: expr's && / || short-circuit like `and` / `or`, len() and indexing alike."""
    return bool(eval(condition.replace("&&", "and").replace("||", "or"), {"len": len}, {"result": result}))


@pytest.mark.parametrize(
    ("result", "phase"),
    [([], "Failed"), ([math.nan], "Failed"), ([0.005], "Successful"), ([0.01], "Successful"), ([0.02], "Failed")],
)
def test_argo_conditions_fail_on_no_data_and_are_never_inconclusive(
    outputs: dict[str, Path], result: list[float], phase: str
) -> None:
    """evaluate.go: failure if failureCondition, else Inconclusive unless successCondition; an exception would be
    an Error (what `result[0]` on an empty vector gives, argo-rollouts#1466)."""
    template, _ = _docs(outputs["rollout-canary"], "rollout-argo.yaml")
    m = next(m for m in template["spec"]["metrics"] if m["name"] == "error-rate")
    ok, bad = _argo_eval(m["successCondition"], result), _argo_eval(m["failureCondition"], result)
    assert ok != bad  # complementary: never Inconclusive
    assert ("Failed" if bad else "Successful") == phase


def test_values_flagger_and_argo_cannot_take_are_refused(tmp_path: Path) -> None:
    parts = {**BLUE_GREEN, "rollout": BLUE_GREEN["rollout"] + "  steps: [2.5, 100]\n  keep_blue: 500ms\n"}
    parts["rollout"] = parts["rollout"].replace("  keep_blue: 15m\n", "")
    b = _build(tmp_path / "s", parts)
    with pytest.raises(SpecError) as info:
        deploy_k8s(b, tmp_path / "out")
    text = str(info.value)
    assert "rollout.steps: Flagger and Argo Rollouts take whole percents" in text
    assert "rollout.keep_blue: Argo Rollouts takes whole seconds (got 500ms)" in text
    assert not (tmp_path / "out").exists()


# --- the queries on synthetic series (promtool) --------------------------------------------------------------------


def _fill(query: str) -> str:
    return (
        query.replace("{{ namespace }}", "default").replace("{{ target }}", "released").replace("{{ interval }}", "1m")
    )


@needs_promtool
def test_queries_give_the_value_or_nothing(outputs: dict[str, Path], tmp_path: Path) -> None:
    """Flagger's queries with its template variables substituted, on series of a canary pod
    (`released-<rs>-<id>`) and a primary pod (`released-primary-<rs>-<id>`, which must not count): the values at
    the thresholds' scale, nothing (no data, a failed check) with fewer than min_requests rows, 0 while the
    errors counter is absent."""
    assert PROMTOOL
    _canary, *templates = _docs(outputs["rollout-canary"], "rollout-flagger.yaml")
    q = {t["metadata"]["name"].removeprefix("released-"): _fill(t["spec"]["query"]) for t in templates}
    base = 'job="released-metrics", namespace="default", model="router"'
    canary_pod, primary_pod = 'pod="released-7d9f8b6c5-x2k4q"', 'pod="released-primary-5c6d7e8f9-a1b2c"'

    def counter(name: str, labels: str, per_15s: float) -> dict[str, str]:
        return {"series": f"{name}{{{base}, {labels}}}", "values": f"0+{per_15s:g}x40"}

    def buckets(pod: str, le_counts: dict[str, float]) -> list[dict[str, str]]:
        return [counter("repoforge_router_latency_us_bucket", f'{pod}, route="model_b", le="{le}"', n) for le, n in le_counts.items()]  # fmt: skip

    busy = [  # canary pod: 40 rows / 15 s (160 a minute), 2 % errors; shadow 95 % agreement; p99 within 20-50 ms
        counter("repoforge_router_rows_total", f'{canary_pod}, route="model_b"', 40),
        counter("repoforge_router_errors_total", f'{canary_pod}, route="model_b"', 0.8),
        counter("repoforge_shadow_rows_total", f'{canary_pod}, shadow="model_b", outcome="agree"', 38),
        counter("repoforge_shadow_rows_total", f'{canary_pod}, shadow="model_b", outcome="disagree"', 2),
        *buckets(canary_pod, {"10000": 20, "20000": 38, "50000": 40, "+Inf": 40}),
        # the primary pod: many rows and no errors, which would dilute the canary's error rate if selected
        counter("repoforge_router_rows_total", f'{primary_pod}, route="model_b"', 400),
        counter("repoforge_router_errors_total", f'{primary_pod}, route="model_b"', 0),
    ]
    idle = [counter("repoforge_router_rows_total", f'{canary_pod}, route="model_b"', 5)]  # 20 a minute < 50
    no_errors_series = [counter("repoforge_router_rows_total", f'{canary_pod}, route="model_b"', 40)]

    def sample(expr: str, value: float | None) -> dict[str, Any]:
        return {"expr": expr, "eval_time": "5m", "exp_samples": [] if value is None else [{"labels": "{}", "value": value}]}  # fmt: skip

    tests = [
        {"interval": "15s", "input_series": busy, "promql_expr_test": [
            sample(f'round(({q["error-rate"]}) * 1000)', 20), sample(f'round(({q["shadow-agreement"]}) * 100)', 95),
            sample(f'({q["latency-p99"]}) > bool 50', 0), sample(f'({q["latency-p99"]}) > bool 20', 1),
        ]},
        {"interval": "15s", "input_series": idle, "promql_expr_test": [
            sample(q["error-rate"], None), sample(q["latency-p99"], None), sample(q["shadow-agreement"], None),
        ]},
        {"interval": "15s", "input_series": no_errors_series, "promql_expr_test": [sample(q["error-rate"], 0)]},
    ]  # fmt: skip
    (tmp_path / "empty.rules.yml").write_text("groups: []\n")
    (tmp_path / "test.yml").write_text(yaml.safe_dump({"rule_files": ["empty.rules.yml"], "tests": tests}))
    r = subprocess.run([PROMTOOL, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_drift_alert_fires_and_stays_silent(outputs: dict[str, Path], tmp_path: Path) -> None:
    assert PROMTOOL
    rules = outputs["rollout-canary"] / "alerts.rules.yml"
    r = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    alert = next(
        a for a in yaml.safe_load(rules.read_text())["groups"][0]["rules"] if a["alert"] == "ReleasedInputDrift"
    )
    assert alert["labels"] == {"severity": "warning"}
    dash = (outputs["rollout-canary"] / "dashboard.json").read_text()
    assert "Input drift PSI (plugin)" in dash and "repoforge_drift_psi" in dash
    assert "InputDrift" not in (outputs["rollout-bluegreen"] / "alerts.rules.yml").read_text()
    base = 'job="released-metrics", namespace="default", model="router", pod="p0"'

    def psi(feature: str, values: str) -> dict[str, str]:
        return {"series": f'repoforge_drift_psi{{{base}, feature="{feature}"}}', "values": values}

    labels = {"model": "router", "feature": "X", "severity": "warning"}
    annotations = {
        k: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m[1]], v) for k, v in alert["annotations"].items()
    }
    tests = [
        {  # X shifts (PSI 0.35) for 30 minutes, KEY stays stable (0.05): only X fires, and only after `for`
            "interval": "1m",
            "input_series": [psi("X", "0.35x40"), psi("KEY", "0.05x40")],
            "alert_rule_test": [
                {"eval_time": "30m", "alertname": "ReleasedInputDrift",
                 "exp_alerts": [{"exp_labels": labels, "exp_annotations": annotations}]},
                {"eval_time": "10m", "alertname": "ReleasedInputDrift", "exp_alerts": []},
            ],
        },
        {  # one noisy spike above 0.2 is not drift
            "interval": "1m",
            "input_series": [psi("X", "0.05x10 0.5 0.05x30")],
            "alert_rule_test": [{"eval_time": "30m", "alertname": "ReleasedInputDrift", "exp_alerts": []}],
        },
    ]  # fmt: skip
    shutil.copy(rules, tmp_path / "alerts.rules.yml")
    (tmp_path / "test.yml").write_text(yaml.safe_dump({"rule_files": ["alerts.rules.yml"], "tests": tests}))
    r = subprocess.run([PROMTOOL, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
