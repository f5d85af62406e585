"""The `semantic_cache` plugin: answers for inputs whose embedding is close to one already answered.

Metrics: `repoforge_semantic_cache_rows_total{model,result=hit|miss}`, `repoforge_semantic_cache_entries{model}`.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..config import SemanticCacheConfig
from ..names import SEMANTIC_CACHE_ENTRIES, SEMANTIC_CACHE_ROWS
from ..triton_model import (
    ModelArgs,
    run_batched,
)
from ..vector_index import VectorIndex, normalize
from ._common import (
    Metrics,
    call_model,
    plugin_config,
)


class SemanticIndex:
    """Cached output rows by slot of a bounded cosine-similarity index (`repoforge.runtime.vector_index`,
    usearch HNSW): at most `max_entries` rows, oldest evicted first, expired after `ttl_s`."""

    def __init__(self, dim: int, max_entries: int, ttl_s: float | None) -> None:
        self.dim, self.size, self.ttl_s = dim, max_entries, ttl_s
        self.index = VectorIndex(dim, max_entries, ttl_s)
        self.values: dict[str, np.ndarray] = {}

    @staticmethod
    def normalize(x: np.ndarray) -> np.ndarray:
        return normalize(x)

    def search(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(best entry, cosine similarity) per row; -1 / -inf where the cache has nothing."""
        return self.index.search(q)

    def add(self, q: np.ndarray, outputs: dict[str, np.ndarray]) -> None:
        if len(q) == 0:
            return
        slots = self.index.add(q)
        stored = slots >= 0
        if not stored.any():
            return
        pos = slots[stored]
        for name, v in outputs.items():
            v = np.asarray(v)
            if name not in self.values:
                self.values[name] = np.zeros((self.size, *v.shape[1:]), dtype=v.dtype)
            self.values[name][pos] = v[stored]

    def __len__(self) -> int:
        return len(self.index)


class SemanticCacheRunner:
    """Rows whose embedding is close enough (cosine >= threshold) to a cached row get that row's answer."""

    def initialize(self, args: dict[str, str]) -> None:
        self.args = ModelArgs.parse(args)
        cfg = plugin_config(self.args)
        if not isinstance(cfg, SemanticCacheConfig):
            raise TypeError(f"{self.args.name}: runner 'semantic_cache' got a {cfg.kind} config")
        self.cfg = cfg
        config = json.loads(args["model_config"])
        emb = next(t for t in config.get("input", []) if t["name"] == cfg.embedding)
        self.index = SemanticIndex(int(emb["dims"][-1]), cfg.max_entries, cfg.ttl_s)
        self.outputs = [t.name for t in self.args.outputs]
        self.metrics = Metrics(self.args.name)

    def _compute(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        q = SemanticIndex.normalize(feed[self.cfg.embedding])
        rows = len(q)
        best, sim = self.index.search(q)
        hit = sim >= self.cfg.threshold
        miss = np.nonzero(~hit)[0]
        got = (
            call_model(self.cfg.model, self.cfg.version, {k: v[miss] for k, v in feed.items()}, self.outputs)
            if len(miss)
            else {}
        )
        out: dict[str, np.ndarray] = {}
        for name in self.outputs:
            parts = got.get(name)
            template = parts if parts is not None else self.index.values[name]
            arr = np.empty((rows, *template.shape[1:]), dtype=template.dtype)
            if hit.any():
                arr[hit] = self.index.values[name][best[hit]]
            if parts is not None:
                arr[miss] = parts
            out[name] = arr
        self.index.add(q[miss], got)
        desc = "Semantic cache rows by outcome"
        self.metrics.inc(SEMANTIC_CACHE_ROWS, desc, int(hit.sum()), result="hit")
        self.metrics.inc(SEMANTIC_CACHE_ROWS, desc, len(miss), result="miss")
        self.metrics.set(SEMANTIC_CACHE_ENTRIES, "Entries in the semantic cache", len(self.index))
        return out

    def execute(self, requests: list[Any]) -> list[Any]:
        return run_batched(requests, self.args, self._compute)
