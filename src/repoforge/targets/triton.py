"""NVIDIA Triton: a model repository of config.pbtxt folders (repoforge.triton), served by tritonserver."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repoforge.contract import Device
from repoforge.contract import Target as TargetName

if TYPE_CHECKING:
    from repoforge.batch.command import BatchEndpoint
    from repoforge.deploy.build_info import BuildInfo
    from repoforge.output import BuildResult
    from repoforge.perf.command import PerfEndpoints
    from repoforge.serve import Endpoints, ServePort
    from repoforge.servers.triton import TritonServer
    from repoforge.spec.deploy import DeploySpec
    from repoforge.spec.load import LoadedSpec
    from repoforge.targets import Progress
    from repoforge.validate import ValidationReport


class TritonTarget:
    name: TargetName = "triton"
    server_name = "tritonserver"
    default_ports = (8000, 8001, 8002)

    def recognises(self, path: Path) -> bool:
        from repoforge.triton.repository import looks_like_model_repository

        return looks_like_model_repository(path)

    def build(
        self, loaded: LoadedSpec, output: Path, *, device: Device | None, force: bool, progress: Progress
    ) -> BuildResult:
        from repoforge.optimize.build_step import apply_optimize
        from repoforge.output import check_destination
        from repoforge.plan import detect_device, make_plan
        from repoforge.triton.repository import looks_like_model_repository, write_repository

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
        )

    def validate(self, output: Path, *, progress: Progress, **options: Any) -> ValidationReport:
        from repoforge.validate import validate_triton

        return validate_triton(output, progress=progress, **options)

    def serve_ports(
        self, *, http_port: int | None, grpc_port: int | None, metrics_port: int | None, auto: bool
    ) -> list[ServePort]:
        from repoforge.serve import ServePort, pick_port

        http, grpc, metrics = (
            pick_port(given, default, auto)
            for given, default in zip((http_port, grpc_port, metrics_port), self.default_ports, strict=True)
        )
        return [ServePort("HTTP", "--http-port", http), ServePort("gRPC", "--grpc-port", grpc),
                ServePort("metrics", "--metrics-port", metrics)]  # fmt: skip

    def server(self, output: Path, *, host: str, ports: list[ServePort], **options: Any) -> TritonServer:
        from repoforge.serve import make_server

        http, grpc, metrics = (p.port for p in ports)
        return make_server(output, host=host, http_port=http, grpc_port=grpc, metrics_port=metrics, **options)

    def endpoints(self, server: TritonServer) -> Endpoints:
        from repoforge.serve import Endpoints

        rows = [("HTTP", f"http://{server.http_url}   (curl http://{server.http_url}/v2/health/ready)"),
                ("gRPC", server.grpc_url), ("metrics", server.metrics_url)]  # fmt: skip
        ready = sorted({s["name"] for s in server.model_states() if s["state"] == "READY"})
        notes = []
        if server.options.model_control == "explicit":
            notes.append(
                f"model control explicit: load/unload with POST http://{server.http_url}/v2/repository/models/<model>"
                "/load (or /unload); blue-green `repoforge rollout` can unload blue"
            )
        return Endpoints(self.server_name, rows, ready, notes)

    def perf_endpoint(self, output: Path, models: list[str], say: Progress) -> AbstractContextManager[PerfEndpoints]:
        from repoforge.perf.command import serve_triton_for_perf

        return serve_triton_for_perf(output, models, say)

    def batch_endpoint(self, output: Path, model: str, say: Progress) -> AbstractContextManager[BatchEndpoint]:
        from repoforge.batch.command import serve_triton_for_batch

        return serve_triton_for_batch(output, model, say)

    def deploy_manifests(self, build: BuildInfo, deploy: DeploySpec) -> dict[str, str]:
        from repoforge.deploy.command import manifests
        from repoforge.deploy.servers import triton_shape

        return manifests(build, deploy, triton_shape(build, deploy))
