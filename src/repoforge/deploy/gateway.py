"""`deploy.gateway:` as Kubernetes objects: the gateway's Deployment and Service in front of the server's gRPC
Service, and with `async:` the queue workers' Deployment scaled by KEDA's `redis-streams` scaler on the consumer
group's lag (`lagCount`, which allows scale to zero; a second trigger on pending entries keeps a worker while a
taken request is unanswered)."""

from __future__ import annotations

from urllib.parse import urlparse

from cloudcoil import apimachinery as meta
from cloudcoil.models.keda import v1alpha1 as keda
from cloudcoil.models.kubernetes.apps import v1 as apps
from cloudcoil.models.kubernetes.core import v1 as core
from pydantic import BaseModel

from repoforge.deploy import k8s
from repoforge.spec.deploy import REDIS_URL_ENV, DeploySpec
from repoforge.spec.gateway import GatewayDeploySpec

FILE = "gateway.yaml"
GROUP = "workers"  # repoforge.gateway.queue.GROUP (not imported: deploy must not pull in the ASGI stack)


def gateway_name(name: str) -> str:
    return f"{name}-gateway"[:63].rstrip("-")


def worker_name(name: str) -> str:
    return f"{name}-worker"[:63].rstrip("-")


def _labels(d: DeploySpec, name: str, part: str) -> tuple[dict[str, str], dict[str, str]]:
    """(object labels, selector): pods apart from the server's (their selector must not overlap it)."""
    sel = {"app.kubernetes.io/name": part, "app.kubernetes.io/instance": part}
    return {**k8s.labels(d, name), **sel, "app.kubernetes.io/part-of": name, "app.kubernetes.io/component": part}, sel


def _queue_args(g: GatewayDeploySpec) -> list[str]:
    q = g.async_
    if q is None:
        return []
    args = ["--redis", f"$({REDIS_URL_ENV})", "--queue", q.queue, "--request-timeout", f"{q.request_timeout_s:g}",
            "--max-deliveries", str(q.max_deliveries), "--result-ttl", str(q.result_ttl_s)]  # fmt: skip
    if q.visibility_timeout_s is not None:
        args += ["--visibility-timeout", f"{q.visibility_timeout_s:g}"]
    return args


def _deployment(
    d: DeploySpec, name: str, part: str, replicas: int | None, args: list[str], cpu: str, memory: str, port: int | None
) -> apps.Deployment:
    obj_labels, sel = _labels(d, name, part)
    g = d.gateway
    assert g is not None
    probe = (
        (
            lambda path: core.Probe(
                http_get=core.HTTPGetAction(path=path, port=meta.IntOrString("http")),
                period_seconds=10,
                failure_threshold=3,
            )
        )  # fmt: skip
        if port is not None
        else None
    )
    container = core.Container(
        name=part.rsplit("-", 1)[-1],
        image=g.image,
        command=["repoforge"],
        args=args,
        env=k8s.user_env(d, name) or None,
        ports=[core.ContainerPort(name="http", container_port=port, protocol="TCP")] if port is not None else None,
        resources=core.ResourceRequirements(
            requests={"cpu": meta.Quantity(cpu), "memory": meta.Quantity(memory)},
            limits={"memory": meta.Quantity(memory)},
        ),
        liveness_probe=probe("/v2/health/live") if probe else None,
        readiness_probe=probe("/v2/health/ready") if probe else None,
    )
    grace = int((g.async_.request_timeout_s if g.async_ else g.timeout_s) + 10)
    return apps.Deployment(
        metadata=meta.ObjectMeta(name=part, namespace=d.namespace, labels=obj_labels),
        spec=apps.DeploymentSpec(
            replicas=replicas,
            selector=meta.LabelSelector(match_labels=sel),
            template=core.PodTemplateSpec(
                metadata=meta.ObjectMeta(labels=obj_labels),
                # SIGTERM: the gateway drains its connections, a worker finishes what it holds
                spec=core.PodSpec(containers=[container], termination_grace_period_seconds=grace),
            ),
        ),
    )


def _redis_address(d: DeploySpec, name: str) -> str:
    url = k8s.redis_url(d, name)
    assert url is not None
    parsed = urlparse(url)
    return f"{parsed.hostname}:{parsed.port or k8s.REDIS_PORT}"


def objects(d: DeploySpec, name: str, grpc_port: int) -> list[BaseModel]:
    """The gateway's objects for `deploy k8s` (its Triton is the `<name>-grpc` Service on `grpc_port`)."""
    g = d.gateway
    assert g is not None
    gw = gateway_name(name)
    triton = f"{name}-grpc.{d.namespace}.svc:{grpc_port}"
    gw_args = ["gateway", triton, "--host", "0.0.0.0", "--port", str(g.port), "--timeout", f"{g.timeout_s:g}",
               "--max-body", str(g.max_body_bytes), *_queue_args(g)]  # fmt: skip
    out: list[BaseModel] = [_deployment(d, name, gw, g.replicas, gw_args, g.cpu, g.memory, g.port)]
    gw_labels, gw_sel = _labels(d, name, gw)
    out.append(
        core.Service(
            metadata=meta.ObjectMeta(name=gw, namespace=d.namespace, labels=gw_labels),
            spec=core.ServiceSpec(
                type="ClusterIP",
                selector=gw_sel,
                ports=[
                    core.ServicePort(name="http", port=g.port, target_port=meta.IntOrString("http"), protocol="TCP")
                ],
            ),
        )
    )
    if g.async_ is None:
        return out
    w, q = g.workers, g.async_
    wk = worker_name(name)
    w_args = ["worker", triton, "--concurrency", str(w.concurrency), *_queue_args(g)]
    out.append(_deployment(d, name, wk, None, w_args, w.cpu, w.memory, None))  # replicas: KEDA's
    common = {"address": _redis_address(d, name), "stream": f"{q.queue}:requests", "consumerGroup": GROUP}
    out.append(
        keda.ScaledObject.model_validate(
            {
                "metadata": k8s.dump(meta.ObjectMeta(name=wk, namespace=d.namespace, labels=_labels(d, name, wk)[0])),
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": wk},
                    "minReplicaCount": w.min_replicas,
                    "maxReplicaCount": w.max_replicas,
                    "pollingInterval": 15,
                    "cooldownPeriod": 300,
                    "triggers": [
                        {
                            "type": "redis-streams",
                            "name": "queue-lag",
                            "metadata": {
                                **common,
                                "lagCount": str(w.lag_per_replica),
                                "activationLagCount": str(w.activation_lag),
                            },  # fmt: skip
                        },
                        {
                            "type": "redis-streams",
                            "name": "queue-pending",
                            "metadata": {**common, "pendingEntriesCount": str(w.lag_per_replica)},
                        },
                    ],
                },
            }
        )
    )
    return out
