"""`deploy.gateway:` as Kubernetes objects: the gateway's Deployment and Service in front of the server's gRPC
Service, and with `async:` the queue workers' Deployment scaled by KEDA's `redis-streams` scaler on the consumer
group's lag (`lagCount`, which allows scale to zero; a second trigger on pending entries keeps a worker while a
taken request is unanswered).

With `serving:` (many models on one server) the gateway runs as a sidecar in each server pod instead: a second
Deployment of gateways in front of several Triton pods would let gateway A unload a model on a pod while gateway
B's request for it is in flight there, since each keeps its own reference counts. One gateway per Triton keeps
the counts whole, talks to Triton on 127.0.0.1, and, in one process namespace with it, measures tritonserver's
memory for the budget. The `<name>-gateway` Service then selects the server pods on the gateway's port; the
build's `serving` section is a ConfigMap the sidecar reads (`--serving`), and the tenants' keys come from the
Secret `<name>-tenants` (one key per `api_key_env`), never from the spec or these files."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from pydantic import BaseModel

from repoforge import lazy
from repoforge.deploy import k8s
from repoforge.spec.deploy import REDIS_URL_ENV, DeploySpec
from repoforge.spec.gateway import GatewayDeploySpec

if TYPE_CHECKING:
    from cloudcoil import apimachinery as meta
    from cloudcoil.models.keda import v1alpha1 as keda
    from cloudcoil.models.kubernetes.apps import v1 as apps
    from cloudcoil.models.kubernetes.core import v1 as core
else:
    meta, keda, apps, core = (
        lazy.Deferred(lazy.k8s_meta),
        lazy.Deferred(lazy.keda),
        lazy.Deferred(lazy.k8s_apps),
        lazy.Deferred(lazy.k8s_core),
    )

FILE = "gateway.yaml"
GROUP = "workers"  # repoforge.gateway.queue.GROUP (not imported: deploy must not pull in the ASGI stack)
SERVING_DIR = "/etc/repoforge"
SERVING_FILE = "serving.json"
SIDECAR = "gateway"  # the sidecar's container and port name


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


# -- `serving:`: the multiplexing gateway as a sidecar of every server pod ---------------------------------------------
def tenants_secret(name: str) -> str:
    return f"{name}-tenants"[:63].rstrip("-")


def serving_configmap(name: str) -> str:
    return f"{name}-serving"[:63].rstrip("-")


def serving_problems(d: DeploySpec, serving: dict[str, Any] | None) -> list[tuple[tuple[str | int, ...], str]]:
    """What a build with `serving:` cannot be deployed with: no gateway image, the async queue (its workers call
    Triton directly and would not load on demand), poll model control (the gateway is the one that loads)."""
    if serving is None:
        return []
    if d.gateway is None:
        return [(("gateway",), "the build has `serving:`, so each server pod runs `repoforge gateway` as a sidecar "
                 "that loads models on demand: set deploy.gateway.image to an image with repoforge, e.g. --set "
                 "gateway={image: REGISTRY/repoforge:TAG}")]  # fmt: skip
    out: list[tuple[tuple[str | int, ...], str]] = []
    if d.gateway.async_ is not None:
        out.append((("gateway", "async"), "the queue's workers call Triton directly and do not load models on demand; "
                    "a build with `serving:` cannot use deploy.gateway.async yet"))  # fmt: skip
    if d.model_control_mode != "none":
        out.append((("model_control_mode",), "with `serving:` the gateway loads and unloads models (Triton runs in "
                    "explicit model control): remove model_control_mode"))  # fmt: skip
    return out


def with_sidecar(shape: k8s.ServerShape, d: DeploySpec, name: str, serving: dict[str, Any]) -> k8s.ServerShape:
    """The server's pod shape plus the gateway sidecar (on 127.0.0.1 to Triton's gRPC port) and its ConfigMap
    volume, in one process namespace."""
    g = d.gateway
    assert g is not None
    grpc = dict(shape.ports).get("grpc", 8001)
    args = ["gateway", f"127.0.0.1:{grpc}", "--host", "0.0.0.0", "--port", str(g.port), "--timeout", f"{g.timeout_s:g}",
            "--max-body", str(g.max_body_bytes), "--serving", f"{SERVING_DIR}/{SERVING_FILE}"]  # fmt: skip
    keys = [core.EnvVar(name=t["api_key_env"], value_from=core.EnvVarSource(secret_key_ref=core.SecretKeySelector(
                name=tenants_secret(name), key=t["api_key_env"])))
            for t in serving.get("tenants") or []]  # fmt: skip

    def probe(path: str, failures: int) -> core.Probe:
        return core.Probe(http_get=core.HTTPGetAction(path=path, port=meta.IntOrString(SIDECAR)), period_seconds=10,
                          failure_threshold=failures)  # fmt: skip

    sidecar = core.Container(
        name=SIDECAR,
        image=g.image,
        command=["repoforge"],
        args=args,
        env=keys or None,
        ports=[core.ContainerPort(name=SIDECAR, container_port=g.port, protocol="TCP")],
        resources=core.ResourceRequirements(
            requests={"cpu": meta.Quantity(g.cpu), "memory": meta.Quantity(g.memory)},
            limits={"memory": meta.Quantity(g.memory)},
        ),
        volume_mounts=[core.VolumeMount(name="serving", mount_path=SERVING_DIR, read_only=True)],
        # the server's startup probe allows for its start; `always_loaded` models load before the gateway is ready
        startup_probe=probe("/v2/health/ready", max(3, d.probes.startup_timeout_s // 10)),
        liveness_probe=probe("/v2/health/live", 3),
        readiness_probe=probe("/v2/health/ready", 3),
    )
    volume = core.Volume(name="serving", config_map=core.ConfigMapVolumeSource(name=serving_configmap(name)))
    note = (f"Serving: Triton runs with explicit model control and loads nothing by itself; the `{SIDECAR}` sidecar "
            f"(`repoforge gateway`, port {g.port}, Service `{gateway_name(name)}`) loads models on first request and "
            "unloads the least recently used under the build's `serving:` limits. Send requests to the gateway: "
            "Triton's own Services stay for probes, metrics and operators.")  # fmt: skip
    notes = [note]
    if keys:
        pairs = " ".join(f"--from-literal={k.name}=<key>" for k in keys)
        notes.append(f"Tenants: their API keys come from the Secret `{tenants_secret(name)}` (no key is in these "
                     f"files); create it first: `kubectl -n {d.namespace} create secret generic "
                     f"{tenants_secret(name)} {pairs}`.")  # fmt: skip
    return dataclasses.replace(shape, sidecars=[*shape.sidecars, sidecar],
                               sidecar_volumes=[*shape.sidecar_volumes, volume], share_process_namespace=True,
                               notes=[*shape.notes, *notes])  # fmt: skip


def serving_objects(d: DeploySpec, name: str, serving: dict[str, Any]) -> list[BaseModel]:
    """The sidecar's ConfigMap (the build's `serving` section: tenant names and key variables, never keys) and the
    gateway Service, which selects the server pods on the sidecar's port."""
    g = d.gateway
    assert g is not None
    gw_labels = {**k8s.labels(d, name), "app.kubernetes.io/component": SIDECAR}
    return [
        core.ConfigMap(
            metadata=meta.ObjectMeta(name=serving_configmap(name), namespace=d.namespace, labels=gw_labels),
            data={SERVING_FILE: json.dumps(serving, indent=2, sort_keys=True) + "\n"},
        ),
        core.Service(
            metadata=meta.ObjectMeta(name=gateway_name(name), namespace=d.namespace, labels=gw_labels),
            spec=core.ServiceSpec(
                type="ClusterIP",
                selector=k8s.selector(name),
                ports=[
                    core.ServicePort(name="http", port=g.port, target_port=meta.IntOrString(SIDECAR), protocol="TCP")
                ],
            ),
        ),
    ]
