"""`repoforge deploy kserve BUILD -o OUT [--storage-uri URI]`: the build as a KServe `ServingRuntime` for its
server (Triton or TorchServe) and an `InferenceService` that uses it.

KServe downloads the build from the storage URI into `/mnt/models` (its storage initializer) and runs the
runtime's container on it. The runtime carries what `deploy k8s` carries for the server (image, arguments from the
build, shared memory for Triton's Python backend, TorchServe's config.properties as a ConfigMap and its
workflows registered after start); the InferenceService carries the deployment's size: resources, min and max
replicas, environment and secrets (by reference). The same `deploy:` section and `--set` overrides apply.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from repoforge.deploy import k8s
from repoforge.deploy.build_info import BuildInfo
from repoforge.deploy.command import HEADER as K8S_HEADER
from repoforge.deploy.command import KUSTOMIZATION, _dump, settings
from repoforge.deploy.k8s import KSERVE_MOUNT, KServeRuntime
from repoforge.deploy.servers import server_image
from repoforge.errors import BuildError
from repoforge.output import atomic_dir, check_destination, sha256_file
from repoforge.spec.deploy import DeploySpec
from repoforge.targets import get_target, read_build

HEADER = K8S_HEADER.replace("deploy k8s", "deploy kserve")
#: URI schemes KServe's storage initializer downloads from.
STORAGE_SCHEMES = ("s3://", "gs://", "pvc://", "https://", "http://", "hdfs://", "webhdfs://", "oci://", "hf://")


@dataclass
class KServeResult:
    output: Path
    target: str
    storage_uri: str
    files: dict[str, str]  # relative path → sha256


def check_storage_uri(uri: str) -> str:
    """ValueError unless KServe's storage initializer can read `uri`."""
    if not uri.startswith(STORAGE_SCHEMES) or uri.rstrip("/") in {s.rstrip("/") for s in STORAGE_SCHEMES}:
        raise ValueError(f"{uri!r}: expected a storage URI KServe downloads from ({', '.join(STORAGE_SCHEMES)}...)")
    return uri


def default_storage_uri(d: DeploySpec) -> str:
    """The build's place as `deploy.model_repository` names it: the bucket, or `pvc://claim/sub_path`."""
    repo = d.model_repository
    assert repo is not None  # resolved() fills it
    if repo.url:
        return repo.url
    return f"pvc://{repo.pvc}" + (f"/{repo.sub_path.strip('/')}" if repo.sub_path else "")


def _resources(d: DeploySpec, gpus: int) -> dict[str, Any]:
    requests: dict[str, str] = {"cpu": d.resources.cpu, "memory": d.resources.memory}
    limits: dict[str, str] = {"memory": d.resources.memory}
    extended, _ = k8s.gpu_request(d, gpus)  # whole GPUs, a MIG slice or a time-sliced replica (deploy.gpu)
    requests.update(extended)
    limits.update(extended)
    return {"requests": requests, "limits": limits}


def _env(d: DeploySpec, name: str) -> list[dict[str, Any]]:
    return [k8s.dump(e) for e in k8s.user_env(d, name)]


def objects(info: BuildInfo, d: DeploySpec, storage_uri: str) -> tuple[dict[str, Any], dict[str, Any], KServeRuntime]:
    """(ServingRuntime, InferenceService, the runtime's parts) for the build."""
    name = d.name or info.repository
    gpus = d.resources.gpu or 0
    image, image_notes = server_image(info, d, deploy="kserve")
    rt = get_target(info.target).kserve_runtime(info, d, name, image)
    # what `deploy k8s` gives its container too: the pod's name (Triton's tracing resource reads $(POD_NAME))
    rt.container["env"] = [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    rt.notes = [*image_notes, *rt.notes]
    labels = k8s.labels(d, name)
    runtime_name = f"{name}-{info.target}"
    runtime_spec: dict[str, Any] = {
        "annotations": {"prometheus.kserve.io/port": str(rt.metrics_port), "prometheus.kserve.io/path": "/metrics"},
        "supportedModelFormats": [{"name": rt.model_format, "autoSelect": False}],
        "multiModel": False,
        "containers": [rt.container],
        "volumes": rt.volumes,
    }
    if rt.protocols:
        runtime_spec["protocolVersions"] = rt.protocols
    if gpus:
        runtime_spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    runtime = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": runtime_name, "namespace": d.namespace, "labels": labels},
        "spec": runtime_spec,
    }
    model: dict[str, Any] = {
        "modelFormat": {"name": rt.model_format},
        "runtime": runtime_name,
        "storageUri": storage_uri,
        "resources": _resources(d, gpus),
    }
    env = _env(d, name)
    if env:
        model["env"] = env
    predictor: dict[str, Any] = {
        "minReplicas": d.replicas.min,
        "maxReplicas": d.replicas.max,
        "terminationGracePeriodSeconds": k8s.DRAIN_S + d.exit_timeout_s + 10,
        "model": model,
    }
    node_selector = k8s.gpu_request(d, gpus)[1]
    if node_selector:  # the predictor's pod runs where the device plugin offers that share (deploy.gpu)
        predictor["nodeSelector"] = node_selector
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": d.namespace,
            "labels": labels,
            "annotations": {"serving.kserve.io/enable-prometheus-scraping": "true"},
        },
        "spec": {
            "predictor": predictor,
        },
    }
    return runtime, isvc, rt


def _yaml(*docs: dict[str, Any]) -> str:
    return HEADER + "---\n".join(_dump(d) for d in docs)


def kserve_files(info: BuildInfo, d: DeploySpec, storage_uri: str) -> dict[str, str]:
    runtime, isvc, rt = objects(info, d, storage_uri)
    name = d.name or info.repository
    files = {"servingruntime.yaml": _yaml(runtime), "inferenceservice.yaml": _yaml(isvc)}
    if rt.objects:
        files["server-config.yaml"] = _yaml(*rt.objects)
    if d.redis is not None and d.redis.deploy:
        files["redis.yaml"] = _yaml(*(k8s.dump(o) for o in k8s.redis_objects(d, name)))
    files[KUSTOMIZATION] = HEADER + yaml.safe_dump(
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "namespace": d.namespace,
            "resources": [f for f in files if f.endswith(".yaml")],
        },
        sort_keys=False,
    )
    files["README.md"] = _readme(info, d, storage_uri, runtime["metadata"]["name"], rt, files)
    return files


def _readme(
    info: BuildInfo, d: DeploySpec, storage_uri: str, runtime_name: str, rt: KServeRuntime, files: dict[str, str]
) -> str:
    name = d.name or info.repository
    what = {
        "servingruntime.yaml": f"ServingRuntime `{runtime_name}`: the {info.target} container for this build",
        "inferenceservice.yaml": f"InferenceService `{name}`: storage URI, resources, replicas, environment",
        "server-config.yaml": "TorchServe's config.properties (and workflow registration) as a ConfigMap",
        "redis.yaml": "Redis for the plugins (deploy.redis.deploy): Deployment, Service, PodDisruptionBudget",
        KUSTOMIZATION: "kustomize entry point",
    }
    lines = [
        f"# {name}: KServe deployment of the {info.target} build `{info.repository}`",
        "",
        f"Generated by `repoforge deploy kserve` from `{info.path.name}` ({info.device} build, models: "
        f"{', '.join(info.models)}). Regenerate with `--set key=value` / `--storage-uri` instead of editing.",
        "",
        "| file | what it is |",
        "|---|---|",
        *[f"| `{f}` | {what.get(f, '')} |" for f in files if f != "README.md"],
        "",
        "## Apply",
        "",
        f"1. Upload the build folder to `{storage_uri}` (KServe's storage initializer copies it to `{KSERVE_MOUNT}`).",
        "2. Apply, and wait for the InferenceService:",
        "",
        "```bash",
        "kubectl apply -k .",
        f"kubectl -n {d.namespace} get inferenceservice {name} -w",
        "```",
        "",
        "## How it behaves",
        "",
        f"- Replicas {d.replicas.min}..{d.replicas.max} (KServe's autoscaler); resources per pod: cpu "
        f"{d.resources.cpu}, memory {d.resources.memory}, GPUs {d.resources.gpu or 0}.",
        f"- Metrics: the pod's port {rt.metrics_port} `/metrics` (KServe's Prometheus scraping annotations). The "
        "alerts, dashboard and KEDA autoscaling are `repoforge deploy k8s`'s.",
    ]
    sharing = k8s.gpu_sharing_note(d, d.resources.gpu or 0)
    if sharing is not None:
        lines.append(sharing)
    if d.secrets:
        refs = ", ".join(f"`{k}` ← Secret `{r.secret}` key `{r.key}`" for k, r in d.secrets.items())
        lines.append(f"- From Secrets (by reference; no value is in these files): {refs}.")
    url = k8s.redis_url(d, name)
    if url is not None:
        lines.append(f"- Redis: plugins read `REPOFORGE_REDIS_URL={url}`.")
    repo = d.model_repository
    if repo is not None and repo.credentials_secret:
        lines.append(
            f"- Bucket credentials: KServe's storage initializer reads them through a ServiceAccount that lists the "
            f"Secret `{repo.credentials_secret}` (KServe's S3/GCS secret annotations), not through the container's "
            "environment: add `serviceAccountName` to the predictor."
        )
    fenced = False
    for n in rt.notes:
        if n.startswith("```"):
            fenced = not fenced
        lines.append(n if fenced or not n or n.startswith("```") else f"- {n}")
    lines += [
        "",
        "## Server arguments",
        "",
        "```",
        " ".join([*rt.container["command"], *rt.container["args"]]),
        "```",
        "",
    ]
    return "\n".join(lines)


def _looks_ours(path: Path) -> bool:
    k = path / KUSTOMIZATION
    return k.is_file() and k.read_text(errors="replace").startswith(HEADER)


def deploy_kserve(
    build_dir: str | Path,
    output: str | Path,
    *,
    storage_uri: str | None = None,
    sets: Sequence[str] = (),
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> KServeResult:
    """Write OUT for the build; SpecError (exit 2) for a bad section or override, BuildError for a folder
    repoforge did not build, a bad storage URI or an OUT that exists without `force`. Nothing is written then."""
    say = progress or (lambda _m: None)
    info = read_build(Path(build_dir))
    out = Path(output)
    d = settings(info, sets)
    if storage_uri is not None:
        try:
            check_storage_uri(storage_uri)
        except ValueError as exc:
            raise BuildError(f"--storage-uri {exc}") from None
    uri = storage_uri or default_storage_uri(d)
    check_destination(out, force, _looks_ours)
    files = kserve_files(info, d, uri)
    with atomic_dir(out, force) as tmp:
        for rel, text in files.items():
            (tmp / rel).write_text(text, encoding="utf-8")
            say(f"wrote {rel}")
    hashes = {rel: sha256_file(out / rel) for rel in files}
    return KServeResult(output=out.resolve(), target=info.target, storage_uri=uri, files=hashes)


def as_json(result: KServeResult) -> str:
    return json.dumps(
        {
            "output": str(result.output),
            "target": result.target,
            "storage_uri": result.storage_uri,
            "files": result.files,
        },
        indent=2,
        sort_keys=True,
    )
