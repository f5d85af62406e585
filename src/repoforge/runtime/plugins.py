"""Triton Python backends for the spec's `plugin:` models: features, result_cache, semantic_cache and router.

Each runner reads its config from the `repoforge_plugin` parameter (JSON of `repoforge.spec.plugins`),
calls other models with BLS (`pb_utils.InferenceRequest(...).exec()`), and exports custom metrics
with `pb_utils.MetricFamily` (they appear on Triton's /metrics beside the nv_* ones):

- `repoforge_feature_lookup_total{model,result=hit|miss|error|skipped}`
- `repoforge_cache_requests_total{model,result=hit|miss}`, `repoforge_cache_latency_us{model,result}` (histogram),
  `repoforge_cache_entries{model}`
- `repoforge_semantic_cache_rows_total{model,result=hit|miss}`, `repoforge_semantic_cache_entries{model}`
- `repoforge_router_rows_total{model,route}`, `repoforge_router_weight{model,route}`,
  `repoforge_shadow_rows_total{model,shadow,outcome=agree|disagree}`,
  `repoforge_shadow_batches_total{model,shadow,outcome=ok|error|dropped}`, `repoforge_shadow_latency_us{model,shadow}`
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import tempfile
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from repoforge.features.hashing import combine, stable_hash, to_unit
from repoforge.runtime.batch import split_rows
from repoforge.runtime.triton_model import (
    ModelArgs, _to_triton, error_response, pb_utils, request_feeds, respond, run_batched,
)
from repoforge.spec.plugins import (
    FeaturesPlugin,
    ResultCachePlugin,
    RouterPlugin,
    parse_plugin,
)

LATENCY_BUCKETS_US = [50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000]


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------
class Metrics:
    """Custom metrics of one model; every call is a no-op where the stub has no metrics support."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._families: dict[str, Any] = {}
        self._metrics: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}

    def _metric(self, name: str, kind: str, description: str, labels: dict[str, str], buckets: list[float] | None = None) -> Any:
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
        m = self._metric(name, "COUNTER", description, labels)
        if m is not None and value:
            m.increment(float(value))

    def set(self, name: str, description: str, value: float, **labels: str) -> None:
        m = self._metric(name, "GAUGE", description, labels)
        if m is not None:
            m.set(float(value))

    def observe(self, name: str, description: str, value: float, **labels: str) -> None:
        m = self._metric(name, "HISTOGRAM", description, labels, LATENCY_BUCKETS_US)
        if m is not None:
            m.observe(float(value))


def plugin_config(args: ModelArgs) -> Any:
    raw = args.parameters.get("repoforge_plugin")
    if not raw:
        raise ValueError(f"{args.name}: config parameter repoforge_plugin is missing (build the repository with repoforge)")
    return parse_plugin(raw)


def call_model(model: str, version: int, inputs: dict[str, np.ndarray], outputs: list[str],
               timeout_us: int | None = None) -> dict[str, np.ndarray]:
    """One BLS request; raises RuntimeError with the target's error message."""
    pb = pb_utils()
    kwargs: dict[str, Any] = {}
    if timeout_us:
        kwargs["timeout"] = int(timeout_us)
    req = pb.InferenceRequest(model_name=model, model_version=int(version), requested_output_names=list(outputs),
                              inputs=[pb.Tensor(k, _to_triton(v)) for k, v in inputs.items()], **kwargs)
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


# --------------------------------------------------------------------------------------------
# features
# --------------------------------------------------------------------------------------------
class FeaturesRunner:
    """Raw columns → FEATURES (FP32 rows × dim) with one pipeline call (and one Redis MGET) per batch."""

    def initialize(self, args: dict[str, str]) -> None:
        from repoforge.features.pipeline import FeaturePipeline

        self.args = ModelArgs.parse(args)
        cfg = plugin_config(self.args)
        if not isinstance(cfg, FeaturesPlugin):
            raise TypeError(f"{self.args.name}: runner 'features' got a {cfg.kind} config")
        self.pipeline = FeaturePipeline(cfg)
        self.metrics = Metrics(self.args.name)
        self._seen = (0, 0, 0, 0)
        self._lock = threading.Lock()

    def _compute(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
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
            delta = [a - b for a, b in zip(now, self._seen)]
            self._seen = now
        for result, d in zip(("hit", "miss", "error", "skipped"), delta):
            if d:
                self.metrics.inc("repoforge_feature_lookup_total",
                                 "Online feature lookups: rows found/missing, batches answered with defaults (error, skipped)",
                                 d, result=result)

    def execute(self, requests: list[Any]) -> list[Any]:
        return run_batched(requests, self.args, self._compute)

    def finalize(self) -> None:
        lk = self.pipeline.lookup if self.pipeline.config.lookup is not None else None
        if lk is not None and lk._client is not None:
            try:
                lk._client.close()
            except Exception:  # noqa: BLE001
                pass


# --------------------------------------------------------------------------------------------
# result cache
# --------------------------------------------------------------------------------------------
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
        header.append({"name": name, "dtype": "object" if a.dtype == np.object_ else a.dtype.str, "shape": list(a.shape), "n": len(data)})
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
        from repoforge.features.online import redis_client

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
        for i, r in zip(todo, raw):
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
                pipe.set(self.cfg.prefix.encode() + k.hex().encode(), pack_arrays(v),
                         px=int(self.ttl_s * 1000) if self.ttl_s else None)
            pipe.execute()
        except Exception:  # noqa: BLE001
            self._failed()


class ResultCacheRunner:
    """Answers repeated requests from a cache; misses go to the target model (one BLS call per batch of misses)."""

    def initialize(self, args: dict[str, str]) -> None:
        self.args = ModelArgs.parse(args)
        cfg = plugin_config(self.args)
        if not isinstance(cfg, ResultCachePlugin):
            raise TypeError(f"{self.args.name}: runner 'result_cache' got a {cfg.kind} config")
        self.cfg = cfg
        self.memory = MemoryCache(cfg.max_entries, cfg.ttl_s) if cfg.backend == "memory" else None
        self.redis = (RedisCache(cfg.redis or _default_cache_redis(), cfg.ttl_s, cfg.near_cache_entries)
                      if cfg.backend == "redis" else None)  # fmt: skip
        self.inputs = [t.name for t in self.args.inputs]
        self.outputs = [t.name for t in self.args.outputs]
        self.metrics = Metrics(self.args.name)

    def _lookup(self, keys: list[bytes]) -> list[dict[str, np.ndarray] | None]:
        if self.memory is not None:
            return [self.memory.get(k) for k in keys]
        assert self.redis is not None
        return self.redis.get_many(keys)

    def _store(self, items: list[tuple[bytes, dict[str, np.ndarray]]]) -> None:
        if self.memory is not None:
            for k, v in items:
                self.memory.put(k, v)
            self.metrics.set("repoforge_cache_entries", "Entries in the result cache", len(self.memory))
        elif self.redis is not None:
            self.redis.put_many(items)

    def _compute_misses(self, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray] | BaseException]:
        model, version = self.cfg.model, self.cfg.version
        if len(feeds) > 1 and self.args.max_batch_size > 0 and _concatenable(feeds):
            try:
                sizes = [next(iter(f.values())).shape[0] for f in feeds]
                merged = {n: np.concatenate([f[n] for f in feeds], axis=0) for n in feeds[0]}
                return list(split_rows(call_model(model, version, merged, self.outputs), sizes))
            except Exception:  # noqa: BLE001 - retry one by one so one bad request fails alone
                pass
        results: list[dict[str, np.ndarray] | BaseException] = []
        for f in feeds:
            try:
                results.append(call_model(model, version, f, self.outputs))
            except Exception as exc:  # noqa: BLE001
                results.append(exc)
        return results

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
            for i, res in zip(miss_idx, results):
                if isinstance(res, BaseException):
                    responses[i] = error_response(self.args.name, res)
                else:
                    responses[i] = respond(res)
                    store.append((keys[i], res))
            self._store(store)
        t_end = time.perf_counter()
        m = self.metrics
        desc = "Result cache lookups by outcome"
        m.inc("repoforge_cache_requests_total", desc, hits, result="hit")
        m.inc("repoforge_cache_requests_total", desc, len(miss_idx), result="miss")
        hdesc = "Result cache request latency in microseconds (hits: lookup only; misses: lookup + model)"
        if hits:
            m.observe("repoforge_cache_latency_us", hdesc, (t_lookup - t0) * 1e6 / max(len(requests), 1), result="hit")
        if miss_idx:
            m.observe("repoforge_cache_latency_us", hdesc, (t_end - t0) * 1e6 / max(len(requests), 1), result="miss")
        return responses


class SemanticIndex:
    """Cached output rows by slot of a bounded cosine-similarity index (`repoforge.runtime.vector_index`,
    usearch HNSW): at most `max_entries` rows, oldest evicted first, expired after `ttl_s`."""

    def __init__(self, dim: int, max_entries: int, ttl_s: float | None) -> None:
        from repoforge.runtime.vector_index import VectorIndex

        self.dim, self.size, self.ttl_s = dim, max_entries, ttl_s
        self.index = VectorIndex(dim, max_entries, ttl_s)
        self.values: dict[str, np.ndarray] = {}

    @staticmethod
    def normalize(x: np.ndarray) -> np.ndarray:
        from repoforge.runtime.vector_index import normalize

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
        from repoforge.spec.plugins import SemanticCachePlugin

        self.args = ModelArgs.parse(args)
        cfg = plugin_config(self.args)
        if not isinstance(cfg, SemanticCachePlugin):
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
        got = call_model(self.cfg.model, self.cfg.version, {k: v[miss] for k, v in feed.items()}, self.outputs) if len(miss) else {}
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
        self.metrics.inc("repoforge_semantic_cache_rows_total", desc, int(hit.sum()), result="hit")
        self.metrics.inc("repoforge_semantic_cache_rows_total", desc, len(miss), result="miss")
        self.metrics.set("repoforge_semantic_cache_entries", "Entries in the semantic cache", len(self.index))
        return out

    def execute(self, requests: list[Any]) -> list[Any]:
        return run_batched(requests, self.args, self._compute)


def _default_cache_redis() -> Any:
    from repoforge.spec.plugins import CacheRedis

    return CacheRedis()


def _concatenable(feeds: list[dict[str, np.ndarray]]) -> bool:
    first = feeds[0]
    return bool(first) and all(f.keys() == first.keys() and all(f[k].shape[1:] == first[k].shape[1:] for k in f) for f in feeds)


# --------------------------------------------------------------------------------------------
# router
# --------------------------------------------------------------------------------------------
def route_rows(u: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Route index per row for uniform draws `u` in [0, 1) and non-negative weights (any scale)."""
    w = np.asarray(weights, dtype=np.float64)
    cum = np.cumsum(w)
    total = cum[-1] if len(cum) else 0.0
    if total <= 0:
        return np.zeros(len(u), dtype=np.int32)
    idx = np.searchsorted(cum / total, u, side="right")
    # zero-weight routes at the end can never be picked: clamp to the last route with weight
    last = int(np.nonzero(w > 0)[0][-1])
    return np.minimum(idx, last).astype(np.int32)


def sticky_draws(key: np.ndarray, rows: int) -> np.ndarray:
    """Uniform [0, 1) per row from the stable hash of each row's key value(s)."""
    k = np.asarray(key).reshape(rows, -1)
    if k.shape[1] == 1:
        return to_unit(stable_hash(k[:, 0]))
    return to_unit(combine([stable_hash(k[:, j]) for j in range(k.shape[1])]))


class RouterRunner:
    """Splits rows between routes (weights, canary, sticky by key), shadows a copy, exports route metrics."""

    def initialize(self, args: dict[str, str]) -> None:
        self.args = ModelArgs.parse(args)
        cfg = plugin_config(self.args)
        if not isinstance(cfg, RouterPlugin):
            raise TypeError(f"{self.args.name}: runner 'router' got a {cfg.kind} config")
        self.cfg = cfg
        self.targets = cfg.targets
        self.weights = np.asarray(cfg.initial_weights(), dtype=np.float64)
        self.digest = hashlib.sha1(cfg.model_dump_json().encode()).hexdigest()[:16]
        self.state_path = os.path.join(os.environ.get("REPOFORGE_STATE_DIR") or tempfile.gettempdir(),
                                       "repoforge-router", f"{os.getppid()}-{self.args.name}.json")
        self._state_mtime = 0
        self.data_inputs = [t for t in self.args.inputs if t.name != cfg.weights_input]
        self.outputs = [t.name for t in self.args.outputs if t.name != cfg.route_output]
        self.metrics = Metrics(self.args.name)
        self.rng = np.random.default_rng()
        self._pending = 0
        self._lock = threading.Lock()
        self.shadow_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="shadow") if cfg.shadow else None
        self._read_state()
        self._export_weights()

    # -- weights shared by every instance of this model (same server), changeable at run time --
    def _read_state(self) -> None:
        try:
            st = os.stat(self.state_path)
        except OSError:
            return
        if st.st_mtime_ns == self._state_mtime:
            return
        self._state_mtime = st.st_mtime_ns
        try:
            with open(self.state_path) as fh:
                state = json.load(fh)
            if state.get("digest") == self.digest and len(state.get("weights", [])) == len(self.targets):
                self.weights = np.asarray(state["weights"], dtype=np.float64)
                self._export_weights()
        except (OSError, ValueError):
            pass

    def set_weights(self, weights: np.ndarray) -> None:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if len(w) != len(self.targets) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"{self.cfg.weights_input} needs {len(self.targets)} non-negative weights with a positive sum, got {w.tolist()}")
        self.weights = w / w.sum()
        os.makedirs(os.path.dirname(self.state_path), exist_ok=True)
        tmp = f"{self.state_path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            json.dump({"digest": self.digest, "weights": self.weights.tolist()}, fh)
        os.replace(tmp, self.state_path)
        self._state_mtime = os.stat(self.state_path).st_mtime_ns
        self._export_weights()

    def _export_weights(self) -> None:
        total = float(self.weights.sum()) or 1.0
        for t, w in zip(self.targets, self.weights):
            self.metrics.set("repoforge_router_weight", "Current traffic share of each route", float(w) / total, route=t.model)

    # -- serving --
    def execute(self, requests: list[Any]) -> list[Any]:
        self._read_state()
        pb = pb_utils()
        ok: list[Any] = []
        early: dict[int, Any] = {}
        wname = self.cfg.weights_input
        for i, r in enumerate(requests):
            if wname:
                t = pb.get_input_tensor_by_name(r, wname)
                if t is not None:
                    try:
                        self.set_weights(t.as_numpy().reshape(-1, len(self.targets))[0])
                    except ValueError as exc:
                        early[i] = error_response(self.args.name, exc)
                        continue
            ok.append(r)
        args = dataclasses.replace(self.args, inputs=self.data_inputs)
        answered = iter(run_batched(ok, args, self._compute) if ok else [])
        return [early[i] if i in early else next(answered) for i in range(len(requests))]

    def _compute(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batched = self.args.max_batch_size > 0
        first = next(iter(feed.values()))
        rows = first.shape[0] if batched else 1
        if self.cfg.sticky_key is not None:
            key = feed[self.cfg.sticky_key]
            u = sticky_draws(key if batched else key.reshape(1, -1), rows)
        else:
            u = self.rng.random(rows)
        route = route_rows(u, self.weights)
        outputs: dict[str, np.ndarray] = {}
        for r in np.unique(route):
            target = self.targets[int(r)]
            sel = np.nonzero(route == r)[0]
            part = {k: v[sel] for k, v in feed.items()} if batched else feed
            got = call_model(target.model, target.version, part, self.outputs)
            for name, value in got.items():
                if not batched:
                    outputs[name] = value
                    continue
                if name not in outputs:
                    outputs[name] = np.empty((rows, *value.shape[1:]), dtype=value.dtype)
                outputs[name][sel] = value
            self.metrics.inc("repoforge_router_rows_total", "Rows sent to each route", len(sel), route=target.model)
        if self.cfg.route_output:
            outputs[self.cfg.route_output] = route.reshape(rows, 1) if batched else route.reshape(1)
        if self.shadow_pool is not None:
            self._shadow(feed, {k: outputs[k] for k in self.outputs})
        return outputs

    # -- shadow: never changes (or delays) the primary answer --
    def _shadow(self, feed: dict[str, np.ndarray], primary: dict[str, np.ndarray]) -> None:
        sh = self.cfg.shadow
        assert sh is not None and self.shadow_pool is not None
        if sh.percent < 100 and self.rng.random() * 100 >= sh.percent:
            return
        with self._lock:
            if self._pending >= sh.max_pending:
                self.metrics.inc("repoforge_shadow_batches_total", "Shadow batches by outcome", 1, shadow=sh.model, outcome="dropped")
                return
            self._pending += 1
        feed_c = {k: np.array(v, copy=True) for k, v in feed.items()}
        primary_c = {k: np.array(v, copy=True) for k, v in primary.items()}
        try:
            self.shadow_pool.submit(self._shadow_call, feed_c, primary_c)
        except RuntimeError:  # pool shut down
            with self._lock:
                self._pending -= 1

    def _shadow_call(self, feed: dict[str, np.ndarray], primary: dict[str, np.ndarray]) -> None:
        sh = self.cfg.shadow
        assert sh is not None
        m = self.metrics
        t0 = time.perf_counter()
        try:
            got = call_model(sh.model, sh.version, feed, self.outputs, timeout_us=sh.timeout_ms * 1000)
            rows = next(iter(primary.values())).shape[0] if self.args.max_batch_size > 0 else 1
            agree = np.ones(rows, dtype=bool)
            for name, p in primary.items():
                s = got[name]
                if s.shape != p.shape:
                    agree[:] = False
                    break
                if p.dtype == np.object_:
                    same = (s == p)
                else:
                    same = np.isclose(s.astype(np.float64), p.astype(np.float64), rtol=sh.rtol, atol=sh.atol)
                agree &= np.asarray(same).reshape(rows, -1).all(axis=1)
            n_agree = int(agree.sum())
            m.inc("repoforge_shadow_rows_total", "Shadow rows that agree/disagree with the primary answer", n_agree, shadow=sh.model, outcome="agree")
            m.inc("repoforge_shadow_rows_total", "Shadow rows that agree/disagree with the primary answer", rows - n_agree, shadow=sh.model, outcome="disagree")
            m.inc("repoforge_shadow_batches_total", "Shadow batches by outcome", 1, shadow=sh.model, outcome="ok")
        except Exception:  # noqa: BLE001 - a failing shadow is only a metric
            m.inc("repoforge_shadow_batches_total", "Shadow batches by outcome", 1, shadow=sh.model, outcome="error")
        finally:
            m.observe("repoforge_shadow_latency_us", "Shadow call latency in microseconds", (time.perf_counter() - t0) * 1e6, shadow=sh.model)
            with self._lock:
                self._pending -= 1

    def finalize(self) -> None:
        if self.shadow_pool is not None:
            self.shadow_pool.shutdown(wait=False, cancel_futures=True)
