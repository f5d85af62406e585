"""The `features` plugin: online feature lookups and hashing in front of a model.

Metrics: `repoforge_feature_lookup_total{model,result=hit|miss|error|skipped}`, and with `drift:`
`repoforge_drift_psi{model,feature}` of the raw input columns (`..drift`).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from ..config import FeaturesConfig
from ..drift import DriftMonitor
from ..names import FEATURE_LOOKUPS
from ..pipeline import FeaturePipeline
from ..triton_model import (
    ModelArgs,
    run_batched,
)
from ._common import (
    Metrics,
    plugin_config,
)


class FeaturesRunner:
    """Raw columns → FEATURES (FP32 rows × dim) with one pipeline call (and one Redis MGET) per batch."""

    def initialize(self, args: dict[str, str]) -> None:
        self.args = ModelArgs.parse(args)
        cfg = plugin_config(self.args)
        if not isinstance(cfg, FeaturesConfig):
            raise TypeError(f"{self.args.name}: runner 'features' got a {cfg.kind} config")
        self.pipeline = FeaturePipeline(cfg)
        self.metrics = Metrics(self.args.name)
        self.drift = DriftMonitor.from_args(self.args, cfg.drift, self.metrics)
        self._seen = (0, 0, 0, 0)
        self._lock = threading.Lock()

    def _compute(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.drift.observe(feed)
        out = {self.pipeline.output_name: self.pipeline.transform(feed)}
        self._export()
        return out

    def _export(self) -> None:
        lk = self.pipeline.lookup
        if lk is None:
            return
        s = lk.stats
        now = (s.hits, s.misses, s.errors, s.skipped)
        with self._lock:
            delta = [a - b for a, b in zip(now, self._seen, strict=True)]
            self._seen = now
        for result, d in zip(("hit", "miss", "error", "skipped"), delta, strict=True):
            if d:
                self.metrics.inc(
                    FEATURE_LOOKUPS,
                    "Online feature lookups: rows found/missing, batches answered with defaults (error, skipped)",
                    d,
                    result=result,
                )

    def execute(self, requests: list[Any]) -> list[Any]:
        return run_batched(requests, self.args, self._compute)

    def finalize(self) -> None:
        self.drift.close()
        lk = self.pipeline.lookup if self.pipeline.config.lookup is not None else None
        if lk is not None and lk._client is not None:
            try:
                lk._client.close()
            except Exception:  # noqa: BLE001
                pass
