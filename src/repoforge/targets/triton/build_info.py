"""What a Triton build adds to its lock file for `deploy` and `image`: what its configs say (the models that run and
where, the response cache, the plugins) and the stock NGC image of the Triton it was built for."""

from __future__ import annotations

import json

from tritonclient.grpc import model_config_pb2 as mc

from repoforge.contract import PLUGIN_PARAMETER, RUNNER_PARAMETER
from repoforge.deploy.build_info import BuildInfo, StockImage, redis_url
from repoforge.deploy.image_plan import ngc_image
from repoforge.deploy.promql import Features
from repoforge.triton.image import models_needing_repoforge
from repoforge.triton.reader import rate_limit_flags, read_repository


def describe_build(info: BuildInfo) -> BuildInfo:
    """`info` with what the repository's configs say, and its stock image."""
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
            url = redis_url(config)
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
    info.image = StockImage(
        base=ngc_image(str(info.versions.get("triton_target") or "2.51.0")),
        server="tritonserver",
        python="python3",
        runs="Triton's python backend stub",
    )
    return info
