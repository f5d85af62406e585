"""The `features` plugin: online feature lookups and hashing in front of a model.

With `model:` the plugin also runs the model the features feed and answers its outputs: inside this stub when the
model allows it (`.local_model`, as the router and the result cache do), else through BLS. An ensemble of the
plugin and the model answers the same, one Python stub hop later (bench/PLUGINS_RESULTS.md).

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
    log_info,
    run_batched,
)
from ._common import (
    Metrics,
    plugin_config,
)
from .local_model import LocalModel, call


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
        self.cfg = cfg
        self.outputs = [t.name for t in self.args.outputs]
        self.local: LocalModel | None = None
        if cfg.model is not None:
            self.local, why = (LocalModel.find(self.args.repository, cfg.model, cfg.version, self.args)
                               if cfg.in_process else (None, "in_process: false"))  # fmt: skip
            log_info(
                f"{self.args.name}: the features feed {cfg.model} {'in process' if self.local else f'through BLS ({why})'}"
            )

    def _compute(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.drift.observe(feed)
        features = self.pipeline.transform(feed)
        self._export()
        if self.cfg.model is None:
            return {self.pipeline.output_name: features}
        return self._call({self.cfg.model_input or self.pipeline.output_name: features})

    def _call(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One call of the model the features feed: in this stub where allowed (and Triton has it ready), else BLS."""
        assert self.cfg.model is not None
        return call(self.local, self.cfg.model, self.cfg.version, feed, self.outputs)

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
