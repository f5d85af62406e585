"""Online features from Redis: entity id → the feature values stored for it.

Storage format: key `prefix + id` (id as UTF-8 text; integers as decimal text), value = the fields'
values as float32 little-endian, in the order of `lookup.fields` (4 bytes × fields). Writers set a
TTL (`lookup.ttl_s`). A batch is one MGET (of its distinct keys). Misses, malformed values and any
Redis failure (timeout after `timeout_ms`, refused connection) give the fields' declared defaults:
the request always answers. After a failure Redis is left alone for `retry_after_s`, so an outage
costs one timeout, not one per request.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import lazy
from .config import Lookup, RedisConnection, as_data
from .hashing import as_bytes

__all__ = ["FeatureStore", "LookupStats", "OnlineLookup", "encode_values", "redis_client"]


def redis_client(conn: Any) -> Any:
    """A redis-py client with the connection's timeouts and no retries (a timeout must cost one timeout).

    `conn`: a `config.RedisConnection` (or anything `config.as_data` reads); the URL is its `resolved_url()`
    (`url_env`'s variable, else REPOFORGE_REDIS_URL, else `url`)."""
    redis = lazy.redis()

    if not isinstance(conn, RedisConnection):
        conn = RedisConnection.parse(as_data(conn), getattr(conn, "prefix", ""))
    url = conn.resolved_url()
    timeout = conn.timeout_ms / 1000.0
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
        retry_on_timeout=False,
        health_check_interval=0,
    )


def encode_values(values: np.ndarray) -> list[bytes]:
    """rows × fields → one float32-LE blob per row."""
    arr = np.ascontiguousarray(np.asarray(values, dtype="<f4"))
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    width = arr.shape[1] * 4
    raw = arr.tobytes()
    return [raw[i : i + width] for i in range(0, len(raw), width)]


@dataclass
class LookupStats:
    """Counters since start: rows found/missing, batches served with defaults because Redis failed or was skipped."""

    hits: int = 0
    misses: int = 0
    errors: int = 0
    skipped: int = 0
    last_error: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class OnlineLookup:
    """`fetch(ids) -> (values rows × fields float32, found rows bool)`, never raising for Redis trouble."""

    def __init__(self, cfg: Any, client: Any = None) -> None:
        cfg = Lookup.coerce(cfg)
        self.cfg = cfg
        self._client = client
        self.defaults = np.array([f.default for f in cfg.fields], dtype=np.float32)
        self.n_fields = len(cfg.fields)
        self.prefix = cfg.prefix.encode("utf-8")
        self.stats = LookupStats()
        self._down_until = 0.0

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = redis_client(self.cfg)
        return self._client

    def keys(self, ids: np.ndarray) -> np.ndarray:
        """Redis keys (bytes) for entity ids, as one numpy bytes array."""
        return np.char.add(np.array(self.prefix, dtype="S"), as_bytes(ids)) if self.prefix else as_bytes(ids)

    def fetch(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys = self.keys(ids)
        rows = len(keys)
        values = np.tile(self.defaults, (rows, 1))
        found = np.zeros(rows, dtype=bool)
        if rows == 0:
            return values, found
        if time.monotonic() < self._down_until:
            with self.stats._lock:
                self.stats.skipped += 1
                self.stats.misses += rows
            return values, found
        unique, inverse = np.unique(keys, return_inverse=True)
        try:
            raw = self.client.mget(unique.tolist())
        except Exception as exc:  # noqa: BLE001 - any client/connection failure means defaults
            self._down_until = time.monotonic() + self.cfg.retry_after_s
            with self.stats._lock:
                self.stats.errors += 1
                self.stats.misses += rows
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
            return values, found
        size = 4 * self.n_fields
        ok = np.fromiter((v is not None and len(v) == size for v in raw), dtype=bool, count=len(raw))
        if ok.any():
            blob = b"".join(v for v, good in zip(raw, ok, strict=True) if good)
            got = np.frombuffer(blob, dtype="<f4").reshape(-1, self.n_fields)
            table = np.tile(self.defaults, (len(unique), 1))
            table[ok] = got
            values = table[inverse]
            found = ok[inverse]
        with self.stats._lock:
            n_found = int(found.sum())
            self.stats.hits += n_found
            self.stats.misses += rows - n_found
        return values, found


class FeatureStore:
    """The writing side: `write(ids, values)` stores rows × fields with the lookup's TTL (one pipeline)."""

    def __init__(self, cfg: Any, client: Any = None) -> None:
        cfg = Lookup.coerce(cfg)
        self.cfg = cfg
        self.client = client if client is not None else redis_client(cfg)
        self._lookup = OnlineLookup(cfg, self.client)

    def write(self, ids: np.ndarray | list[Any], values: np.ndarray, ttl_s: int | None = None) -> int:
        values = np.asarray(values, dtype=np.float32).reshape(len(ids), -1)
        if values.shape[1] != len(self.cfg.fields):
            raise ValueError(f"values have {values.shape[1]} columns; the lookup has {len(self.cfg.fields)} fields")
        ttl = ttl_s if ttl_s is not None else self.cfg.ttl_s
        keys = self._lookup.keys(np.asarray(ids))
        pipe = self.client.pipeline(transaction=False)
        for k, blob in zip(keys.tolist(), encode_values(values), strict=True):
            pipe.set(k, blob, ex=ttl)
        pipe.execute()
        return len(keys)

    def read(self, ids: np.ndarray | list[Any]) -> tuple[np.ndarray, np.ndarray]:
        return self._lookup.fetch(np.asarray(ids))
