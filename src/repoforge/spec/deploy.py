"""The spec's `deploy:` section: how `repoforge deploy k8s` runs the built repository on Kubernetes.

Everything is optional. Field types are checked here (pydantic, located like every spec error); the rules
that need the build's target and device (a GPU metric on a CPU build, tracing on TorchServe) and the
cross-field ones (max < min) are in `check_deploy`, which `repoforge.plan` runs so a bad section fails the
build with every other problem, and `repoforge deploy k8s --set` runs again on the overridden values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from repoforge.spec.gateway import GatewayDeploySpec

#: Metrics the autoscaler may follow (each has one PromQL query per target in `repoforge.deploy.metrics`).
AutoscaleMetric = Literal["queue_time_per_request_us", "pending_requests", "request_rate", "gpu_utilization"]
AUTOSCALE_METRICS: tuple[str, ...] = AutoscaleMetric.__args__  # type: ignore[attr-defined]
#: The target each metric gets when `autoscale.target` is left out.
DEFAULT_TARGETS: dict[str, float] = {
    "queue_time_per_request_us": 2000.0,
    "pending_requests": 8.0,
    "request_rate": 100.0,
    "gpu_utilization": 80.0,
}
#: Metrics TorchServe exports an equivalent of (ts_queue_latency_microseconds, ts_inference_requests_total).
TORCHSERVE_METRICS = ("queue_time_per_request_us", "request_rate")

_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_DURATION = re.compile(r"^[0-9]+(ms|s|m|h)$")
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _quantity(v: Any) -> str:
    s = str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
    if not isinstance(s, str) or not _QUANTITY.match(s):
        raise ValueError(f"expected a Kubernetes quantity such as 4, 500m, 16Gi (got {v!r})")
    return s


class ModelRepositorySource(_Strict):
    """Where the pods find the built repository: one of a PersistentVolumeClaim, an S3 or a GCS path."""

    pvc: str | None = Field(default=None, description="Name of a PersistentVolumeClaim holding the build folder.")
    sub_path: str | None = Field(default=None, description="pvc only: the build folder's path inside the volume.")
    s3: str | None = Field(default=None, description="s3://bucket/path that Triton reads the repository from.")
    gcs: str | None = Field(default=None, description="gs://bucket/path that Triton reads the repository from.")
    credentials_secret: str | None = Field(
        default=None, description="s3/gcs: a Secret whose keys become the container's environment (credentials)."
    )

    @field_validator("s3")
    @classmethod
    def _s3(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("s3://"):
            raise ValueError(f"expected an s3://bucket/path URL (got {v!r})")
        return v

    @field_validator("gcs")
    @classmethod
    def _gcs(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("gs://"):
            raise ValueError(f"expected a gs://bucket/path URL (got {v!r})")
        return v

    @model_validator(mode="after")
    def _one(self) -> ModelRepositorySource:
        chosen = [k for k in ("pvc", "s3", "gcs") if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ValueError("set exactly one of pvc, s3, gcs")
        return self

    @property
    def url(self) -> str | None:
        """The remote repository path Triton reads directly (None for a volume)."""
        return self.s3 or self.gcs


class Replicas(_Strict):
    """How many pods: the autoscaler moves between `min` and `max`."""

    min: int = Field(default=1, ge=0, description="Fewest pods (0 lets KEDA scale to zero when idle).")
    max: int = Field(default=4, ge=1, description="Most pods; must be >= min.")


class Resources(_Strict):
    """What one pod requests (limits: the same memory and GPUs; no CPU limit, throttling hurts latency)."""

    gpu: int | None = Field(
        default=None, ge=0, description="nvidia.com/gpu per pod; unset: 1 for a --device gpu build, else 0."
    )
    cpu: str = Field(default="2", description="CPU request, a Kubernetes quantity (4, 500m).")
    memory: str = Field(default="8Gi", description="Memory request and limit, a Kubernetes quantity (16Gi).")

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _q(cls, v: Any) -> str:
        return _quantity(v)


class Autoscale(_Strict):
    """A KEDA ScaledObject on one model metric read from Prometheus. An empty query result (Prometheus down,
    metric missing) is an error, never zero: KEDA then holds `fallback_replicas` instead of scaling down."""

    enabled: bool = Field(default=True, description="false: a fixed Deployment of replicas.min pods, no KEDA.")
    metric: AutoscaleMetric = Field(
        default="queue_time_per_request_us",
        description="queue_time_per_request_us | pending_requests | request_rate | gpu_utilization (percent).",
    )
    target: float | None = Field(
        default=None,
        gt=0,
        strict=True,
        description="Value per pod to hold the metric at; unset: 2000 µs, 8 pending, 100 req/s, 80 %.",
    )
    activation: float = Field(
        default=0, ge=0, strict=True, description="Below this the workload counts as idle (KEDA activationThreshold)."
    )
    fallback_replicas: int | None = Field(
        default=None, ge=0, description="Pods to hold while the query fails; unset: max(min, half of max)."
    )
    cooldown_s: int = Field(
        default=300, ge=0, description="Seconds of lower load before scaling down (HPA stabilization window)."
    )
    polling_interval_s: int = Field(default=15, ge=1, description="Seconds between KEDA's queries.")
    window: str = Field(
        default="1m", description="PromQL range of the rate() in every query (at least 4 scrape intervals)."
    )
    prometheus_url: str = Field(
        default="http://prometheus-operated.monitoring.svc:9090",
        description="The Prometheus KEDA queries (the Prometheus Operator's service by default).",
    )

    @field_validator("window")
    @classmethod
    def _window(cls, v: str) -> str:
        if not _DURATION.match(v):
            raise ValueError(f"expected a PromQL duration such as 30s, 1m, 5m (got {v!r})")
        return v


class Slo(_Strict):
    """Service level objectives: each one set becomes an alert (PrometheusRule and alerts.rules.yml)."""

    p99_ms: float | None = Field(
        default=None, gt=0, strict=True, description="p99 request latency in ms (Triton's summary quantile)."
    )
    error_rate: float | None = Field(
        default=0.01, ge=0, le=1, strict=True, description="Largest share of failed requests (0.01 = 1 %)."
    )
    for_: str = Field(default="5m", alias="for", description="How long a breach lasts before the alert fires.")

    @field_validator("for_")
    @classmethod
    def _for(cls, v: str) -> str:
        if not _DURATION.match(v):
            raise ValueError(f"expected a duration such as 1m, 5m (got {v!r})")
        return v


class Spot(_Strict):
    """Spot (preemptible) nodes: pods tolerate their taints and prefer them, while `on_demand_min` pods run in a
    second Deployment pinned to on-demand nodes, so a spot reclaim never takes the service to zero."""

    tolerate: bool = Field(default=False, description="Run on spot nodes (tolerations and a preference for them).")
    on_demand_min: int = Field(default=1, ge=0, description="Pods always kept on on-demand nodes.")
    capacity_label: str = Field(
        default="karpenter.sh/capacity-type", description="Node label that tells spot from on-demand nodes."
    )
    spot_value: str = Field(default="spot", description="The label's value on spot nodes.")
    on_demand_value: str = Field(default="on-demand", description="The label's value on on-demand nodes.")
    taints: list[str] = Field(
        default=[
            "karpenter.sh/capacity-type",
            "cloud.google.com/gke-spot",
            "kubernetes.azure.com/scalesetpriority",
            "eks.amazonaws.com/capacityType",
        ],
        description="Taint keys of spot nodes to tolerate (operator Exists).",
    )


class Tracing(_Strict):
    """OpenTelemetry tracing of sampled requests (Triton `--trace-config mode=opentelemetry`)."""

    otlp_endpoint: str = Field(description="OTLP/HTTP traces URL, e.g. http://otel-collector:4318/v1/traces.")
    rate: int = Field(default=1000, ge=1, description="Trace one request in this many.")

    @field_validator("otlp_endpoint")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"expected an http(s):// URL of an OTLP/HTTP receiver (got {v!r})")
        return v


class Probes(_Strict):
    """Health checks: liveness and readiness on the server's health API, a startup probe for model loading."""

    startup_timeout_s: int = Field(
        default=600, ge=10, description="Seconds the pod may take to load every model before it is restarted."
    )
    period_s: int = Field(default=10, ge=1, description="Seconds between liveness/readiness checks.")


#: A MIG profile as NVIDIA names it: `<compute slices>g.<memory>gb` (1g.10gb, 3g.40gb). The device plugin's mixed
#: strategy turns it into the resource `nvidia.com/mig-<profile>`, so only names valid in a resource name pass.
_MIG_PROFILE = re.compile(r"^([1-7])g\.([1-9][0-9]{0,2})gb$")
#: GPU models as gpu-feature-discovery writes them in `nvidia.com/gpu.product` (A100-SXM4-80GB).
_GPU_PRODUCT = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_.]{0,40}[A-Za-z0-9]$")


class GpuSharing(_Strict):
    """How the pod shares a GPU with other tenants' pods, as NVIDIA's k8s-device-plugin (or the GPU Operator, which
    deploys it) exposes shared GPUs: a MIG slice (`mig: 1g.10gb`), or a time-sliced replica of a whole GPU
    (`time_slicing: N`, the plugin's `sharing.timeSlicing` config with `replicas: N`). One of the two."""

    mig: str | None = Field(
        default=None, description="MIG profile each pod gets, `<N>g.<M>gb` as nvidia-smi names it (1g.10gb)."
    )
    mig_strategy: Literal["mixed", "single"] = Field(
        default="mixed",
        description="The device plugin's MIG strategy on the nodes: mixed exposes nvidia.com/mig-<profile>; single "
        "keeps nvidia.com/gpu and labels the node with the profile.",
    )
    product: str | None = Field(
        default=None,
        description="mig_strategy single only: the GPU model as gpu-feature-discovery labels it (A100-SXM4-80GB), to "
        "select nodes on nvidia.com/gpu.product=<product>-MIG-<profile>.",
    )
    time_slicing: int | None = Field(
        default=None,
        description="Replicas per GPU in the device plugin's time-slicing config (at least 2); the pod requests one.",
    )
    rename_by_default: bool = Field(
        default=False,
        description="time_slicing only: the plugin's renameByDefault is on, so shared GPUs are nvidia.com/gpu.shared.",
    )

    @field_validator("mig")
    @classmethod
    def _mig(cls, v: str | None) -> str | None:
        if v is not None and not _MIG_PROFILE.match(v):
            raise ValueError(f"expected a MIG profile such as 1g.10gb, 2g.20gb, 3g.40gb, 7g.80gb (got {v!r})")
        return v

    @field_validator("product")
    @classmethod
    def _product(cls, v: str | None) -> str | None:
        if v is not None and not _GPU_PRODUCT.match(v):
            raise ValueError(
                f"expected a GPU model as nvidia.com/gpu.product labels it, e.g. A100-SXM4-80GB (got {v!r})"
            )
        return v

    @field_validator("time_slicing", mode="before")
    @classmethod
    def _replicas(cls, v: Any) -> Any:
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 2):
            raise ValueError(
                f"expected a number of replicas per GPU of at least 2 (got {v!r}); 1 replica is the GPU unshared"
            )
        return v


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Environment variables the pod's container sets itself (a user's `env:`/`secrets:` may not replace them).
RESERVED_ENV = ("POD_NAME",)
#: The variable plugins that use Redis read their server's URL from (the runtime's name, agreed in issue 21).
REDIS_URL_ENV = "REPOFORGE_REDIS_URL"


class SecretRef(_Strict):
    """One key of a Kubernetes Secret, read into an environment variable (`valueFrom.secretKeyRef`): the value
    stays in the cluster and never appears in a manifest."""

    secret: str = Field(description="Name of the Secret, in the deployment's namespace.")
    key: str = Field(description="Key inside the Secret whose value becomes the variable.")
    optional: bool = Field(default=False, description="true: start the pod even when the Secret or key is missing.")

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: str) -> str:
        if not _DNS_SUBDOMAIN.match(v):
            raise ValueError(f"expected a Secret name (lower-case letters, digits, '-', '.') (got {v!r})")
        return v

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        if not _SECRET_KEY.match(v):
            raise ValueError(f"expected a Secret key (letters, digits, '-', '_', '.') (got {v!r})")
        return v


class Redis(_Strict):
    """The Redis that plugins (features, result and semantic caches) use in the cluster: `{url: ...}` for one
    that exists, or `{deploy: true}` for a Redis Deployment, Service and PDB next to the server. The pods get its
    URL in REPOFORGE_REDIS_URL, which the plugins read before the spec's own URL."""

    url: str | None = Field(default=None, description="redis:// or rediss:// URL of an existing Redis.")
    deploy: bool = Field(default=False, description="true: deploy a Redis (Deployment, Service, PDB) with the server.")
    image: str = Field(default="redis:7.2-alpine", description="deploy: true only: the Redis image.")
    memory: str = Field(default="1Gi", description="deploy: true only: memory request and limit (maxmemory is 90 %).")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"expected a redis://host:port/db URL (got {v!r})")
        return v

    @field_validator("memory", mode="before")
    @classmethod
    def _q(cls, v: Any) -> str:
        return _quantity(v)

    @model_validator(mode="after")
    def _one(self) -> Redis:
        if (self.url is not None) == self.deploy:
            raise ValueError("set exactly one of url (an existing Redis) or deploy: true")
        return self


class DeploySpec(_Strict):
    """`deploy:`: Kubernetes manifests for the built repository (`repoforge deploy k8s BUILD -o OUT`)."""

    name: str | None = Field(
        default=None, description="Name of the Deployment, Services and rules; unset: the repository's name."
    )
    namespace: str = Field(default="default", description="Namespace of every object.")
    image: str | None = Field(
        default=None,
        description="Server image; unset: the stock image (NGC Triton of the build's Triton version, or "
        "TorchServe's) when the build needs nothing more, else the one `repoforge image` writes (push it and set "
        "this to its name).",
    )
    model_repository: ModelRepositorySource | None = Field(
        default=None, description="{pvc: name} | {s3: s3://...} | {gcs: gs://...}; unset: {pvc: <name>-models}."
    )
    model_control_mode: Literal["none", "poll"] = Field(
        default="none", description="Triton --model-control-mode: none loads everything at start; poll reloads."
    )
    replicas: Replicas = Field(default=Replicas(), description="Pod count bounds for the autoscaler.")
    resources: Resources = Field(default=Resources(), description="Per-pod CPU, memory and GPU requests.")
    gpu: GpuSharing | None = Field(
        default=None,
        description="{mig: 1g.10gb} | {time_slicing: N}: a shared GPU (MIG slice or time-sliced replica) instead of a "
        "whole one; unset: whole GPUs.",
    )
    autoscale: Autoscale = Field(default=Autoscale(), description="KEDA autoscaling on a model metric.")
    slo: Slo = Field(default=Slo(), description="Objectives that become alerts.")
    spot: Spot = Field(default=Spot(), description="Spot nodes with an on-demand baseline.")
    tracing: Tracing | None = Field(default=None, description="OpenTelemetry tracing; unset: off.")
    probes: Probes = Field(default=Probes(), description="Startup, liveness and readiness probes.")
    exit_timeout_s: int = Field(
        default=30, ge=1, description="Seconds in-flight requests get on shutdown (Triton --exit-timeout-secs)."
    )
    labels: dict[str, str] = Field(default={}, description="Extra labels on every object.")
    env: dict[str, str] = Field(
        default={}, description="Environment variables of the server container (plain values; secrets: below)."
    )
    secrets: dict[str, SecretRef] = Field(
        default={},
        description="Environment variables read from Kubernetes Secrets by reference: NAME: {secret, key}; the "
        "values never appear in a manifest.",
    )
    redis: Redis | None = Field(
        default=None,
        description="{url: redis://...} | {deploy: true}: the Redis plugins use, passed as REPOFORGE_REDIS_URL.",
    )
    gateway: GatewayDeploySpec | None = Field(
        default=None,
        description="The streaming/async gateway and its queue workers (see spec/gateway.py); unset: none.",
    )

    @field_validator("env", "secrets")
    @classmethod
    def _env_names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name (letters, digits, '_')")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not _DNS_LABEL.match(v):
            raise ValueError(f"expected a DNS label (lower-case letters, digits, '-'; at most 63) (got {v!r})")
        return v

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        if not _DNS_LABEL.match(v):
            raise ValueError(f"expected a DNS label (lower-case letters, digits, '-'; at most 63) (got {v!r})")
        return v


#: A problem of the deploy section: (path inside `deploy:`, message).
DeployProblem = tuple[tuple[str | int, ...], str]


@dataclass(frozen=True)
class DeployRules:
    """What a target's server can run in a deployment. Each target states its own (`BuildRules.deploy`), and
    `check_deploy` reads these, never the target's name, so a new target is a new value, not a new branch."""

    server: str  # the server, as the messages name it ("TorchServe")
    autoscale_metrics: tuple[str, ...] | None = None  # the metrics it exports an equivalent of (None: every one)
    gateway: bool = True  # the gateway (Triton's gRPC protocol) can front it
    tracing: bool = True  # it exports OpenTelemetry traces
    model_repository_storage: bool = True  # it can read its models from storage (else only from a volume, a PVC)
    model_control: bool = True  # `model_control_mode` applies


def check_deploy(deploy: DeploySpec, *, rules: DeployRules, device: str) -> list[DeployProblem]:
    """The rules pydantic cannot see per field: bounds against each other, and what the target (its `rules`) and
    device can serve. Paths are relative to `deploy:` so the build and `--set` locate them each their own way."""
    problems: list[DeployProblem] = []
    r, a = deploy.replicas, deploy.autoscale
    if r.max < r.min:
        problems.append((("replicas", "max"), f"max {r.max} is less than min {r.min}"))
    if a.fallback_replicas is not None and not r.min <= a.fallback_replicas <= r.max:
        problems.append(
            (("autoscale", "fallback_replicas"), f"{a.fallback_replicas} is outside replicas {r.min}..{r.max}")
        )
    if deploy.spot.tolerate and deploy.spot.on_demand_min >= r.max:
        problems.append(
            (
                ("spot", "on_demand_min"),
                f"{deploy.spot.on_demand_min} on-demand pods leave no room for spot pods under replicas.max {r.max}",
            )
        )
    if a.metric == "gpu_utilization" and device != "gpu":
        problems.append(
            (
                ("autoscale", "metric"),
                "gpu_utilization has no data on a --device cpu build (Triton exports nv_gpu_utilization only "
                "for GPUs it uses); use queue_time_per_request_us",
            )
        )
    g = deploy.gateway
    if g is not None and g.async_ is not None and deploy.redis is None:
        problems.append((("gateway", "async"), "the queue lives in Redis: set redis: {url: ...} or {deploy: true}"))
    if g is not None and not rules.gateway:
        problems.append(
            (("gateway",), f"the gateway speaks Triton's gRPC protocol; {rules.server} builds have no gateway")
        )
    for name in deploy.env:
        if name in deploy.secrets:
            problems.append((("env", name), f"{name} is also set in secrets; set it in one place"))
    for section in ("env", "secrets"):
        for name in getattr(deploy, section):
            if name in RESERVED_ENV:
                problems.append(((section, name), f"{name} is set by the pod itself; choose another name"))
            elif name == REDIS_URL_ENV and deploy.redis is not None:
                problems.append(
                    ((section, name), f"{name} comes from redis: here; set the URL in one place (redis.url)")
                )
    problems += _gpu_sharing_problems(deploy, device)
    metrics = rules.autoscale_metrics
    if metrics is not None and a.metric not in metrics:
        problems.append(
            (
                ("autoscale", "metric"),
                f"{rules.server} exports no metric for {a.metric}; use one of {', '.join(metrics)}",
            )
        )
    if not rules.tracing and deploy.tracing is not None:
        problems.append((("tracing",), f"{rules.server} has no OpenTelemetry export; tracing is a Triton setting"))
    if (
        not rules.model_repository_storage
        and deploy.model_repository is not None
        and deploy.model_repository.pvc is None
    ):
        problems.append(
            (("model_repository",), f"{rules.server} reads its model store from a volume; use {{pvc: name}}")
        )
    if not rules.model_control and deploy.model_control_mode != "none":
        problems.append((("model_control_mode",), "model_control_mode is a Triton setting"))
    return problems


def _gpu_sharing_problems(deploy: DeploySpec, device: str) -> list[DeployProblem]:
    g = deploy.gpu
    if g is None:
        return []
    set_ = [k for k in ("mig", "time_slicing") if getattr(g, k) is not None]
    if len(set_) != 1:
        return [(("gpu",), "set one of mig (a MIG slice) or time_slicing (replicas of a whole GPU), not " +
                 ("both" if set_ else "neither"))]  # fmt: skip
    key = set_[0]
    if device != "gpu":
        return [(("gpu", key), f"{key} shares a GPU, and a --device cpu build runs on none; build with --device gpu")]
    out: list[DeployProblem] = []
    if deploy.resources.gpu == 0:
        out.append((("resources", "gpu"), f"0 GPUs leaves gpu.{key} nothing to request; remove resources.gpu"))
    if key == "time_slicing" and (deploy.resources.gpu or 1) > 1:
        # the device plugin may hand both replicas out of one GPU: two slices are not twice the GPU
        out.append((("resources", "gpu"), "a time-sliced pod requests 1 replica; more replicas are no more GPU"))
    if g.product is not None and (g.mig is None or g.mig_strategy != "single"):
        out.append((("gpu", "product"), "product selects single-strategy MIG nodes; set mig and mig_strategy: single"))
    if g.mig_strategy != "mixed" and g.mig is None:
        out.append((("gpu", "mig_strategy"), "mig_strategy applies to mig; remove it with time_slicing"))
    if g.rename_by_default and g.time_slicing is None:
        out.append((("gpu", "rename_by_default"), "rename_by_default applies to time_slicing; remove it with mig"))
    return out


def gpu_setting_warnings(deploy: DeploySpec, *, device: str, models: list[str], cpu_only: list[str]) -> list[str]:
    """GPU settings that no model can use, as warnings naming the models (they are not errors: a pod may share its
    node's GPU with something else, or the models may move to GPUs later). `models`: the models that run (not
    ensembles); `cpu_only`: those among them whose every instance is KIND_CPU."""
    if not models or set(cpu_only) != set(models):
        return []
    names = ", ".join(sorted(cpu_only))
    where = "a --device cpu build" if device != "gpu" else "a --device gpu build whose models all run on CPU (KIND_CPU)"
    out = []
    if (deploy.resources.gpu or 0) > 0:
        out.append(
            f"deploy.resources.gpu={deploy.resources.gpu} on {where}: {names} run on CPU, so the pod would hold a "
            "GPU it never uses; set resources.gpu=0"
            + (", or build with --device gpu" if device != "gpu" else ", or give the models kind: gpu instances")
        )
    if deploy.autoscale.metric == "gpu_utilization" and device == "gpu":
        out.append(
            f"deploy.autoscale.metric gpu_utilization on {where}: {names} run on CPU (KIND_CPU), so the GPU stays "
            "idle and the autoscaler never sees their load; use queue_time_per_request_us, or give the models "
            "kind: gpu instances"
        )
    return out


def resolved(deploy: DeploySpec, *, repository: str, device: str) -> dict[str, Any]:
    """The section with every default filled in (what the build records and `deploy k8s` reads back)."""
    data = deploy.model_dump(mode="json", by_alias=True)
    data["name"] = deploy.name or dns_name(repository)
    if deploy.model_repository is None:
        data["model_repository"] = {"pvc": f"{data['name']}-models"}
    data["model_repository"] = {k: v for k, v in data["model_repository"].items() if v is not None}
    if deploy.resources.gpu is None:
        data["resources"]["gpu"] = 1 if device == "gpu" else 0
    a = data["autoscale"]
    if a["target"] is None:
        a["target"] = DEFAULT_TARGETS[a["metric"]]
    if a["fallback_replicas"] is None:
        a["fallback_replicas"] = max(deploy.replicas.min, -(-deploy.replicas.max // 2))
    return data


def dns_name(name: str) -> str:
    """A repository name as a Kubernetes object name (lower case, '-' for anything else)."""
    s = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    if not s or not s[0].isalpha():
        s = f"models-{s}".strip("-")
    return s[:63].rstrip("-")
