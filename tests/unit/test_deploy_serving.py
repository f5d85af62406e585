"""`deploy k8s` of a build with `serving:` (issue 25): Triton in explicit model control with the rate limiter's
flags, the multiplexing gateway as a sidecar of every server pod (one gateway per Triton keeps the reference counts
whole), its `serving` section as a ConfigMap, the tenants' keys from a Secret (never from the spec or the files);
every object checked by kubernetes-validate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from repoforge.build import build
from repoforge.deploy.command import KUBERNETES_VERSION, deploy_k8s
from repoforge.errors import SpecError
from repoforge.gateway.command import ServingOptions, serving_settings

ROOT = Path(__file__).resolve().parents[2]
TABULAR = ROOT / "examples" / "tabular"
GATEWAY = "gateway={image: 'registry.example/repoforge:0.1', port: 9000}"
SERVING = """serving:
  max_loaded: 1
  memory_budget: 2GiB
  tenants:
    - {name: gold, api_key_env: GOLD_KEY, priority: 1, rate: 50/s}
    - {name: bronze, api_key_env: BRONZE_KEY, priority: 2}
  rate_limiter: {resources: [{name: cpu_slots, count: 1}]}
  rate_limit_resources: [{name: cpu_slots, count: 2}]
"""


@pytest.fixture(scope="module")
def serving_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serving-deploy")
    shutil.copytree(TABULAR, root / "tabular")
    spec = root / "tabular" / "spec.yaml"
    spec.write_text(spec.read_text() + SERVING)
    return build(spec, root / "build", device="cpu").output


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def test_the_gateway_runs_beside_triton_in_explicit_mode(serving_build: Path, tmp_path: Path) -> None:
    out = deploy_k8s(serving_build, tmp_path / "out", sets=[GATEWAY]).output
    kv = pytest.importorskip("kubernetes_validate")
    for f in ("deployment.yaml", "gateway.yaml", "services.yaml"):
        for doc in _docs(out / f):
            kv.validate(doc, KUBERNETES_VERSION, strict=True)
    (dep,) = _docs(out / "deployment.yaml")
    pod = dep["spec"]["template"]["spec"]
    assert pod["shareProcessNamespace"] is True  # the gateway measures tritonserver's memory for the budget
    triton, gw = pod["containers"]
    assert "--model-control-mode=explicit" in triton["args"]
    assert not any(a.startswith("--load-model") for a in triton["args"])  # the gateway loads on demand
    assert "--rate-limit=execution_count" in triton["args"]
    assert "--rate-limit-resource=cpu_slots:2" in triton["args"]
    assert gw["name"] == "gateway" and gw["command"] == ["repoforge"]
    assert gw["args"][:2] == ["gateway", "127.0.0.1:8001"]
    assert gw["args"][gw["args"].index("--serving") + 1] == "/etc/repoforge/serving.json"
    assert gw["ports"] == [{"name": "gateway", "containerPort": 9000, "protocol": "TCP"}]
    keys = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in gw["env"]}
    assert keys == {"GOLD_KEY": {"name": "tabular-tenants", "key": "GOLD_KEY"},
                    "BRONZE_KEY": {"name": "tabular-tenants", "key": "BRONZE_KEY"}}  # fmt: skip
    assert {"name": "serving", "configMap": {"name": "tabular-serving"}} in pod["volumes"]
    assert gw["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "gateway"}

    docs = {(d["kind"], d["metadata"]["name"]): d for d in _docs(out / "gateway.yaml")}
    assert set(docs) == {("ConfigMap", "tabular-serving"), ("Service", "tabular-gateway")}  # no second Deployment
    serving = json.loads(docs[("ConfigMap", "tabular-serving")]["data"]["serving.json"])
    assert [t["api_key_env"] for t in serving["tenants"]] == ["GOLD_KEY", "BRONZE_KEY"]
    assert serving["max_loaded"] == 1 and serving["memory_budget"] == 2 * 1024**3
    svc = docs[("Service", "tabular-gateway")]["spec"]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in svc["selector"].items())  # the server's pods
    assert svc["ports"] == [{"name": "http", "port": 9000, "targetPort": "gateway", "protocol": "TCP"}]
    readme = (out / "README.md").read_text()
    assert "create secret generic tabular-tenants --from-literal=GOLD_KEY=<key>" in readme
    assert "gateway.yaml" in (out / "kustomization.yaml").read_text()

    # the sidecar's --serving file gives a gateway in front of a running Triton the build's settings
    mounted = tmp_path / "serving.json"
    mounted.write_text(docs[("ConfigMap", "tabular-serving")]["data"]["serving.json"])
    settings = serving_settings("127.0.0.1:8001", ServingOptions(serving_file=mounted))
    assert settings is not None and settings.max_loaded == 1 and settings.memory_budget == 2 * 1024**3
    assert [t["name"] for t in settings.tenants] == ["gold", "bronze"]


def test_without_serving_nothing_changes(tmp_path: Path) -> None:
    plain = build(TABULAR / "spec.yaml", tmp_path / "build", device="cpu").output
    out = deploy_k8s(plain, tmp_path / "out", sets=[GATEWAY]).output
    (dep,) = _docs(out / "deployment.yaml")
    pod = dep["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1 and "shareProcessNamespace" not in pod
    assert "--model-control-mode=none" in pod["containers"][0]["args"]
    assert {d["kind"] for d in _docs(out / "gateway.yaml")} == {"Deployment", "Service"}


@pytest.mark.parametrize(
    ("sets", "field", "says"),
    [
        ([], "deploy.gateway", "set deploy.gateway.image"),
        (["redis={deploy: true}", "gateway={image: 'r/repoforge:1', async: {}}"], "deploy.gateway.async",
         "do not load models on demand"),
        ([GATEWAY, "model_control_mode=poll"], "deploy.model_control_mode", "remove model_control_mode"),
    ],
)  # fmt: skip
def test_what_serving_cannot_be_deployed_with(serving_build: Path, tmp_path: Path, sets: list[str], field: str,
                                              says: str) -> None:  # fmt: skip
    with pytest.raises(SpecError) as err:
        deploy_k8s(serving_build, tmp_path / "out", sets=sets)
    assert field in str(err.value) and says in str(err.value), str(err.value)
    assert not (tmp_path / "out").exists()
