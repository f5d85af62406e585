"""What `deploy k8s` reads from a build folder: its lock file (target, device, versions, the recorded `deploy:`
section) and, for Triton, the configs (response cache, plugins), so the manifests follow the
build and not a spec that may have changed since."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repoforge.contract import PLUGIN_PARAMETER
from repoforge.deploy.promql import Features
from repoforge.errors import BuildError
from repoforge.output import MANIFEST


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


def read_build(path: Path) -> BuildInfo:
    """The build at `path`; BuildError (exit 2) when it is not one repoforge wrote, or predates `deploy:`."""
    lock = path / MANIFEST
    if not lock.is_file():
        what = "does not exist" if not path.exists() else f"has no {MANIFEST}"
        raise BuildError(
            f"{path} {what}: deploy k8s reads a folder written by `repoforge build` (build the spec there first)"
        )
    header = json.loads(lock.read_text())
    if "deploy" not in header:
        raise BuildError(f"{path} was built by a repoforge without the `deploy:` section; rebuild it")
    target = str(header.get("target", "triton"))
    info = BuildInfo(
        path=path.resolve(),
        target=target,
        device=str(header.get("device", "cpu")),
        repository=str(header.get("repository", path.name)),
        models=list(header.get("models", [])),
        deploy=header["deploy"],
        versions={k: v for k, v in header.items() if k not in ("files", "deploy", "rollout", "gateway")},
        rollout=header.get("rollout"),
        serving=header.get("serving"),
        gateway=header.get("gateway"),
    )
    if target == "triton":
        _triton_features(info)
    else:
        info.features = Features(gpu=info.device == "gpu")
        info.running = list(info.models)
        info.cpu_only = list(info.models) if info.device != "gpu" else []
    return info


def _triton_features(info: BuildInfo) -> None:
    from tritonclient.grpc import model_config_pb2 as mc

    from repoforge.contract import RUNNER_PARAMETER
    from repoforge.triton.image import models_needing_repoforge
    from repoforge.triton.reader import rate_limit_flags, read_repository

    models = read_repository(info.path)
    info.rate_limit = rate_limit_flags(info.path, models)
    plugins, drift = set(), set()
    for m in models:
        if m.config.platform != "ensemble":
            info.running.append(m.name)
            groups = m.config.instance_group
            if (groups and all(g.kind == mc.ModelInstanceGroup.KIND_CPU for g in groups)) or (
                not groups and info.device != "gpu"
            ):
                info.cpu_only.append(m.name)
        if PLUGIN_PARAMETER in m.config.parameters:
            config = json.loads(m.config.parameters[PLUGIN_PARAMETER].string_value)
            kind = config.get("kind")
            if kind:
                plugins.add(str(kind))
            if config.get("drift"):
                drift.add(m.name)
            if kind == "router":
                info.routers[m.name] = config
            url = _redis_url(config)
            if url is not None:
                info.redis_urls[m.name] = url
    info.features = Features(
        gpu=info.device == "gpu",
        response_cache=any(m.config.response_cache.enable for m in models),
        plugins=frozenset(plugins),
        drift=frozenset(drift),
    )
    info.needs_repoforge = models_needing_repoforge(models)
    info.torchscript_runner = any(
        m.config.parameters[RUNNER_PARAMETER].string_value == "torchscript"
        for m in models
        if RUNNER_PARAMETER in m.config.parameters
    )


def _redis_url(config: Any) -> str | None:
    """The first redis:// URL in a plugin's configuration (a features lookup, a Redis-backed cache), if any."""
    if isinstance(config, str):
        return config if config.startswith(("redis://", "rediss://")) else None
    values = config.values() if isinstance(config, dict) else config if isinstance(config, list) else []
    for v in values:
        found = _redis_url(v)
        if found is not None:
            return found
    return None
