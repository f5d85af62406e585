"""Custom metrics of a model inside Triton's Python backend stub, through `pb_utils.MetricFamily` (they appear on
Triton's /metrics beside the nv_* ones)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from .triton_model import pb_utils

#: One lock for every metric call of this stub process: the stub sends each call to the server over shared
#: memory, and concurrent calls (the execute thread, a plugin's own threads such as the router's shadow pool,
#: the error counter) crashed Triton 2.51's python backend (std::bad_alloc, boost lock_exception) under load.
_LOCK = threading.Lock()

LATENCY_BUCKETS_US = [50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000]


class Metrics:
    """Custom metrics of one model; every call is a no-op where the stub has no metrics support.

    Calls are serialized by one lock per process (`_LOCK`), shared by every `Metrics` of the process."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._lock = _LOCK
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
