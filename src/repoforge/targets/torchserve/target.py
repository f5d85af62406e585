"""TorchServe: .mar archives, model-config.yaml, workflows and config.properties (repoforge.torchserve),
served by torchserve with token auth on."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from repoforge.contract import Device
from repoforge.contract import Target as TargetName
from repoforge.deploy.build_info import BuildInfo
from repoforge.deploy.k8s import KServeRuntime, ServerShape
from repoforge.deploy.servers import torchserve_shape
from repoforge.output import BuildResult
from repoforge.servers.torchserve import TorchServeServer
from repoforge.spec.deploy import DeploySpec
from repoforge.spec.load import LoadedSpec
from repoforge.targets.torchserve import build_info, serve
from repoforge.targets.torchserve.deploy import kserve_runtime
from repoforge.targets.torchserve.validate import validate_torchserve
from repoforge.targets.types import (
    BatchEndpoint,
    Capability,
    ControlEndpoint,
    Endpoints,
    PerfEndpoints,
    Progress,
    ServePort,
    TargetArgumentError,
    ValidationReport,
    pick_port,
)
from repoforge.torchserve.build_rules import TORCHSERVE_RULES
from repoforge.torchserve.builder import build_torchserve, looks_like_torchserve_output

#: Why each capability TorchServe lacks is missing (the usage error says it, with what to do instead).
_CANNOT: dict[str, str] = {
    # TorchServe's inference API is not Triton's, and the batch engines speak Triton's
    "batch": "{path} is a TorchServe build; batch scores through Triton only yet (build with --target triton)",
    "rollout": "{path} is a TorchServe build; rollout drives the router plugin on Triton only",
    # the request body perf_analyzer posts to each model comes from the build (its smoke inputs)
    "perf_url": "{path} is a running TorchServe; perf measures TorchServe from its build folder, which holds each "
    "model's request body: repoforge perf BUILD_DIR --model MODEL",
    "gateway": "{path} is a TorchServe build; the gateway speaks Triton's gRPC protocol and serves Triton builds",
}


class TorchServeTarget:
    name: TargetName = "torchserve"
    server_name = "TorchServe"
    default_ports = (8080, 7070, 8082)  # inference (management is the next port), gRPC inference, metrics
    rules = TORCHSERVE_RULES

    def recognises(self, path: Path) -> bool:
        return looks_like_torchserve_output(path)

    def cannot(self, what: Capability, path: Path) -> str | None:
        return _CANNOT[what].format(path=path) if what in _CANNOT else None

    def build(
        self,
        loaded: LoadedSpec,
        output: Path,
        *,
        device: Device | None,
        force: bool,
        progress: Progress,
        pack_env: bool = False,
    ) -> BuildResult:
        if pack_env:
            raise TargetArgumentError(
                "--pack-env",
                "--pack-env packs Triton execution environments; TorchServe installs each .mar's requirements.txt "
                "itself (install_py_dep_per_model, which the build's config.properties turns on)",
            )
        return build_torchserve(loaded, output, force=force, progress=progress, device=device)

    def validate(self, output: Path, *, progress: Progress, **options: Any) -> ValidationReport:
        return validate_torchserve(output, progress)

    def validate_running(self, output: Path, *, url: str, progress: Progress, **options: Any) -> ValidationReport:
        raise TargetArgumentError("--url", "--url reaches a running Triton; TorchServe builds are validated alone")

    def serve_ports(
        self, *, http_port: int | None, grpc_port: int | None, metrics_port: int | None, auto: bool
    ) -> list[ServePort]:
        defaults = dict(zip(("http", "grpc", "metrics"), self.default_ports, strict=True))
        http = pick_port(http_port, defaults["http"], auto)
        grpc = pick_port(grpc_port, defaults["grpc"], auto)
        metrics = pick_port(metrics_port, defaults["metrics"], auto)

        def after(p: int | None) -> int | None:
            return None if p is None else p + 1

        return [ServePort("inference", "--http-port", http), ServePort("management", "--http-port + 1", after(http)),
                ServePort("metrics", "--metrics-port", metrics), ServePort("gRPC inference", "--grpc-port", grpc),
                ServePort("gRPC management", "--grpc-port + 1", after(grpc))]  # fmt: skip

    def server(self, output: Path, *, host: str, ports: list[ServePort], **options: Any) -> TorchServeServer:
        if (options.get("model_control") or "none") != "none" or options.get("load_models"):
            raise TargetArgumentError(
                "--model-control", f"{output} is a TorchServe build; model control and --load are Triton settings "
                "(TorchServe's management API loads and unloads models as it is)"
            )  # fmt: skip
        return serve.make_torchserve(output, host=host, ports=[p.port for p in ports])

    def endpoints(self, server: TorchServeServer) -> Endpoints:
        return serve.torchserve_endpoints(server)

    def docker_recipe(
        self,
        output: Path,
        *,
        http_port: int | None,
        grpc_port: int | None,
        metrics_port: int | None,
        cache_size_bytes: int | None,
    ) -> str:
        if cache_size_bytes is not None:
            raise TargetArgumentError("--cache-size", "--cache-size sizes Triton's response cache; TorchServe has none")
        return serve.docker_recipe(output, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port)

    def serves_at(self, http_url: str) -> bool:
        return serve.answers_ping(http_url)

    def running_perf_endpoint(
        self, http_url: str, models: list[str], *, grpc_url: str | None, need_grpc: bool
    ) -> PerfEndpoints:
        raise TargetArgumentError("TARGET", _CANNOT["perf_url"].format(path=http_url))

    def perf_endpoint(self, output: Path, models: list[str], say: Progress) -> AbstractContextManager[PerfEndpoints]:
        return serve.serve_for_perf(output, models, say)

    def batch_endpoint(self, output: Path, model: str, say: Progress) -> AbstractContextManager[BatchEndpoint]:
        raise TargetArgumentError("TARGET", _CANNOT["batch"].format(path=output))

    def rollout_endpoint(self, output: Path, say: Progress) -> AbstractContextManager[ControlEndpoint]:
        raise TargetArgumentError("TARGET", _CANNOT["rollout"].format(path=output))

    def describe_build(self, info: BuildInfo) -> BuildInfo:
        return build_info.describe_build(info)

    def deploy_shape(self, build: BuildInfo, deploy: DeploySpec) -> ServerShape:
        return torchserve_shape(build, deploy)

    def kserve_runtime(self, build: BuildInfo, deploy: DeploySpec, name: str, image: str) -> KServeRuntime:
        return kserve_runtime(build, deploy, name, image)
