"""What `deploy k8s` and `image` read from a build folder: its lock file (target, device, versions, the recorded
`deploy:` section) here, then what its target adds (`Target.describe_build`: for Triton the configs' response
cache and plugins; the stock server image), so the manifests follow the build and not a spec that may have
changed since. `repoforge.targets.read_build` does both."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repoforge.deploy.promql import Features
from repoforge.errors import BuildError
from repoforge.output import MANIFEST


@dataclass(frozen=True)
class StockImage:
    """The stock server image a build runs on, as its target names it; `repoforge image` adds packages to it."""

    base: str  # the image reference (`FROM`)
    server: str  # the server's name in the image's tag ("tritonserver")
    python: str  # the Python that runs the models, which pip installs into
    runs: str  # what runs that Python, for the Dockerfile's comment ("Triton's python backend stub")


@dataclass
class BuildInfo:
    path: Path
    target: str
    device: str
    repository: str
    models: list[str]
    deploy: dict[str, Any]
    versions: dict[str, Any] = field(default_factory=dict)  # the lock file's header (triton_target, torchserve, ...)
    features: Features = field(default_factory=Features)
    needs_repoforge: list[str] = field(default_factory=list)  # Triton models whose model.py imports repoforge
    torchscript_runner: bool = False
    rollout: dict[str, Any] | None = None  # the recorded `rollout:` section (as written), if any
    routers: dict[str, dict[str, Any]] = field(default_factory=dict)  # router plugin model → its plugin config
    redis_urls: dict[str, str] = field(default_factory=dict)  # plugin model → the Redis URL its spec names
    running: list[str] = field(default_factory=list)  # the models that run (ensembles left out)
    cpu_only: list[str] = field(default_factory=list)  # those of them whose every instance is KIND_CPU
    serving: dict[str, Any] | None = None  # the recorded `serving:` (the gateway sidecar multiplexes the models)
    rate_limit: list[str] = field(default_factory=list)  # tritonserver's --rate-limit flags for the build's configs
    gateway: dict[str, Any] | None = None  # the recorded top-level `gateway:`/`async:` (deploy.gateway's defaults)
    image: StockImage | None = None  # set by the target (`describe_build`)

    def stock_image(self) -> StockImage:
        if self.image is None:
            raise BuildError(f"{self.path}: its target has not described the build (repoforge.targets.read_build)")
        return self.image


def read_lock(path: Path) -> BuildInfo:
    """The build at `path` as its lock file says, before its target adds to it (`repoforge.targets.read_build`);
    BuildError (exit 2) when it is not one repoforge wrote, or predates `deploy:`."""
    lock = path / MANIFEST
    if not lock.is_file():
        what = "does not exist" if not path.exists() else f"has no {MANIFEST}"
        raise BuildError(
            f"{path} {what}: deploy k8s reads a folder written by `repoforge build` (build the spec there first)"
        )
    header = json.loads(lock.read_text())
    if "deploy" not in header:
        raise BuildError(f"{path} was built by a repoforge without the `deploy:` section; rebuild it")
    return BuildInfo(
        path=path.resolve(),
        target=str(header.get("target", "triton")),
        device=str(header.get("device", "cpu")),
        repository=str(header.get("repository", path.name)),
        models=list(header.get("models", [])),
        deploy=header["deploy"],
        versions={k: v for k, v in header.items() if k not in ("files", "deploy", "rollout", "gateway")},
        rollout=header.get("rollout"),
        serving=header.get("serving"),
        gateway=header.get("gateway"),
    )


def every_model_runs(info: BuildInfo) -> None:
    """A build whose every model runs as listed (no ensembles among them to leave out, no per-model device):
    the features are the device's, and on a CPU build every model is CPU-only."""
    info.features = Features(gpu=info.device == "gpu")
    info.running = list(info.models)
    info.cpu_only = list(info.models) if info.device != "gpu" else []


def redis_url(config: Any) -> str | None:
    """The first redis:// URL in a plugin's configuration (a features lookup, a Redis-backed cache), if any."""
    if isinstance(config, str):
        return config if config.startswith(("redis://", "rediss://")) else None
    values = config.values() if isinstance(config, dict) else config if isinstance(config, list) else []
    for v in values:
        found = redis_url(v)
        if found is not None:
            return found
    return None
