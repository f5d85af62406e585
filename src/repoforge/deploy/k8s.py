"""Kubernetes objects for one deployment, built as typed models (cloudcoil's pydantic models of the upstream
Kubernetes schemas and of the KEDA and Prometheus Operator CRDs), then dumped as YAML.

The target (Triton or TorchServe) supplies a `ServerShape` (image, args, ports, probes, its PromQL catalog);
everything else (pools, probes' timing, spot placement, services, the PDB, autoscaling and rules) is the same
for both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from cloudcoil import apimachinery as meta
from cloudcoil.models.keda import v1alpha1 as keda
from cloudcoil.models.kubernetes.apps import v1 as apps
from cloudcoil.models.kubernetes.core import v1 as core
from cloudcoil.models.kubernetes.policy import v1 as policy
from cloudcoil.models.prometheus_operator import v1 as monitoring
from pydantic import BaseModel

from repoforge.deploy.promql import Catalog
from repoforge.spec.deploy import REDIS_URL_ENV, DeploySpec

MANAGED_BY = "repoforge"
#: Label that tells the two pools apart (their Deployments' selectors must not overlap).
POOL_LABEL = "repoforge.dev/pool"
#: preStop sleep: the endpoints controller takes the pod out of the Services before the server stops accepting.
DRAIN_S = 5
REDIS_PORT = 6379


@dataclass
class ServerShape:
    """What a target's server looks like in a pod."""

    container: str
    image: str
    command: list[str]
    args: list[str]
    ports: list[tuple[str, int]]  # (name, containerPort); one named "metrics"
    live_path: str | None  # HTTP GET on the first port; None: a TCP check
    ready_path: str | None
    catalog: Catalog
    env: list[core.EnvVar] = field(default_factory=list)
    env_from_secret: str | None = None
    mount_path: str = "/models"
    shm: bool = True  # Triton's Python backend exchanges tensors through /dev/shm (64 MiB in a pod by default)
    extra_objects: list[BaseModel] = field(default_factory=list)  # e.g. TorchServe's config.properties ConfigMap
    extra_volumes: list[tuple[core.Volume, core.VolumeMount]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # README lines the target adds
    #: A command run in the container once it started (TorchServe: register the workflows); the pod is not
    #: started, so its probes do not begin, until it succeeds.
    post_start: list[str] | None = None
    #: Containers beside the server in its pod (the multiplexing gateway with `serving:`), the volumes only they
    #: mount, and whether the pod shares one process namespace (the gateway then measures tritonserver's memory).
    sidecars: list[core.Container] = field(default_factory=list)
    sidecar_volumes: list[core.Volume] = field(default_factory=list)
    share_process_namespace: bool = False


#: Where KServe's storage initializer puts the storage URI's content (the runtime's model repository).
KSERVE_MOUNT = "/mnt/models"


@dataclass
class KServeRuntime:
    """What a target's server looks like in a KServe ServingRuntime (`Target.kserve_runtime`; deploy/kserve.py
    writes the rest)."""

    model_format: str
    protocols: list[str] | None
    container: dict[str, Any]
    metrics_port: int
    volumes: list[dict[str, Any]]
    objects: list[dict[str, Any]]  # extra objects (TorchServe's ConfigMap)
    notes: list[str]


def dump(obj: BaseModel) -> dict[str, Any]:
    """The manifest dict of a cloudcoil object: camelCase keys, unset fields left out."""
    data: dict[str, Any] = obj.model_dump(mode="json", by_alias=True, exclude_none=True)
    return data


def labels(d: DeploySpec, name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        **d.labels,
    }


def selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": name}


def _meta(d: DeploySpec, name: str, obj_name: str, extra: dict[str, str] | None = None) -> meta.ObjectMeta:
    return meta.ObjectMeta(name=obj_name, namespace=d.namespace, labels={**labels(d, name), **(extra or {})})


def _probe(shape: ServerShape, path: str | None, *, period: int, failures: int, timeout: int = 5) -> core.Probe:
    port = shape.ports[0][0]
    action: dict[str, Any] = (
        {"http_get": core.HTTPGetAction(path=path, port=meta.IntOrString(port))}
        if path
        else {"tcp_socket": core.TCPSocketAction(port=meta.IntOrString(port))}
    )
    return core.Probe(period_seconds=period, failure_threshold=failures, timeout_seconds=timeout, **action)


GPU = "nvidia.com/gpu"


def gpu_request(d: DeploySpec, gpus: int) -> tuple[dict[str, str], dict[str, str]]:
    """(extended resources, node selector) of a pod holding `gpus` GPUs, whole or shared (`deploy.gpu`), in the
    names NVIDIA's k8s-device-plugin and gpu-feature-discovery (GFD) use:

    - MIG, mixed strategy: each profile is its own resource `nvidia.com/mig-<profile>`; GFD labels the node
      `nvidia.com/mig.strategy=mixed` (k8s-device-plugin docs/gfd_labels.md, "MIG 'mixed' strategy").
    - MIG, single strategy: every GPU of the node is cut the same way and the slices keep the name `nvidia.com/gpu`;
      GFD labels `nvidia.com/mig.strategy=single`, overrides `nvidia.com/gpu.product` to `<model>-MIG-<profile>`
      and sets `nvidia.com/gpu.slices.gi` (docs/gfd_labels.md, "MIG 'single' strategy"). The profile's slice count
      is selected always, the product label when `gpu.product` names the model (the label carries it).
    - Time-slicing: the plugin's `sharing.timeSlicing.resources[{name: nvidia.com/gpu, replicas: N}]` advertises N
      `nvidia.com/gpu` per GPU, or `nvidia.com/gpu.shared` with `renameByDefault: true`; GFD labels the node
      `nvidia.com/gpu.sharing-strategy=time-slicing` and `nvidia.com/gpu.replicas=N` (README "Shared Access to GPUs with CUDA Time-Slicing"; GPU Operator docs
      "Time-Slicing GPUs in Kubernetes"). A pod asks for one replica: more replicas are no more GPU.
    """
    g = d.gpu
    if not gpus:
        return {}, {}
    if g is None:
        return {GPU: str(gpus)}, {}
    if g.mig is not None and g.mig_strategy == "mixed":
        return {f"nvidia.com/mig-{g.mig}": str(gpus)}, {"nvidia.com/mig.strategy": "mixed"}
    if g.mig is not None:
        node = {"nvidia.com/mig.strategy": "single", "nvidia.com/gpu.slices.gi": g.mig.split("g.", 1)[0]}
        if g.product is not None:
            node["nvidia.com/gpu.product"] = f"{g.product}-MIG-{g.mig}"
        return {GPU: str(gpus)}, node
    assert g.time_slicing is not None  # check_deploy: one of mig, time_slicing
    node = {"nvidia.com/gpu.sharing-strategy": "time-slicing", "nvidia.com/gpu.replicas": str(g.time_slicing)}
    return {f"{GPU}.shared" if g.rename_by_default else GPU: "1"}, node


def gpu_sharing_note(d: DeploySpec, gpus: int) -> str | None:
    """The README line on a shared GPU: what the pod asks for and what the cluster must offer (the device plugin's
    config is the cluster's, not this deployment's)."""
    g = d.gpu
    if g is None or not gpus:
        return None
    extended, node = gpu_request(d, gpus)
    ask = ", ".join(f"`{k}: {v}`" for k, v in extended.items())
    on = ", ".join(f"`{k}={v}`" for k, v in node.items())
    if g.mig is not None:
        return (
            f"- GPU: a MIG slice {g.mig} per pod ({ask}) on nodes labelled {on}: the GPU Operator with "
            f"`mig.strategy={g.mig_strategy}` and a MIG config that cuts {g.mig} slices (label the node "
            f"`nvidia.com/mig.config`). A slice has its own memory, SMs and fault domain; its size is fixed."
        )
    return (
        f"- GPU: a time-sliced replica ({ask}) on nodes labelled {on}: the device plugin's config needs "
        f"`sharing.timeSlicing.resources: [{{name: nvidia.com/gpu, replicas: {g.time_slicing}}}]`"
        + (" and `renameByDefault: true`" if g.rename_by_default else "")
        + ". Replicas share the GPU's memory and fault domain: one pod's out-of-memory or crash reaches the others."
    )


def _container(d: DeploySpec, shape: ServerShape, gpus: int, name: str) -> core.Container:
    requests = {"cpu": d.resources.cpu, "memory": d.resources.memory}
    limits = {"memory": d.resources.memory}
    extended, _ = gpu_request(d, gpus)
    requests.update(extended)
    limits.update(extended)
    mounts: list[core.VolumeMount] = []
    repo = d.model_repository
    if repo is None or repo.pvc is not None:  # s3/gcs: Triton reads the bucket itself, no volume
        sub = repo.sub_path if repo is not None else None
        mounts.append(core.VolumeMount(name="models", mount_path=shape.mount_path, read_only=True, sub_path=sub))
    if shape.shm:
        mounts.append(core.VolumeMount(name="dshm", mount_path="/dev/shm"))
    mounts += [m for _, m in shape.extra_volumes]
    env = [
        core.EnvVar(name="POD_NAME", value_from=core.EnvVarSource(field_ref=core.ObjectFieldSelector(field_path="metadata.name"))),
        *shape.env,
        *user_env(d, name),
    ]  # fmt: skip
    p = d.probes
    return core.Container(
        name=shape.container,
        image=shape.image,
        command=shape.command or None,
        args=shape.args,
        ports=[core.ContainerPort(name=n, container_port=port, protocol="TCP") for n, port in shape.ports],
        env=env,
        env_from=[core.EnvFromSource(secret_ref=core.SecretEnvSource(name=shape.env_from_secret))]
        if shape.env_from_secret
        else None,
        resources=core.ResourceRequirements(
            requests={k: meta.Quantity(v) for k, v in requests.items()},
            limits={k: meta.Quantity(v) for k, v in limits.items()},
        ),
        volume_mounts=mounts,
        # Ready = every model loaded; the startup probe gives loading `startup_timeout_s` before liveness counts.
        startup_probe=_probe(shape, shape.ready_path, period=10, failures=math.ceil(p.startup_timeout_s / 10)),
        liveness_probe=_probe(shape, shape.live_path, period=p.period_s, failures=3),
        readiness_probe=_probe(shape, shape.ready_path, period=p.period_s, failures=3),
        lifecycle=core.Lifecycle(
            pre_stop=core.LifecycleHandler(exec=core.ExecAction(command=["sleep", str(DRAIN_S)])),
            post_start=core.LifecycleHandler(exec=core.ExecAction(command=shape.post_start)) if shape.post_start else None,
        ),
    )  # fmt: skip


def redis_url(d: DeploySpec, name: str) -> str | None:
    """The URL the plugins get in REPOFORGE_REDIS_URL: `redis.url`, or the deployed Redis's Service."""
    if d.redis is None:
        return None
    if d.redis.url is not None:
        return d.redis.url
    return f"redis://{redis_name(name)}.{d.namespace}.svc:{REDIS_PORT}/0"


def redis_name(name: str) -> str:
    return f"{name}-redis"[:63].rstrip("-")


def user_env(d: DeploySpec, name: str) -> list[core.EnvVar]:
    """`env:` as values, `secrets:` as secretKeyRef (the value stays in the Secret), and the Redis URL."""
    out = [core.EnvVar(name=k, value=v) for k, v in d.env.items()]
    for k, ref in d.secrets.items():
        key_ref = core.SecretKeySelector(name=ref.secret, key=ref.key, optional=ref.optional or None)
        out.append(core.EnvVar(name=k, value_from=core.EnvVarSource(secret_key_ref=key_ref)))
    url = redis_url(d, name)
    if url is not None:
        out.append(core.EnvVar(name=REDIS_URL_ENV, value=url))
    return out


def redis_objects(d: DeploySpec, name: str) -> list[BaseModel]:
    """`redis: {deploy: true}`: one Redis pod (a cache: no persistence, LRU eviction at 90 % of its memory; with the
    gateway's queue no eviction, which would drop queued requests and the gateway refuses), its Service and a
    PodDisruptionBudget that lets a node drain move it."""
    assert d.redis is not None and d.redis.deploy
    rname = redis_name(name)
    sel = {"app.kubernetes.io/name": rname, "app.kubernetes.io/instance": name}
    obj_labels = {**labels(d, name), **sel, "app.kubernetes.io/component": "redis"}
    md = meta.ObjectMeta(name=rname, namespace=d.namespace, labels=obj_labels)
    maxmemory = int(quantity_bytes(d.redis.memory) * 0.9)
    eviction = "noeviction" if d.gateway is not None and d.gateway.async_ is not None else "allkeys-lru"
    port = meta.IntOrString("redis")

    def probe() -> core.Probe:
        return core.Probe(tcp_socket=core.TCPSocketAction(port=port), period_seconds=10, failure_threshold=3)

    container = core.Container(
        name="redis",
        image=d.redis.image,
        args=["--save", "", "--appendonly", "no", "--maxmemory", str(maxmemory), "--maxmemory-policy", eviction],
        ports=[core.ContainerPort(name="redis", container_port=REDIS_PORT, protocol="TCP")],
        resources=core.ResourceRequirements(
            requests={"cpu": meta.Quantity("250m"), "memory": meta.Quantity(d.redis.memory)},
            limits={"memory": meta.Quantity(d.redis.memory)},
        ),
        liveness_probe=probe(),
        readiness_probe=probe(),
    )
    deployment = apps.Deployment(
        metadata=md,
        spec=apps.DeploymentSpec(
            replicas=1,
            selector=meta.LabelSelector(match_labels=sel),
            template=core.PodTemplateSpec(
                metadata=meta.ObjectMeta(labels=obj_labels), spec=core.PodSpec(containers=[container])
            ),
        ),
    )
    service = core.Service(
        metadata=md,
        spec=core.ServiceSpec(
            type="ClusterIP",
            selector=sel,
            ports=[core.ServicePort(name="redis", port=REDIS_PORT, target_port=port, protocol="TCP")],
        ),
    )
    budget = policy.PodDisruptionBudget(
        metadata=md,
        spec=policy.PodDisruptionBudgetSpec(max_unavailable=meta.IntOrString(1), selector=meta.LabelSelector(match_labels=sel)),
    )  # fmt: skip
    return [deployment, service, budget]


_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18, "m": 10**-3}
_UNITS.update({f"{u}i": 1024 ** (i + 1) for i, u in enumerate("KMGTPE")})


def quantity_bytes(q: str) -> float:
    """A Kubernetes quantity (16Gi, 500M) as a number."""
    num = q.rstrip("kMGTPEim")
    return float(num) * _UNITS[q[len(num) :]]


def _affinity(d: DeploySpec, pool: str) -> core.Affinity | None:
    s = d.spot
    if not s.tolerate:
        return None
    if pool == "on-demand":
        term = core.NodeSelectorTerm(
            match_expressions=[core.NodeSelectorRequirement(key=s.capacity_label, operator="In", values=[s.on_demand_value])]
        )  # fmt: skip
        return core.Affinity(node_affinity=core.NodeAffinity(required_during_scheduling_ignored_during_execution=core.NodeSelector(node_selector_terms=[term])))  # fmt: skip
    prefer = core.PreferredSchedulingTerm(
        weight=100,
        preference=core.NodeSelectorTerm(
            match_expressions=[core.NodeSelectorRequirement(key=s.capacity_label, operator="In", values=[s.spot_value])]
        ),
    )
    return core.Affinity(node_affinity=core.NodeAffinity(preferred_during_scheduling_ignored_during_execution=[prefer]))


def _tolerations(d: DeploySpec, pool: str, gpus: int) -> list[core.Toleration] | None:
    out = []
    if gpus:  # GPU node pools are commonly tainted nvidia.com/gpu:NoSchedule
        out.append(core.Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"))
    if d.spot.tolerate and pool == "spot":
        out += [core.Toleration(key=k, operator="Exists", effect="NoSchedule") for k in d.spot.taints]
    return out or None


def deployment(
    d: DeploySpec, shape: ServerShape, name: str, pool: str, gpus: int, replicas: int | None
) -> apps.Deployment:
    pool_labels = {POOL_LABEL: pool}
    sel = {**selector(name), **pool_labels}
    pod_labels = {**labels(d, name), **pool_labels}
    volumes: list[core.Volume] = []
    repo = d.model_repository
    if repo is None or repo.pvc is not None:
        claim = repo.pvc if repo is not None and repo.pvc else f"{name}-models"
        volumes.append(core.Volume(name="models", persistent_volume_claim=core.PersistentVolumeClaimVolumeSource(claim_name=claim, read_only=True)))  # fmt: skip
    if shape.shm:
        volumes.append(
            core.Volume(
                name="dshm", empty_dir=core.EmptyDirVolumeSource(medium="Memory", size_limit=meta.Quantity("1Gi"))
            )
        )
    volumes += [v for v, _ in shape.extra_volumes] + shape.sidecar_volumes
    spread = [
        core.TopologySpreadConstraint(
            max_skew=1, topology_key=key, when_unsatisfiable="ScheduleAnyway",
            label_selector=meta.LabelSelector(match_labels=selector(name)),
        )
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
    ]  # fmt: skip
    obj_name = name if pool == "spot" or not d.spot.tolerate else f"{name}-on-demand"
    return apps.Deployment(
        metadata=_meta(d, name, obj_name, pool_labels),
        spec=apps.DeploymentSpec(
            replicas=replicas,
            selector=meta.LabelSelector(match_labels=sel),
            strategy=apps.DeploymentStrategy(
                type="RollingUpdate",
                rolling_update=apps.RollingUpdateDeployment(
                    max_surge=meta.IntOrString(1), max_unavailable=meta.IntOrString(0)
                ),
            ),
            template=core.PodTemplateSpec(
                metadata=meta.ObjectMeta(labels=pod_labels),
                spec=core.PodSpec(
                    containers=[_container(d, shape, gpus, name), *shape.sidecars],
                    share_process_namespace=shape.share_process_namespace or None,
                    volumes=volumes,
                    node_selector=gpu_request(d, gpus)[1] or None,
                    affinity=_affinity(d, pool),
                    tolerations=_tolerations(d, pool, gpus),
                    topology_spread_constraints=spread,
                    # preStop drain + the server's own exit timeout for in-flight requests, plus a margin
                    termination_grace_period_seconds=DRAIN_S + d.exit_timeout_s + 10,
                ),
            ),
        ),
    )


def pools(d: DeploySpec) -> list[tuple[str, int | None]]:
    """(pool, fixed replicas or None when KEDA scales it). With spot, an on-demand pool of `on_demand_min` pods is
    the baseline and KEDA scales the spot pool for the rest."""
    fixed = None if d.autoscale.enabled else d.replicas.min
    if d.spot.tolerate and d.spot.on_demand_min > 0:
        spot_fixed = None if d.autoscale.enabled else max(d.replicas.min - d.spot.on_demand_min, 0)
        return [("on-demand", d.spot.on_demand_min), ("spot", spot_fixed)]
    return [("spot" if d.spot.tolerate else "main", fixed)]


def deployments(d: DeploySpec, shape: ServerShape, name: str, gpus: int) -> list[apps.Deployment]:
    return [deployment(d, shape, name, pool, gpus, replicas) for pool, replicas in pools(d)]


def scaled_target(d: DeploySpec, name: str) -> str:
    return name


def services(d: DeploySpec, shape: ServerShape, name: str, *, release: bool = False) -> list[core.Service]:
    """HTTP (ClusterIP), gRPC (headless, so gRPC clients balance over pods instead of pinning one connection to one
    pod) and metrics (what the ServiceMonitor selects). With a release policy (`rollout:`) the metrics Service
    selects by `app.kubernetes.io/instance` alone: Flagger renames the primary pods' `app.kubernetes.io/name` to
    `<name>-primary` (and keeps every other label), so both revisions stay scraped."""
    named = dict(shape.ports)
    metrics = ("metrics", named["metrics"])
    api = [(n, p) for n, p in shape.ports if n != "metrics"]
    http = [(n, p) for n, p in api if not n.startswith("grpc")]
    grpc = [(n, p) for n, p in api if n.startswith("grpc")]

    def svc(
        obj: str,
        ports: list[tuple[str, int]],
        extra: dict[str, str],
        headless: bool = False,
        sel: dict[str, str] | None = None,
    ) -> core.Service:
        return core.Service(
            metadata=_meta(d, name, obj, extra),
            spec=core.ServiceSpec(
                type="ClusterIP",
                cluster_ip="None" if headless else None,
                selector=sel or selector(name),
                ports=[
                    core.ServicePort(name=n, port=p, target_port=meta.IntOrString(n), protocol="TCP") for n, p in ports
                ],
            ),
        )

    out = [svc(name, http, {})]
    if grpc:
        out.append(svc(f"{name}-grpc", grpc, {}, headless=True))
    both = {"app.kubernetes.io/instance": name} if release else None
    out.append(svc(metrics_service(name), [metrics], {"repoforge.dev/metrics": "true"}, sel=both))
    return out


def metrics_service(name: str) -> str:
    return f"{name}-metrics"


def pdb(d: DeploySpec, name: str) -> policy.PodDisruptionBudget:
    # maxUnavailable 1, not minAvailable: with replicas.min 1 a minAvailable 1 would block every node drain
    return policy.PodDisruptionBudget(
        metadata=_meta(d, name, name),
        spec=policy.PodDisruptionBudgetSpec(
            max_unavailable=meta.IntOrString(1), selector=meta.LabelSelector(match_labels=selector(name))
        ),
    )


def service_monitor(d: DeploySpec, name: str, interval: str = "15s") -> monitoring.ServiceMonitor:
    return monitoring.ServiceMonitor.model_validate(
        {
            "metadata": dump(_meta(d, name, name)),
            "spec": {
                "selector": {"matchLabels": {**selector(name), "repoforge.dev/metrics": "true"}},
                "namespaceSelector": {"matchNames": [d.namespace]},
                "endpoints": [{"port": "metrics", "path": "/metrics", "interval": interval}],
            },
        }
    )


def scaled_object(d: DeploySpec, name: str, catalog: Catalog) -> keda.ScaledObject:
    """KEDA on the Prometheus query. `ignoreNullValues: false` makes an empty result an error, and `fallback`
    then holds `fallback_replicas` (KEDA supports fallback for AverageValue metrics only, hence the query is
    "pods needed × target"); the HPA's scale-down window is `cooldown_s`."""
    a, r = d.autoscale, d.replicas
    od = d.spot.on_demand_min if d.spot.tolerate else 0
    lo, hi = max(r.min - od, 0), r.max - od
    fallback = max(min((a.fallback_replicas or lo) - od, hi), lo)
    target = a.target
    assert target is not None  # resolved() filled it
    return keda.ScaledObject.model_validate(
        {
            "metadata": dump(_meta(d, name, name)),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": scaled_target(d, name)},
                "minReplicaCount": lo,
                "maxReplicaCount": hi,
                "pollingInterval": a.polling_interval_s,
                "cooldownPeriod": a.cooldown_s,
                "fallback": {"failureThreshold": 3, "replicas": fallback},
                "advanced": {
                    "horizontalPodAutoscalerConfig": {
                        "behavior": {"scaleDown": {"stabilizationWindowSeconds": a.cooldown_s}}
                    }
                },
                "triggers": [
                    {
                        "type": "prometheus",
                        "name": a.metric,
                        "metricType": "AverageValue",
                        "metadata": {
                            "serverAddress": a.prometheus_url,
                            "query": catalog.autoscale,
                            "threshold": _num(target),
                            "activationThreshold": _num(a.activation),
                            "ignoreNullValues": "false",
                        },
                    }
                ],
            },
        }
    )


def rule_groups(name: str, catalog: Catalog) -> list[dict[str, Any]]:
    rules = [
        {
            "alert": a.name,
            "expr": a.expr,
            "for": a.for_,
            "labels": {"severity": a.severity},
            "annotations": {"summary": a.summary, "description": a.description},
        }
        for a in catalog.alerts
    ]
    return [{"name": f"{name}.rules", "rules": rules}]


def prometheus_rule(d: DeploySpec, name: str, catalog: Catalog) -> monitoring.PrometheusRule:
    return monitoring.PrometheusRule.model_validate(
        {"metadata": dump(_meta(d, name, name)), "spec": {"groups": rule_groups(name, catalog)}}
    )


def dashboard_configmap(d: DeploySpec, name: str, dashboard_json: str) -> core.ConfigMap:
    """Grafana's sidecar loads ConfigMaps labelled grafana_dashboard=1."""
    return core.ConfigMap(
        metadata=_meta(d, name, f"{name}-dashboard", {"grafana_dashboard": "1"}),
        data={f"{name}.json": dashboard_json},
    )


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))
