"""What the commands and the targets exchange: the `Target` protocol and the data types it speaks in.

Why a leaf: the commands import these types and the targets fill them in; neither may import the other's
modules for them (that was the cycle between `targets/` and the command modules). Only the standard library,
`contract` and `errors` are imported here.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from repoforge.contract import Device
from repoforge.contract import Target as TargetName
from repoforge.errors import RepoforgeError

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2 as mc

    from repoforge.deploy.build_info import BuildInfo
    from repoforge.deploy.k8s import KServeRuntime, ServerShape
    from repoforge.output import BuildResult
    from repoforge.plan_base import BuildRules
    from repoforge.spec.deploy import DeploySpec
    from repoforge.spec.load import LoadedSpec

Progress = Callable[[str], None]

#: Seconds each model gets to answer its `validate` smoke request (a streaming model: all its responses together).
SMOKE_TIMEOUT_S = 60.0

#: What a command may ask a target to do that not every target can (`Target.cannot`).
Capability = Literal["batch", "rollout", "print_command", "gateway"]


class TargetArgumentError(RepoforgeError):
    """A target refuses an argument before anything starts; `param` names it. The command that asked re-raises it
    as its own usage error (exit 2)."""

    exit_code = 2

    def __init__(self, param: str, message: str) -> None:
        self.param = param
        super().__init__(message)


# -- serve ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServePort:
    """One port a server will listen on, and the option that moves it (what a conflict message must name)."""

    role: str
    flag: str
    port: int | None  # None: a free one is picked at start


def pick_port(given: int | None, default: int, auto: bool) -> int | None:
    """A port given is kept (0 means "any free one": None); else the default, or a free one with `auto`."""
    if given is not None:
        return given or None
    return None if auto else default


@dataclass
class Endpoints:
    """What `serve` tells the user once the server is ready: where each API is, and a command that checks it."""

    server: str
    rows: list[tuple[str, str]]
    models: list[str]
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        rows = [*self.rows, ("models", ", ".join(self.models))]
        return [f"{label:<10} {value}" for label, value in rows] + self.notes


# -- validate ------------------------------------------------------------------------------------------------------
@dataclass
class ModelCheck:
    name: str
    version: str
    state: str
    ok: bool
    message: str = ""
    max_abs_err: float | None = None
    latency_ms: float | None = None
    reference: str | None = None  # what the answer was compared with: "onnxruntime", "onnxruntime+onnx.reference"


@dataclass
class ValidationReport:
    repository: str
    server: str
    checks: list[ModelCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "server": self.server,
            "ok": self.ok,
            "models": [asdict(c) for c in self.checks],
        }

    def failures(self) -> list[ModelCheck]:
        return [c for c in self.checks if not c.ok]


# -- perf, batch, rollout ------------------------------------------------------------------------------------------
@dataclass
class PerfEndpoints:
    http: str
    grpc: str
    configs: dict[str, mc.ModelConfig | None]
    service_kind: TargetName = "triton"  # perf_analyzer's --service-kind
    input_data: dict[str, Path] | None = None  # torchserve: perf_analyzer's data file per model
    #: torchserve: the request body per model (kept beside the report), its metrics URL, and its batching
    requests: dict[str, str] | None = None
    metrics_url: str | None = None
    batching: dict[str, dict[str, Any] | None] | None = None
    #: set where perf_analyzer measures this server over HTTP only: why (the error for `--protocol both`)
    http_only: str | None = None
    #: perf_analyzer's input-data file that posts a request body kept at the given path (with `requests`)
    request_data: Callable[[Path], str] | None = None


@dataclass(frozen=True)
class BatchEndpoint:
    """Where a batch run sends its requests, while the target's context is open."""

    protocol: Literal["grpc", "http"]
    url: str  # host:port, as tritonclient expects it


@dataclass(frozen=True)
class ControlEndpoint:
    """A running server's HTTP API (host:port) and metrics endpoint (host:port), for `rollout`."""

    http_url: str
    metrics_url: str


class Target(Protocol):
    """One serving system repoforge builds for."""

    name: TargetName
    server_name: str  # what messages call its server ("tritonserver", "TorchServe")
    default_ports: tuple[int, int, int]  # HTTP (inference), gRPC, metrics
    rules: BuildRules  # what its build checks and says, and what its server can run in a deployment

    def recognises(self, path: Path) -> bool:
        """Whether `path` is a build output of this target."""
        ...

    def cannot(self, what: Capability, path: Path) -> str | None:
        """Why this target cannot do `what` for the build at `path` (the usage error's message), or None."""
        ...

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
        """Check the whole spec for this target, then write `output` atomically. `pack_env`: ship each model's declared
        packages in the build, in the server's own per-model mechanism (a target without one refuses it)."""
        ...

    def validate(self, output: Path, *, progress: Progress, **options: Any) -> ValidationReport:
        """Start the real server on `output`, check every model answers, stop it."""
        ...

    def validate_running(self, output: Path, *, url: str, progress: Progress, **options: Any) -> ValidationReport:
        """Check every model of `output` answers on the server already running at `url`."""
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

    def docker_recipe(
        self,
        output: Path,
        *,
        http_port: int | None,
        grpc_port: int | None,
        metrics_port: int | None,
        cache_size_bytes: int | None,
    ) -> str:
        """Shell lines that serve `output` in Docker on a GPU host (`serve --print-command`)."""
        ...

    def serves_at(self, http_url: str) -> bool:
        """Whether this target's server answers at `http_url` (host:port of its HTTP inference API)."""
        ...

    def running_perf_endpoint(
        self, http_url: str, models: list[str], *, grpc_url: str | None, need_grpc: bool
    ) -> PerfEndpoints:
        """perf_analyzer's endpoints on the server already running at `http_url`; TargetArgumentError (a usage
        error, before anything is measured) where it cannot be measured so."""
        ...

    def perf_endpoint(self, output: Path, models: list[str], say: Progress) -> AbstractContextManager[PerfEndpoints]:
        """`output` served for a perf_analyzer run, while the context is open."""
        ...

    def batch_endpoint(self, output: Path, model: str, say: Progress) -> AbstractContextManager[BatchEndpoint]:
        """`output` served for a `batch` run (Triton-protocol inference for `model`), while the context is open;
        TargetArgumentError (a usage error, before anything starts) where it cannot."""
        ...

    def rollout_endpoint(self, output: Path, say: Progress) -> AbstractContextManager[ControlEndpoint]:
        """`output` served with every model loaded and load/unload allowed, for `rollout`, while the context is open."""
        ...

    def describe_build(self, info: BuildInfo) -> BuildInfo:
        """`info` (read from the build's lock file) with what this target knows of the build: the models that run
        and where, the features its configs turn on, its stock server image."""
        ...

    def deploy_shape(self, build: BuildInfo, deploy: DeploySpec) -> ServerShape:
        """The server's part of the Kubernetes manifests for the build, `deploy` resolved."""
        ...

    def kserve_runtime(self, build: BuildInfo, deploy: DeploySpec, name: str, image: str) -> KServeRuntime:
        """The server's part of the KServe ServingRuntime for the build (named `name`, running `image`)."""
        ...
