"""`deploy.gateway:` in `deploy k8s`: the gateway's Deployment and Service, the workers' Deployment and KEDA's
redis-streams ScaledObject (scale to zero on the consumer group's lag), each checked through its typed model
(cloudcoil's models of the Kubernetes schemas and of KEDA's CRD) and by kubernetes-validate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from repoforge.build import build
from repoforge.deploy.command import KUBERNETES_VERSION, deploy_k8s
from repoforge.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]
TABULAR = ROOT / "examples" / "tabular" / "spec.yaml"
GATEWAY = "gateway={image: 'registry.example/repoforge:0.1', async: {request_timeout_s: 30}, workers: {max_replicas: 5, activation_lag: 2}}"


@pytest.fixture(scope="module")
def cpu_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(TABULAR, tmp_path_factory.mktemp("gw-deploy") / "build", device="cpu").output


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def test_gateway_and_workers_scaled_by_keda_on_the_queue_lag(cpu_build: Path, tmp_path: Path) -> None:
    from cloudcoil.models.keda import v1alpha1 as keda
    from cloudcoil.models.kubernetes.apps import v1 as apps
    from cloudcoil.models.kubernetes.core import v1 as core

    out = deploy_k8s(cpu_build, tmp_path / "out", sets=["redis={deploy: true}", GATEWAY]).output
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _docs(out / "gateway.yaml")}
    assert set(docs) == {("Deployment", "tabular-gateway"), ("Service", "tabular-gateway"),
                         ("Deployment", "tabular-worker"), ("ScaledObject", "tabular-worker")}  # fmt: skip
    models = {"Deployment": apps.Deployment, "Service": core.Service, "ScaledObject": keda.ScaledObject}
    kv = pytest.importorskip("kubernetes_validate")
    for (kind, _name), doc in docs.items():
        again = models[kind].model_validate(doc).model_dump(mode="json", by_alias=True, exclude_none=True)
        assert again == doc
        if kind != "ScaledObject":
            kv.validate(doc, KUBERNETES_VERSION, strict=True)
    gw = docs[("Deployment", "tabular-gateway")]["spec"]["template"]["spec"]["containers"][0]
    assert gw["args"][:2] == ["gateway", "tabular-grpc.default.svc:8001"]
    assert "$(REPOFORGE_REDIS_URL)" in gw["args"] and "--request-timeout" in gw["args"]
    assert any(e["name"] == "REPOFORGE_REDIS_URL" for e in gw["env"])
    worker = docs[("Deployment", "tabular-worker")]["spec"]
    assert "replicas" not in worker  # KEDA owns it
    assert worker["template"]["spec"]["containers"][0]["args"][0] == "worker"
    so = docs[("ScaledObject", "tabular-worker")]["spec"]
    assert so["minReplicaCount"] == 0 and so["maxReplicaCount"] == 5
    lag = so["triggers"][0]
    assert lag["type"] == "redis-streams" and lag["metadata"]["stream"] == "repoforge:async:requests"
    assert lag["metadata"]["consumerGroup"] == "workers" and lag["metadata"]["activationLagCount"] == "2"
    assert lag["metadata"]["address"] == "tabular-redis.default.svc:6379"
    # the gateway's pods are not the server's: the server Service must not select them
    server_sel = next(d for d in _docs(out / "services.yaml") if d["metadata"]["name"] == "tabular")["spec"]["selector"]
    pod_labels = docs[("Deployment", "tabular-gateway")]["spec"]["template"]["metadata"]["labels"]
    assert not all(pod_labels.get(k) == v for k, v in server_sel.items())
    assert "gateway.yaml" in (out / "kustomization.yaml").read_text()


def test_gateway_without_async_has_no_workers_and_async_needs_redis(cpu_build: Path, tmp_path: Path) -> None:
    out = deploy_k8s(cpu_build, tmp_path / "plain", sets=["gateway={image: 'r/repoforge:1'}"]).output
    assert {d["kind"] for d in _docs(out / "gateway.yaml")} == {"Deployment", "Service"}
    with pytest.raises(SpecError, match="the queue lives in Redis"):
        deploy_k8s(cpu_build, tmp_path / "bad", sets=["gateway={image: 'r/repoforge:1', async: {}}"])
    assert not (tmp_path / "bad").exists()
