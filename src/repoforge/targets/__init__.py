"""The target seam: everything a command needs to know about Triton or TorchServe, behind one protocol.

`build`, `serve`, `validate` and `perf` ask `get_target(name)` (from `--target`) or `target_of(path)` (a built
folder) once, then call the target; none of them asks "is this a TorchServe build?" itself. A new target is one
module here that implements `Target`, added to `TARGETS`. `batch` asks `batch_endpoint` for a server to score
through; `deploy k8s` asks the build's target for its manifests (`deploy_manifests`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from repoforge.plan import Device
from repoforge.plan import Target as TargetName

if TYPE_CHECKING:
    from repoforge.batch.command import BatchEndpoint
    from repoforge.deploy.build_info import BuildInfo
    from repoforge.output import BuildResult
    from repoforge.perf.command import PerfEndpoints
    from repoforge.serve import Endpoints, ServePort
    from repoforge.spec.deploy import DeploySpec
    from repoforge.spec.load import LoadedSpec
    from repoforge.validate import ValidationReport

Progress = Callable[[str], None]


class Target(Protocol):
    """One serving system repoforge builds for."""

    name: TargetName
    server_name: str  # what messages call its server ("tritonserver", "TorchServe")
    default_ports: tuple[int, int, int]  # HTTP (inference), gRPC, metrics

    def recognises(self, path: Path) -> bool:
        """Whether `path` is a build output of this target."""
        ...

    def build(
        self, loaded: LoadedSpec, output: Path, *, device: Device | None, force: bool, progress: Progress
    ) -> BuildResult:
        """Check the whole spec for this target, then write `output` atomically."""
        ...

    def validate(self, output: Path, *, progress: Progress, **options: Any) -> ValidationReport:
        """Start the real server on `output`, check every model answers, stop it."""
        ...

    def serve_ports(
        self, *, http_port: int | None, grpc_port: int | None, metrics_port: int | None, auto: bool
    ) -> list[ServePort]:
        """Every port `serve` will bind, each with the flag that moves it."""
        ...

    def server(self, output: Path, *, host: str, ports: list[ServePort], **options: Any) -> Any:
        """The (not yet started) server process for `output` on `ports`."""
        ...

    def endpoints(self, server: Any) -> Endpoints:
        """What a user needs to reach the running `server` (with a health check that works as printed)."""
        ...

    def perf_endpoint(self, output: Path, models: list[str], say: Progress) -> AbstractContextManager[PerfEndpoints]:
        """`output` served for a perf_analyzer run, while the context is open."""
        ...

    def batch_endpoint(self, output: Path, model: str, say: Progress) -> AbstractContextManager[BatchEndpoint]:
        """`output` served for a `batch` run (Triton-protocol inference for `model`), while the context is open;
        BatchArgumentError (a usage error, before anything starts) where the target cannot do it yet."""
        ...

    def deploy_manifests(self, build: BuildInfo, deploy: DeploySpec) -> dict[str, str]:
        """Kubernetes manifests, rules, dashboard and README for the build (file name → text), `deploy` resolved."""
        ...


def _registry() -> dict[str, Target]:
    from repoforge.targets.torchserve import TorchServeTarget
    from repoforge.targets.triton import TritonTarget

    return {"triton": TritonTarget(), "torchserve": TorchServeTarget()}


TARGETS: dict[str, Target] = _registry()
TARGET_NAMES: tuple[str, ...] = tuple(TARGETS)


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; expected one of {', '.join(TARGETS)}") from None


def target_of(path: str | Path) -> Target:
    """The target whose build `path` is: TorchServe's when it recognises the folder, else Triton (a plain
    model repository, also one repoforge did not write)."""
    p = Path(path)
    for target in TARGETS.values():
        if target.name != "triton" and target.recognises(p):
            return target
    return TARGETS["triton"]


__all__ = ["TARGETS", "TARGET_NAMES", "Target", "TargetName", "get_target", "target_of"]
