"""Each target's server in a pod: image, arguments from the build, ports, health paths and its PromQL catalog.
The targets' `deploy_shape` return these (repoforge.targets)."""

from __future__ import annotations

from cloudcoil import apimachinery as meta
from cloudcoil.models.kubernetes.core import v1 as core

from repoforge.deploy.build_info import BuildInfo
from repoforge.deploy.k8s import ServerShape, labels, metrics_service
from repoforge.deploy.promql import torchserve_catalog, triton_catalog
from repoforge.spec.deploy import DeploySpec

#: Triton's response cache size in a pod when a model of the build uses it.
CACHE_BYTES = 256 * 1024 * 1024
TRITON_PORTS = [("http", 8000), ("grpc", 8001), ("metrics", 8002)]
TORCHSERVE_PORTS = [("http", 8080), ("management", 8081), ("grpc", 7070), ("grpc-management", 7071), ("metrics", 8082)]
TORCHSERVE_IMAGE = "pytorch/torchserve:{version}-{device}"


def _catalog_args(info: BuildInfo, d: DeploySpec, name: str) -> dict[str, object]:
    a = d.autoscale
    assert a.target is not None
    return {
        "job": metrics_service(name),
        "namespace": d.namespace,
        "window": a.window,
        "metric": a.metric,
        "target": a.target,
        "on_demand": d.spot.on_demand_min if d.spot.tolerate else 0,
        "slo": d.slo.model_dump(by_alias=True),
        "name": name,
        "features": info.features,
    }


def triton_args(info: BuildInfo, d: DeploySpec, name: str) -> list[str]:
    """tritonserver's flags for the pod, from the build: the cache only where a model uses it, latency summaries
    (what the p99 alert and panel read), OpenTelemetry tracing when `tracing:` is set. No
    `histogram_latencies=true`: Triton 2.51 exports no histogram for these models with it (checked on a decoupled
    Python model and on the plugin models; tests/integration/test_deploy_prometheus.py keeps checking)."""
    repo = d.model_repository
    args = [f"--model-repository={repo.url if repo is not None and repo.url else '/models'}"]
    args.append(f"--model-control-mode={d.model_control_mode}")
    if d.model_control_mode == "poll":
        args.append("--repository-poll-secs=30")
    for name_, port in TRITON_PORTS:
        args.append(f"--{name_}-port={port}")
    args += ["--strict-readiness=true", "--exit-on-error=true", f"--exit-timeout-secs={d.exit_timeout_s}"]
    if info.features.response_cache:
        args.append(f"--cache-config=local,size={CACHE_BYTES}")
    args.append("--metrics-config=summary_latencies=true")  # p50/p99 per model (the p99 SLO alert reads it)
    if d.tracing is not None:
        args += [
            "--trace-config=mode=opentelemetry",
            f"--trace-config=rate={d.tracing.rate}",
            "--trace-config=level=TIMESTAMPS",
            f"--trace-config=opentelemetry,url={d.tracing.otlp_endpoint}",
            f"--trace-config=opentelemetry,resource=service.name={name}",
            # Kubernetes expands $(POD_NAME) from the container's env
            "--trace-config=opentelemetry,resource=k8s.pod.name=$(POD_NAME)",
            f"--trace-config=opentelemetry,resource=k8s.namespace.name={d.namespace}",
        ]
    return args


def triton_image(info: BuildInfo, d: DeploySpec) -> tuple[str, list[str]]:
    """The image and README notes: the NGC image of the build's Triton, or, when a model's model.py imports
    repoforge (a --device cpu build's runners, plugins), an image FROM it with repoforge installed."""
    from repoforge import __version__
    from repoforge.servers.triton_install import NGC_IMAGE

    if d.image:
        return d.image, []
    if not info.needs_repoforge:
        return NGC_IMAGE, [
            f"Image: `{NGC_IMAGE}` (the NGC release of Triton {info.versions.get('triton_target', '')})."
        ]
    from repoforge.triton.image import runtime_dockerfile

    tag = f"repoforge-tritonserver:{__version__}"
    dockerfile, _ = runtime_dockerfile(["torch"] if info.torchscript_runner else [])
    return tag, [
        f"Image: `{tag}`. {', '.join(info.needs_repoforge)} run repoforge's Python backends, which the NGC image "
        "lacks; build and push this image (or set `deploy.image`), from this Dockerfile:",
        "",
        "```dockerfile",
        dockerfile.rstrip("\n"),
        "```",
    ]


def triton_shape(info: BuildInfo, d: DeploySpec) -> ServerShape:
    name = d.name or info.repository
    image, notes = triton_image(info, d)
    repo = d.model_repository
    return ServerShape(
        container="tritonserver",
        image=image,
        command=["tritonserver"],
        args=triton_args(info, d, name),
        ports=TRITON_PORTS,
        live_path="/v2/health/live",
        ready_path="/v2/health/ready",
        catalog=triton_catalog(**_catalog_args(info, d, name)),  # type: ignore[arg-type]
        env_from_secret=repo.credentials_secret if repo is not None else None,
        notes=notes,
    )


def torchserve_config(d: DeploySpec, info: BuildInfo) -> str:
    """The build's config.properties with pod addresses (0.0.0.0) and the model store on the volume."""
    text = (info.path / "config.properties").read_text()
    out = []
    for line in text.splitlines():
        key = line.split("=", 1)[0]
        if key in ("inference_address", "management_address", "metrics_address"):
            line = line.replace("127.0.0.1", "0.0.0.0")
        elif key == "model_store":
            line = "model_store=/models/model-store"
        elif key == "workflow_store":
            line = "workflow_store=/models/wf-store"
        out.append(line)
    out.append("grpc_inference_address=0.0.0.0")
    out.append("grpc_management_address=0.0.0.0")
    return "\n".join(out) + "\n"


def torchserve_shape(info: BuildInfo, d: DeploySpec) -> ServerShape:
    name = d.name or info.repository
    version = str(info.versions.get("torchserve") or "0.12.0")
    image = d.image or TORCHSERVE_IMAGE.format(version=version, device="gpu" if info.device == "gpu" else "cpu")
    cm = core.ConfigMap(
        metadata=meta.ObjectMeta(name=f"{name}-torchserve-config", namespace=d.namespace, labels=labels(d, name)),
        data={"config.properties": torchserve_config(d, info)},
    )
    vol = core.Volume(name="ts-config", config_map=core.ConfigMapVolumeSource(name=f"{name}-torchserve-config"))
    mount = core.VolumeMount(name="ts-config", mount_path="/etc/torchserve", read_only=True)
    return ServerShape(
        container="torchserve",
        image=image,
        command=["torchserve"],
        args=["--start", "--foreground", "--ncs", "--ts-config=/etc/torchserve/config.properties"],
        ports=TORCHSERVE_PORTS,
        # TorchServe's token auth (on in the build) covers /ping too: the probes check the port instead
        live_path=None,
        ready_path=None,
        catalog=torchserve_catalog(**_catalog_args(info, d, name)),  # type: ignore[arg-type]
        shm=False,
        extra_objects=[cm],
        extra_volumes=[(vol, mount)],
        notes=[
            f"Image: `{image}`. The pod runs the build's config.properties (ConfigMap `{name}-torchserve-config`) "
            "with 0.0.0.0 addresses; token authorization stays on, so the probes check the ports (a TCP "
            "connect) rather than /ping.",
        ],
    )
