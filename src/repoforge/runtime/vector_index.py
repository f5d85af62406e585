"""A bounded cosine-similarity index for the semantic cache, on usearch's HNSW graph.

Vectors are L2-normalised and stored in an inner-product (``ip``) index, so ``1 - distance`` is the
cosine similarity. Every added vector gets the next key of a counter; key ``k`` lives in slot
``k % max_entries``, so callers keep per-entry data (the cached answers) in plain arrays indexed by
slot. The index holds at most ``max_entries`` vectors: adding more removes the oldest keys first
(usearch reuses their memory), and with a TTL the expired ones (which, the TTL being one number, are
always the oldest) are removed before each search or add. Rows with NaN or infinite values are never
stored.

Below ``exact_below`` live entries (default 1024) the search is usearch's exact brute-force scan
(SIMD; faster than the graph at that size), above it the HNSW graph. HNSW search is approximate: a
missed neighbour only turns a would-be hit into a miss (the target model answers), never into a
wrong answer, because the similarity returned is always that of the entry returned.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from . import lazy

INSTALL_HINT = 'the semantic cache needs usearch: pip install "usearch>=2.26,<3"'


def _index_class() -> Any:
    try:
        Index = lazy.usearch_index().Index
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(INSTALL_HINT) from exc
    return Index


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` (any shape [n, ...]) as float32 unit vectors; an all-zero row stays zero."""
    x = np.asarray(x, dtype=np.float32)
    x = x.reshape(x.shape[0], int(np.prod(x.shape[1:])))
    with np.errstate(invalid="ignore", over="ignore"):  # NaN / inf rows stay non-finite: never stored, never a hit
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.float32(1e-12))


class VectorIndex:
    """At most ``max_entries`` unit vectors of ``dim`` floats; nearest neighbour by cosine similarity.

    ``add`` returns the slot of each stored row (``-1`` where a row was not stored); ``search``
    returns, per query row, the slot of the nearest live entry and its cosine similarity
    (``-1`` / ``-inf`` where the index has nothing live). Thread-safe.
    """

    def __init__(self, dim: int, max_entries: int, ttl_s: float | None = None, *, threads: int = 1,
                 connectivity: int | None = None, expansion_add: int | None = None, expansion_search: int | None = None,
                 exact_below: int = 1024, clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        if dim < 1 or max_entries < 1:
            raise ValueError(f"dim and max_entries must be positive, got {dim} and {max_entries}")
        self.dim, self.max_entries, self.ttl_s = int(dim), int(max_entries), ttl_s
        self.threads, self.clock, self.exact_below = threads, clock, exact_below
        self._index = _index_class()(ndim=self.dim, metric="ip", dtype="f32", connectivity=connectivity,
                                     expansion_add=expansion_add, expansion_search=expansion_search)  # fmt: skip
        self._expires = np.full(self.max_entries, np.inf)  # by slot
        self._oldest = 0  # keys [_oldest, _next) are in the index
        self._next = 0
        self._lock = threading.Lock()

    # -- internals (lock held) --
    def _drop_until(self, key: int) -> None:
        if key > self._oldest:
            self._index.remove(np.arange(self._oldest, key, dtype=np.uint64))
            self._oldest = key

    def _purge_expired(self) -> None:
        if not self.ttl_s or self._oldest == self._next:
            return
        now = self.clock()
        if self._expires[self._oldest % self.max_entries] > now:
            return
        keys = np.arange(self._oldest, self._next, dtype=np.int64)
        expires = self._expires[keys % self.max_entries]  # non-decreasing: one TTL, a monotonic clock
        self._drop_until(self._oldest + int(np.searchsorted(expires, now, side="right")))

    # -- API --
    def add(self, vectors: np.ndarray) -> np.ndarray:
        """Store the rows (normalised here); more rows than ``max_entries``: the last ones are kept."""
        v = normalize(vectors)
        if v.shape[1] != self.dim:
            raise ValueError(f"expected vectors of {self.dim} values, got {v.shape[1]}")
        slots = np.full(len(v), -1, dtype=np.int64)
        rows = np.nonzero(np.isfinite(v).all(axis=1))[0][-self.max_entries :]
        n = len(rows)
        if n == 0:
            return slots
        with self._lock:
            self._purge_expired()
            self._drop_until(self._next + n - self.max_entries)  # room for n: evict the oldest
            keys = np.arange(self._next, self._next + n, dtype=np.uint64)
            self._index.add(keys, np.ascontiguousarray(v[rows]), threads=self.threads)
            pos = (keys % np.uint64(self.max_entries)).astype(np.int64)
            self._expires[pos] = self.clock() + self.ttl_s if self.ttl_s else np.inf
            self._next += n
        slots[rows] = pos
        return slots

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(slot, cosine similarity) of the nearest live entry per query row (normalised here)."""
        q = normalize(queries)
        slots = np.full(len(q), -1, dtype=np.int64)
        sims = np.full(len(q), -np.inf, dtype=np.float64)
        if len(q) == 0:
            return slots, sims
        if q.shape[1] != self.dim:
            raise ValueError(f"expected vectors of {self.dim} values, got {q.shape[1]}")
        with self._lock:
            self._purge_expired()
            if self._oldest == self._next:
                return slots, sims
            exact = self._next - self._oldest < self.exact_below
            m = self._index.search(np.ascontiguousarray(q), 1, threads=self.threads, exact=exact)
            oldest, nxt = self._oldest, self._next
        if hasattr(m, "counts"):  # BatchMatches: [rows, 1] arrays
            counts = np.asarray(m.counts).reshape(len(q))
            keys = np.asarray(m.keys).reshape(len(q), -1)[:, 0].astype(np.int64)
            dist = np.asarray(m.distances, dtype=np.float64).reshape(len(q), -1)[:, 0]
        else:  # one query row: Matches holds only what was found
            counts = np.array([len(m.keys)])
            keys = np.resize(np.asarray(m.keys, dtype=np.int64), 1)
            dist = np.resize(np.asarray(m.distances, dtype=np.float64), 1)
        found = (counts > 0) & (keys >= oldest) & (keys < nxt) & np.isfinite(dist)
        slots[found] = keys[found] % self.max_entries
        sims[found] = 1.0 - dist[found]
        return slots, sims

    def clear(self) -> None:
        with self._lock:
            self._drop_until(self._next)

    def __len__(self) -> int:
        with self._lock:
            self._purge_expired()
            return self._next - self._oldest
