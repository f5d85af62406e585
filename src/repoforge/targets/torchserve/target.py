"""TorchServe: .mar archives, model-config.yaml, workflows and config.properties (repoforge.torchserve),
served by torchserve with token auth on."""

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
    from repoforge.servers.torchserve import TorchServeServer
    from repoforge.spec.deploy import DeploySpec
    from repoforge.spec.load import LoadedSpec
    from repoforge.targets import Progress
    from repoforge.validate import ValidationReport


class TorchServeTarget:
    name: TargetName = "torchserve"
    server_name = "TorchServe"
    default_ports = (8080, 7070, 8082)  # inference (management is the next port), gRPC inference, metrics

    def recognises(self, path: Path) -> bool:
        from repoforge.torchserve.builder import looks_like_torchserve_output

        return looks_like_torchserve_output(path)

    def build(
        self, loaded: LoadedSpec, output: Path, *, device: Device | None, force: bool, progress: Progress
    ) -> BuildResult:
        from repoforge.torchserve.builder import build_torchserve

        return build_torchserve(loaded, output, force=force, progress=progress, device=device)

    def validate(self, output: Path, *, progress: Progress, **options: Any) -> ValidationReport:
        from repoforge.torchserve.validate import validate_torchserve

        return validate_torchserve(output, progress)

    def serve_ports(
        self, *, http_port: int | None, grpc_port: int | None, metrics_port: int | None, auto: bool
    ) -> list[ServePort]:
        from repoforge.serve import ServePort, pick_port

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
        from repoforge.serve import make_torchserve

        return make_torchserve(output, host=host, ports=[p.port for p in ports])

    def endpoints(self, server: TorchServeServer) -> Endpoints:
        from repoforge.serve import torchserve_endpoints

        return torchserve_endpoints(server)

    def perf_endpoint(self, output: Path, models: list[str], say: Progress) -> AbstractContextManager[PerfEndpoints]:
        from repoforge.perf.command import serve_torchserve_for_perf

        return serve_torchserve_for_perf(output, models, say)

    def batch_endpoint(self, output: Path, model: str, say: Progress) -> AbstractContextManager[BatchEndpoint]:
        """Not yet: TorchServe's inference API is not Triton's, and the engines speak Triton's."""
        from repoforge.batch.model import BatchArgumentError

        raise BatchArgumentError(
            "TARGET",
            f"{output} is a TorchServe build; batch scores through Triton only yet (build with --target triton)",
        )

    def deploy_manifests(self, build: BuildInfo, deploy: DeploySpec) -> dict[str, str]:
        from repoforge.deploy.command import manifests
        from repoforge.deploy.servers import torchserve_shape

        return manifests(build, deploy, torchserve_shape(build, deploy))
