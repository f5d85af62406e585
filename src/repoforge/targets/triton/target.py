"""NVIDIA Triton: a model repository of config.pbtxt folders (repoforge.triton), served by tritonserver."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from repoforge.contract import Device
from repoforge.contract import Target as TargetName
from repoforge.deploy.build_info import BuildInfo
from repoforge.deploy.k8s import KServeRuntime, ServerShape
from repoforge.deploy.servers import triton_shape
from repoforge.optimize.build_step import apply_optimize
from repoforge.output import BuildResult, check_destination
from repoforge.plan import detect_device, make_plan
from repoforge.servers.triton import TritonServer
from repoforge.spec.deploy import DeploySpec
from repoforge.spec.load import LoadedSpec
from repoforge.targets.triton import build_info, serve
from repoforge.targets.triton.deploy import kserve_runtime
from repoforge.targets.triton.validate import validate_triton
from repoforge.targets.types import (
    BatchEndpoint,
    Capability,
    ControlEndpoint,
    Endpoints,
    PerfEndpoints,
    Progress,
    ServePort,
    ValidationReport,
    pick_port,
)
from repoforge.triton.build_rules import TRITON_RULES
from repoforge.triton.client import TritonClient
from repoforge.triton.repository import looks_like_model_repository, write_repository


class TritonTarget:
    name: TargetName = "triton"
    server_name = "tritonserver"
    default_ports = (8000, 8001, 8002)
    rules = TRITON_RULES

    def recognises(self, path: Path) -> bool:
        return looks_like_model_repository(path)

    def cannot(self, what: Capability, path: Path) -> str | None:
        return None

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
        device = device or detect_device()
        check_destination(output, force, looks_like_model_repository)  # before `optimize:`, which takes a while
        loaded, optimized = apply_optimize(loaded, device, progress)
        plan = make_plan(loaded, device)
        optimized.attach(plan)
        for w in plan.warnings:
            progress(f"warning: {w}")
        return write_repository(
            plan,
            output,
            force=force,
            progress=progress,
            lock_extra={"optimize": optimized.lock} if optimized.lock else None,
            pack_env=pack_env,
        )

    def validate(self, output: Path, *, progress: Progress, **options: Any) -> ValidationReport:
        return validate_triton(output, progress=progress, **options)

    def validate_running(self, output: Path, *, url: str, progress: Progress, **options: Any) -> ValidationReport:
        return validate_triton(output, url=url, progress=progress, **options)

    def serve_ports(
        self, *, http_port: int | None, grpc_port: int | None, metrics_port: int | None, auto: bool
    ) -> list[ServePort]:
        http, grpc, metrics = (
            pick_port(given, default, auto)
            for given, default in zip((http_port, grpc_port, metrics_port), self.default_ports, strict=True)
        )
        return [ServePort("HTTP", "--http-port", http), ServePort("gRPC", "--grpc-port", grpc),
                ServePort("metrics", "--metrics-port", metrics)]  # fmt: skip

    def server(self, output: Path, *, host: str, ports: list[ServePort], **options: Any) -> TritonServer:
        http, grpc, metrics = (p.port for p in ports)
        return serve.make_server(output, host=host, http_port=http, grpc_port=grpc, metrics_port=metrics, **options)

    def endpoints(self, server: TritonServer) -> Endpoints:
        return serve.endpoints(server)

    def docker_recipe(
        self,
        output: Path,
        *,
        http_port: int | None,
        grpc_port: int | None,
        metrics_port: int | None,
        cache_size_bytes: int | None,
    ) -> str:
        return serve.docker_recipe(
            output,
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            cache_size_bytes=cache_size_bytes,
        )

    def serves_at(self, http_url: str) -> bool:
        return TritonClient(f"http://{http_url}").is_live()

    def running_perf_endpoint(
        self, http_url: str, models: list[str], *, grpc_url: str | None, need_grpc: bool
    ) -> PerfEndpoints:
        return serve.running_for_perf(http_url, models, grpc_url, need_grpc)

    def perf_endpoint(self, output: Path, models: list[str], say: Progress) -> AbstractContextManager[PerfEndpoints]:
        return serve.serve_for_perf(output, models, say)

    def batch_endpoint(self, output: Path, model: str, say: Progress) -> AbstractContextManager[BatchEndpoint]:
        return serve.serve_for_batch(output, model, say)

    def rollout_endpoint(self, output: Path, say: Progress) -> AbstractContextManager[ControlEndpoint]:
        return serve.serve_for_rollout(output, say)

    def describe_build(self, info: BuildInfo) -> BuildInfo:
        return build_info.describe_build(info)

    def deploy_shape(self, build: BuildInfo, deploy: DeploySpec) -> ServerShape:
        return triton_shape(build, deploy)

    def kserve_runtime(self, build: BuildInfo, deploy: DeploySpec, name: str, image: str) -> KServeRuntime:
        return kserve_runtime(build, deploy, name, image)
