"""The `result_cache` plugin: exact-match cache of a model's answers, in process or on Redis.

Metrics: `repoforge_cache_requests_total{model,result=hit|miss}`, `repoforge_cache_latency_us{model,result}`
(histogram), `repoforge_cache_entries{model}`.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
import time
from collections import OrderedDict
from typing import Any

import numpy as np

from ..batch import run_merged, split_rows
from ..config import ResultCacheConfig, cache_redis
from ..names import CACHE_ENTRIES, CACHE_LATENCY, CACHE_REQUESTS
from ..online import redis_client
from ..triton_model import (
    ModelArgs,
    error_response,
    log_info,
    request_feeds,
    respond,
)
from ._common import (
    Metrics,
    plugin_config,
)
from .local_model import LocalModel, call


def _bytes_of(a: np.ndarray) -> bytes:
    if a.dtype == np.object_:
        parts = [x if isinstance(x, bytes) else str(x).encode("utf-8") for x in a.reshape(-1).tolist()]
        return b"".join(struct.pack("<I", len(p)) + p for p in parts)
    return np.ascontiguousarray(a).tobytes()


def cache_key(model: str, version: int, feed: dict[str, np.ndarray]) -> bytes:
    """Digest of the target and every input tensor (name, dtype, shape, bytes)."""
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{model}\0{version}\0".encode())
    for name in sorted(feed):
        a = feed[name]
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(_bytes_of(a))
    return h.digest()


def pack_arrays(arrays: dict[str, np.ndarray]) -> bytes:
    """Self-describing bytes for a dict of arrays (no pickle: safe to read back from a shared Redis)."""
    header = []
    blobs = []
    for name, a in arrays.items():
        data = _bytes_of(a)
        header.append(
            {
                "name": name,
                "dtype": "object" if a.dtype == np.object_ else a.dtype.str,
                "shape": list(a.shape),
                "n": len(data),
            }
        )
        blobs.append(data)
    head = json.dumps(header).encode()
    return b"RFC1" + struct.pack("<I", len(head)) + head + b"".join(blobs)


def unpack_arrays(data: bytes) -> dict[str, np.ndarray]:
    if data[:4] != b"RFC1":
        raise ValueError("not a repoforge cache entry")
    (n,) = struct.unpack("<I", data[4:8])
    header = json.loads(data[8 : 8 + n])
    at = 8 + n
    out = {}
    for h in header:
        blob = data[at : at + h["n"]]
        at += h["n"]
        if h["dtype"] == "object":
            items, pos = [], 0
            while pos < len(blob):
                (ln,) = struct.unpack("<I", blob[pos : pos + 4])
                items.append(blob[pos + 4 : pos + 4 + ln])
                pos += 4 + ln
            arr = np.empty(len(items), dtype=np.object_)
            arr[:] = items
            out[h["name"]] = arr.reshape(h["shape"])
        else:
            out[h["name"]] = np.frombuffer(blob, dtype=np.dtype(h["dtype"])).reshape(h["shape"]).copy()
    return out


class MemoryCache:
    """In-process LRU with TTL, bounded by `max_entries` (per model instance)."""

    def __init__(self, max_entries: int, ttl_s: float | None) -> None:
        self.max_entries, self.ttl_s = max_entries, ttl_s
        self._data: OrderedDict[bytes, tuple[float, dict[str, np.ndarray]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes) -> dict[str, np.ndarray] | None:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            expires, value = item
            if expires and time.monotonic() > expires:
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return value

    def put(self, key: bytes, value: dict[str, np.ndarray]) -> None:
        frozen = {}
        for k, v in value.items():
            c = np.array(v, copy=True)
            c.flags.writeable = False
            frozen[k] = c
        with self._lock:
            self._data[key] = (time.monotonic() + self.ttl_s if self.ttl_s else 0.0, frozen)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


#: How long a near-cache entry lives at most. Entries are immutable (the key hashes model, version
#: and inputs), so this only bounds how long a key deleted from Redis can still be answered here.
NEAR_CACHE_TTL_S = 5.0


class RedisCache:
    """Shared cache in Redis (TTL by Redis); any Redis trouble is a miss, never a failed request.

    With `near_entries` > 0, a small in-process LRU sits in front of Redis: a hot key is answered
    without the Redis round trip (about 250 µs on a busy 2-core host, bench/PLUGINS_RESULTS.md)."""

    def __init__(self, cfg: Any, ttl_s: float | None, near_entries: int = 0) -> None:
        cfg = cache_redis(cfg)  # the runtime's RedisConnection (from a spec model or a dict too)
        self.cfg, self.ttl_s = cfg, ttl_s
        self.client = redis_client(cfg)
        self._down_until = 0.0
        near_ttl = min(ttl_s, NEAR_CACHE_TTL_S) if ttl_s else NEAR_CACHE_TTL_S
        self.near = MemoryCache(near_entries, near_ttl) if near_entries > 0 else None

    def _ok(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self) -> None:
        self._down_until = time.monotonic() + self.cfg.retry_after_s

    def get_many(self, keys: list[bytes]) -> list[dict[str, np.ndarray] | None]:
        out: list[dict[str, np.ndarray] | None] = [self.near.get(k) for k in keys] if self.near else [None] * len(keys)
        todo = [i for i, v in enumerate(out) if v is None]
        if not todo or not self._ok():
            return out
        try:
            raw = self.client.mget([self.cfg.prefix.encode() + keys[i].hex().encode() for i in todo])
        except Exception:  # noqa: BLE001
            self._failed()
            return out
        for i, r in zip(todo, raw, strict=True):
            try:
                out[i] = unpack_arrays(r) if r is not None else None
            except Exception:  # noqa: BLE001 - a foreign or corrupt value is a miss
                out[i] = None
            if out[i] is not None and self.near is not None:
                self.near.put(keys[i], out[i])  # type: ignore[arg-type]
        return out

    def put_many(self, items: list[tuple[bytes, dict[str, np.ndarray]]]) -> None:
        if self.near is not None:
            for k, v in items:
                self.near.put(k, v)
        if not items or not self._ok():
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for k, v in items:
                pipe.set(
                    self.cfg.prefix.encode() + k.hex().encode(),
                    pack_arrays(v),
                    px=int(self.ttl_s * 1000) if self.ttl_s else None,
                )
            pipe.execute()
        except Exception:  # noqa: BLE001
            self._failed()


class ResultCacheRunner:
    """Answers repeated requests from a cache; misses go to the target model (one call per batch of misses: in this
    stub when the target allows it, see `.local_model`, else BLS)."""

    def initialize(self, args: dict[str, str]) -> None:
        self.args = ModelArgs.parse(args)
        cfg = plugin_config(self.args)
        if not isinstance(cfg, ResultCacheConfig):
            raise TypeError(f"{self.args.name}: runner 'result_cache' got a {cfg.kind} config")
        self.cfg = cfg
        self.memory = MemoryCache(cfg.max_entries, cfg.ttl_s) if cfg.backend == "memory" else None
        self.redis = (RedisCache(cfg.redis, cfg.ttl_s, cfg.near_cache_entries)
                      if cfg.backend == "redis" else None)  # fmt: skip
        self.inputs = [t.name for t in self.args.inputs]
        self.outputs = [t.name for t in self.args.outputs]
        self.metrics = Metrics(self.args.name)
        self.local = self._local_model()

    def _local_model(self) -> LocalModel | None:
        """The target run in this stub instead of through BLS (the router's `.local_model`, same rules), or None."""
        local, why = (LocalModel.find(self.args.repository, self.cfg.model, self.cfg.version, self.args)
                      if self.cfg.in_process else (None, "in_process: false"))  # fmt: skip
        log_info(f"{self.args.name}: misses go to {self.cfg.model} {'in process' if local else f'through BLS ({why})'}")
        return local

    def _call(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One call of the target: in this stub where allowed (and Triton has it ready), else BLS."""
        return call(self.local, self.cfg.model, self.cfg.version, feed, self.outputs)

    def _lookup(self, keys: list[bytes]) -> list[dict[str, np.ndarray] | None]:
        if self.memory is not None:
            return [self.memory.get(k) for k in keys]
        assert self.redis is not None
        return self.redis.get_many(keys)

    def _store(self, items: list[tuple[bytes, dict[str, np.ndarray]]]) -> None:
        if self.memory is not None:
            for k, v in items:
                self.memory.put(k, v)
            self.metrics.set(CACHE_ENTRIES, "Entries in the result cache", len(self.memory))
        elif self.redis is not None:
            self.redis.put_many(items)

    def _compute_misses(self, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray] | BaseException]:
        return run_merged(
            feeds,
            lambda feed, sizes: list(split_rows(self._call(feed), sizes)),
            self._call,
            lambda exc: exc,
            merge=self.args.max_batch_size > 0,
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        t0 = time.perf_counter()
        feeds = request_feeds(requests, self.inputs)
        keys = [cache_key(self.cfg.model, self.cfg.version, f) for f in feeds]
        cached = self._lookup(keys)
        t_lookup = time.perf_counter()
        responses: list[Any] = [None] * len(requests)
        miss_idx = [i for i, c in enumerate(cached) if c is None]
        for i, c in enumerate(cached):
            if c is not None:
                responses[i] = respond(c)
        hits = len(requests) - len(miss_idx)
        if miss_idx:
            results = self._compute_misses([feeds[i] for i in miss_idx])
            store = []
            for i, res in zip(miss_idx, results, strict=True):
                if isinstance(res, BaseException):
                    responses[i] = error_response(self.args.name, res)
                else:
                    responses[i] = respond(res)
                    store.append((keys[i], res))
            self._store(store)
        t_end = time.perf_counter()
        m = self.metrics
        desc = "Result cache lookups by outcome"
        m.inc(CACHE_REQUESTS, desc, hits, result="hit")
        m.inc(CACHE_REQUESTS, desc, len(miss_idx), result="miss")
        hdesc = "Result cache request latency in microseconds (hits: lookup only; misses: lookup + model)"
        if hits:
            m.observe(CACHE_LATENCY, hdesc, (t_lookup - t0) * 1e6 / max(len(requests), 1), result="hit")
        if miss_idx:
            m.observe(CACHE_LATENCY, hdesc, (t_end - t0) * 1e6 / max(len(requests), 1), result="miss")
        return responses
