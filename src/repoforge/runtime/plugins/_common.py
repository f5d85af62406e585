"""What every plugin runner shares: custom metrics through `pb_utils.MetricFamily`, its config from the
`repoforge_plugin` parameter, and BLS calls to other models."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from repoforge.contract import PLUGIN_PARAMETER
from repoforge.runtime.triton_model import (
    ModelArgs,
    _to_triton,
    pb_utils,
)
from repoforge.spec.plugins import (
    parse_plugin,
)

LATENCY_BUCKETS_US = [50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000]


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------
class Metrics:
    """Custom metrics of one model; every call is a no-op where the stub has no metrics support.

    Calls are serialized: the stub sends each one to the server over shared memory, and concurrent calls from
    the execute thread and a plugin's own threads (the router's shadow pool) crashed Triton 2.51's python backend
    (std::bad_alloc, boost lock_exception) under load."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._lock = threading.Lock()
        self._families: dict[str, Any] = {}
        self._metrics: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}

    def _metric(
        self, name: str, kind: str, description: str, labels: dict[str, str], buckets: Sequence[float] | None = None
    ) -> Any:
        key = (name, tuple(sorted(labels.items())))
        if key in self._metrics:
            return self._metrics[key]
        metric = None
        try:
            pb = pb_utils()
            fam = self._families.get(name)
            if fam is None:
                fam = pb.MetricFamily(name=name, description=description, kind=getattr(pb.MetricFamily, kind))
                self._families[name] = fam
            full = {"model": self.model, **labels}
            metric = fam.Metric(labels=full, buckets=buckets) if buckets is not None else fam.Metric(labels=full)
        except Exception:  # noqa: BLE001 - metrics must never fail a request
            metric = None
        self._metrics[key] = metric
        return metric

    def inc(self, name: str, description: str, value: float = 1.0, **labels: str) -> None:
        with self._lock:
            m = self._metric(name, "COUNTER", description, labels)
            if m is not None and value:
                m.increment(float(value))

    def set(self, name: str, description: str, value: float, **labels: str) -> None:
        with self._lock:
            m = self._metric(name, "GAUGE", description, labels)
            if m is not None:
                m.set(float(value))

    def observe(self, name: str, description: str, value: float, **labels: str) -> None:
        with self._lock:
            m = self._metric(name, "HISTOGRAM", description, labels, LATENCY_BUCKETS_US)
            if m is not None:
                m.observe(float(value))


def plugin_config(args: ModelArgs) -> Any:
    raw = args.parameters.get(PLUGIN_PARAMETER)
    if not raw:
        raise ValueError(
            f"{args.name}: config parameter {PLUGIN_PARAMETER} is missing (build the repository with repoforge)"
        )
    return parse_plugin(raw)


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
