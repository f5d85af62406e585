"""What every plugin runner shares: custom metrics (`..metrics`), its config from the `repoforge_plugin`
parameter, and BLS calls to other models."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import PluginConfig, parse_plugin_config
from ..metrics import LATENCY_BUCKETS_US as LATENCY_BUCKETS_US
from ..metrics import Metrics as Metrics
from ..names import PLUGIN_PARAMETER
from ..triton_model import (
    ModelArgs,
    _to_triton,
    pb_utils,
)


def plugin_config(args: ModelArgs) -> PluginConfig:
    """The plugin's config from the `repoforge_plugin` parameter (plain JSON the build wrote)."""
    raw = args.parameters.get(PLUGIN_PARAMETER)
    if not raw:
        raise ValueError(
            f"{args.name}: config parameter {PLUGIN_PARAMETER} is missing (build the repository with repoforge)"
        )
    return parse_plugin_config(raw)


def call_model(
    model: str, version: int, inputs: dict[str, np.ndarray], outputs: list[str], timeout_us: int | None = None
) -> dict[str, np.ndarray]:
    """One BLS request; raises RuntimeError with the target's error message."""
    pb = pb_utils()
    kwargs: dict[str, Any] = {}
    if timeout_us:
        kwargs["timeout"] = int(timeout_us)
    req = pb.InferenceRequest(
        model_name=model,
        model_version=int(version),
        requested_output_names=list(outputs),
        inputs=[pb.Tensor(k, _to_triton(v)) for k, v in inputs.items()],
        **kwargs,
    )
    resp = req.exec()
    if resp.has_error():
        raise RuntimeError(f"{model}: {resp.error().message()}")
    out = {}
    for name in outputs:
        t = pb.get_output_tensor_by_name(resp, name)
        if t is None:
            raise RuntimeError(f"{model} returned no output '{name}'")
        out[name] = t.as_numpy()
    return out
