"""Each target's server in a pod: image, arguments from the build, ports, health paths and its PromQL catalog.
The targets' `deploy_shape` return these (repoforge.targets)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from repoforge import lazy
from repoforge.deploy.build_info import BuildInfo
from repoforge.deploy.image_plan import plan_image
from repoforge.deploy.k8s import ServerShape, labels, metrics_service
from repoforge.deploy.promql import torchserve_catalog, triton_catalog
from repoforge.spec.deploy import DeploySpec

if TYPE_CHECKING:
    from cloudcoil import apimachinery as meta
    from cloudcoil.models.kubernetes.core import v1 as core
else:
    meta, core = lazy.Deferred(lazy.k8s_meta), lazy.Deferred(lazy.k8s_core)

#: Triton's response cache size in a pod when a model of the build uses it.
CACHE_BYTES = 256 * 1024 * 1024
TRITON_PORTS = [("http", 8000), ("grpc", 8001), ("metrics", 8002)]
TS_CONFIG_DIR = "/etc/torchserve"
#: How the build's config.properties comment on install_py_dep_per_model begins (model_repo_templates).
INSTALL_COMMENT = ("# Archives with a requirements.txt", "# TorchServe pip-installs it")
TORCHSERVE_PORTS = [("http", 8080), ("management", 8081), ("grpc", 7070), ("grpc-management", 7071), ("metrics", 8082)]


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


def triton_args(
    info: BuildInfo,
    d: DeploySpec,
    name: str,
    *,
    repository: str | None = None,
    ports: list[tuple[str, int]] = TRITON_PORTS,
) -> list[str]:
    """tritonserver's flags for the pod, from the build: explicit model control with `serving:` (the gateway
    sidecar loads on demand), the rate limiter where instance groups declare one, the cache only where a model
    uses it, latency summaries
    (what the p99 alert and panel read), OpenTelemetry tracing when `tracing:` is set. No
    `histogram_latencies=true`: Triton 2.51 exports no histogram for these models with it (checked on a decoupled
    Python model and on the plugin models; tests/integration/test_deploy_prometheus.py keeps checking)."""
    repo = d.model_repository
    if repository is None:
        repository = repo.url if repo is not None and repo.url else "/models"
    args = [f"--model-repository={repository}"]
    # with `serving:` the gateway sidecar loads models on demand: Triton starts with none (explicit, no --load-model)
    mode = "explicit" if info.serving is not None else d.model_control_mode
    args.append(f"--model-control-mode={mode}")
    if mode == "poll":
        args.append("--repository-poll-secs=30")
    for name_, port in ports:
        args.append(f"--{name_}-port={port}")
    args += ["--strict-readiness=true", "--exit-on-error=true", f"--exit-timeout-secs={d.exit_timeout_s}"]
    if info.features.response_cache:
        args.append(f"--cache-config=local,size={CACHE_BYTES}")
    args.append("--metrics-config=summary_latencies=true")  # p50/p99 per model (the p99 SLO alert reads it)
    args += info.rate_limit  # --rate-limit=execution_count when instance groups declare a rate limiter
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


def server_image(info: BuildInfo, d: DeploySpec, deploy: str = "k8s") -> tuple[str, list[str]]:
    """The pod's image and the README's notes on it: `deploy.image` when set (the image `repoforge image` wrote,
    pushed), else the stock image when the build needs nothing more, else the local name `repoforge image`
    gives it, which must be built and pushed first."""
    plan = plan_image(info)
    if d.image:
        return d.image, [f"Image: `{d.image}` (deploy.image; stock image of this build: `{plan.base}`)."]
    if plan.legacy:
        return plan.base, [
            f"Image: `{plan.base}` cannot load this build as it is: {', '.join(plan.legacy[:4])} "
            f"import{'s' if len(plan.legacy) == 1 else ''} the installed repoforge package, which the stock image lacks. Rebuild it with a repoforge whose builds "
            "carry their runtime (repoforge_runtime), then regenerate these files."
        ]
    if not plan.needed:
        return plan.base, [f"Image: `{plan.base}`, the stock image: the build declares nothing beyond it."]
    return plan.tag, [
        f"Image: `{plan.tag}` is not pushed anywhere yet: the build's models need "
        f"{', '.join(f'`{r}`' for r in plan.requirements)} on top of `{plan.base}`. Write its Dockerfile and "
        "context, build and push it, and regenerate with its pushed name (or set `deploy.image` in the spec):",
        "",
        "```bash",
        f"repoforge image {info.path.name} -o image",
        *plan.commands("image", deploy=deploy),
        "```",
    ]


def triton_shape(info: BuildInfo, d: DeploySpec) -> ServerShape:
    name = d.name or info.repository
    image, notes = server_image(info, d)
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


def installs_at_start(info: BuildInfo, image: str) -> bool:
    """Whether TorchServe must pip-install the .mar files' requirements.txt in a pod on `image`: only on the stock
    image. The image `repoforge image` writes (or the pushed `deploy.image`) has the build's declared packages
    installed, and installing them again would make every pod start wait on (and depend on) a package index."""
    return image == info.stock_image().base and plan_image(info).needed


def install_notes(info: BuildInfo, image: str) -> list[str]:
    """The README's line on what TorchServe installs when the pod starts (none for a build that declares
    nothing)."""
    if not plan_image(info).needed:
        return []
    if installs_at_start(info, image):
        return [
            "On the stock image TorchServe pip-installs each .mar's requirements.txt when it registers the model "
            "(install_py_dep_per_model=true): the pod needs a package index at every start."
        ]
    return [
        "The image has the build's declared packages installed, so the pod's config.properties turns "
        "install_py_dep_per_model off: TorchServe installs nothing at start."
    ]


def torchserve_config(
    d: DeploySpec,
    info: BuildInfo,
    *,
    image: str,
    root: str = "/models",
    local: tuple[str, ...] = (),
    extra: tuple[str, ...] = (),
) -> str:
    """The build's config.properties with pod addresses (0.0.0.0, or 127.0.0.1 for the APIs in `local`), the
    model and workflow stores under `root`, install_py_dep_per_model off unless `image` is the stock one (see
    `installs_at_start`), and `extra` lines."""
    text = (info.path / "config.properties").read_text()
    installs = installs_at_start(info, image)
    out = []
    for line in text.splitlines():
        key = line.split("=", 1)[0]
        if line.startswith(INSTALL_COMMENT) and not installs:
            continue  # the build's comment on what TorchServe installs at registration
        if key == "install_py_dep_per_model" and not installs:
            if line.endswith("=true"):
                out.append(
                    "# The image has the packages the archives' requirements.txt name: nothing is installed at start."
                )
            line = "install_py_dep_per_model=false"
        if key in ("inference_address", "management_address", "metrics_address"):
            if key.removesuffix("_address") not in local:
                line = line.replace("127.0.0.1", "0.0.0.0")
        elif key == "model_store":
            line = f"model_store={root}/model-store"
        elif key == "workflow_store":
            line = f"workflow_store={root}/wf-store"
        out.append(line)
    out.append("grpc_inference_address=0.0.0.0")
    out.append("grpc_management_address=" + ("127.0.0.1" if "management" in local else "0.0.0.0"))
    out += extra
    return "\n".join(out) + "\n"


#: Registers the build's workflows once TorchServe answers: it has no setting that loads workflows at start (only
#: `load_models`). The container's postStart hook runs it; the pod counts as started only once it succeeds.
REGISTER_WORKFLOWS = """\
\"\"\"Register the build's TorchServe workflows (.war) in this pod (written by `repoforge deploy k8s`).\"\"\"
import json, sys, time, urllib.error, urllib.request

WORKFLOWS = {workflows}
CONFIG = "/etc/torchserve/config.properties"
deadline = time.monotonic() + {timeout}
props = dict(line.split("=", 1) for line in open(CONFIG).read().splitlines() if "=" in line and not line.startswith("#"))
port = props.get("management_address", "http://0.0.0.0:8081").rsplit(":", 1)[1]
token_auth = props.get("disable_token_authorization", "false").lower() != "true"
for war in WORKFLOWS:
    while True:
        headers = {{}}
        try:
            if token_auth:  # TorchServe writes its keys to key_file.json in the folder it started in
                headers["Authorization"] = "Bearer " + json.load(open("key_file.json"))["management"]["key"]
            req = urllib.request.Request(f"http://127.0.0.1:{{port}}/workflows?url={{war}}", method="POST", headers=headers)
            urllib.request.urlopen(req, timeout=max(1.0, deadline - time.monotonic())).read()
            print(f"registered {{war}}")
            break
        except urllib.error.HTTPError as exc:
            if exc.code == 409:  # already registered (a restarted hook)
                break
            error = f"HTTP {{exc.code}}: {{exc.read()[:500]!r}}"
        except (OSError, KeyError, ValueError) as exc:  # not up yet, no key file yet
            error = repr(exc)
        if time.monotonic() > deadline:
            sys.exit(f"workflow {{war}} did not register: {{error}}")
        time.sleep(2)
"""


def torchserve_shape(info: BuildInfo, d: DeploySpec) -> ServerShape:
    """TorchServe in a pod: the build's config.properties with pod addresses (a ConfigMap), the model store on the
    volume, the image that has what the build's handlers declare, and the workflows registered after start."""
    name = d.name or info.repository
    image, notes = server_image(info, d)
    ts = torchserve_config_objects(info, d, name, torchserve_config(d, info, image=image))
    workflows = ts.workflows
    notes = [
        *notes,
        f"The pod runs the build's config.properties (ConfigMap `{name}-torchserve-config`) with 0.0.0.0 addresses "
        "and the model store on the volume; token authorization stays on, so the probes check the ports (a TCP "
        "connect) rather than /ping.",
        *install_notes(info, image),
    ]
    if workflows:
        notes.append(
            f"Workflows {', '.join(workflows)}: TorchServe loads only models at start, so the container's postStart "
            "hook (`register_workflows.py` in the ConfigMap) registers them through the management API with the "
            "pod's management key; the pod is not started, and not ready, until they are registered."
        )
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
        extra_objects=[ts.config_map],
        extra_volumes=[(ts.volume, ts.mount)],
        notes=notes,
        post_start=ts.post_start,
    )


@dataclass
class TorchServeConfig:
    """The ConfigMap a TorchServe pod reads its config.properties (and workflow registration) from."""

    config_map: core.ConfigMap
    volume: core.Volume
    mount: core.VolumeMount
    workflows: list[str]
    post_start: list[str] | None


def torchserve_config_objects(info: BuildInfo, d: DeploySpec, name: str, config: str) -> TorchServeConfig:
    workflows = [f"{w}.war" for w in info.versions.get("workflows") or []]
    data = {"config.properties": config}
    post_start = None
    if workflows:
        data["register_workflows.py"] = REGISTER_WORKFLOWS.format(
            workflows=json.dumps(workflows), timeout=max(d.probes.startup_timeout_s - 30, 30)
        )
        post_start = ["python", f"{TS_CONFIG_DIR}/register_workflows.py"]
    cm_name = f"{name}-torchserve-config"
    return TorchServeConfig(
        config_map=core.ConfigMap(
            metadata=meta.ObjectMeta(name=cm_name, namespace=d.namespace, labels=labels(d, name)), data=data
        ),
        volume=core.Volume(name="ts-config", config_map=core.ConfigMapVolumeSource(name=cm_name)),
        mount=core.VolumeMount(name="ts-config", mount_path=TS_CONFIG_DIR, read_only=True),
        workflows=workflows,
        post_start=post_start,
    )
