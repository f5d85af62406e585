"""Plugin configuration as the runtime reads it: small dataclasses parsed from the plain JSON the build writes
into the `repoforge_plugin` config parameter (or the `handler.plugin` section of a .mar's model-config.yaml).

The build validates the spec with pydantic (`repoforge.spec.plugins`) and writes every field, defaults
included; the parsers here fill the same defaults for hand-written dicts (tests, notebooks) so both read
alike. `coerce` also takes any object with `model_dump` (a pydantic spec model), so build-time callers can
hand the runtime their validated models. Cross-field checks of a features config (`check_features`) and its
output width (`op_width`) live here once; the spec re-exports them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .dtypes import normalize_dtype
from .names import REDIS_URL_ENV

RelPath = tuple[str | int, ...]

DATETIME_PARTS = ("hour", "minute", "weekday", "day", "month", "year", "dayofyear", "is_weekend")
#: Periods for the sin/cos encoding of the cyclical parts (value - offset) / period.
CYCLES: dict[str, tuple[int, int]] = {
    "hour": (24, 0),
    "minute": (60, 0),
    "weekday": (7, 0),
    "day": (31, 1),
    "month": (12, 1),
    "dayofyear": (366, 1),
}
ELEMENTWISE_OPS = ("identity", "standardize", "min_max", "log1p", "clip", "is_missing")
PLUGIN_KINDS = ("features", "result_cache", "semantic_cache", "router")
#: ops whose `output` defaults to one_hot (the others default to index)
_ONE_HOT_BY_DEFAULT = ("bucketize", "vocabulary")


class PluginConfigError(ValueError):
    """A plugin config the runtime cannot read (a repository not written by this repoforge)."""


def as_data(config: Any) -> dict[str, Any]:
    """A plain dict from JSON text, a mapping, a pydantic model (`model_dump`) or one of the dataclasses here."""
    if isinstance(config, (str, bytes)):
        data = json.loads(config)
    elif hasattr(config, "model_dump"):
        data = config.model_dump(mode="json")
    elif isinstance(config, Mapping):
        data = dict(config)
    elif hasattr(config, "__dataclass_fields__"):
        data = asdict(config)
    else:
        raise PluginConfigError(f"cannot read a plugin config from {type(config).__name__}")
    if not isinstance(data, dict):
        raise PluginConfigError(f"a plugin config is a JSON object, got {type(data).__name__}")
    return data


def _opt(data: Mapping[str, Any], key: str, default: Any) -> Any:
    """data[key], with `default` when absent (an explicit null stays None)."""
    return data[key] if key in data else default


# --------------------------------------------------------------------------------------------
# features
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """A raw input column: one model input of dims [width] (per row)."""

    name: str
    dtype: str = "FP32"
    width: int = 1
    fill: float | str | None = None

    @property
    def is_text(self) -> bool:
        return self.dtype == "BYTES"

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> Column:
        return cls(d["name"], normalize_dtype(d.get("dtype", "FP32")), int(d.get("width", 1)), d.get("fill"))


@dataclass(frozen=True)
class LookupField:
    name: str
    default: float = 0.0


@dataclass(frozen=True)
class RedisConnection:
    """Where Redis is and how long to wait for it. URL: `url_env`'s variable when set, else REPOFORGE_REDIS_URL
    when set (deploy sets it for the pod), else `url`."""

    url: str = "redis://127.0.0.1:6379/0"
    url_env: str | None = None
    timeout_ms: int = 50
    retry_after_s: float = 1.0
    prefix: str = ""

    def resolved_url(self) -> str:
        return (os.environ.get(self.url_env) if self.url_env else None) or os.environ.get(REDIS_URL_ENV) or self.url

    @staticmethod
    def _conn(d: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        return {
            "url": d.get("url", "redis://127.0.0.1:6379/0"),
            "url_env": d.get("url_env"),
            "timeout_ms": int(d.get("timeout_ms", 50)),
            "retry_after_s": float(d.get("retry_after_s", 1.0)),
            "prefix": d.get("prefix", prefix),
        }

    @classmethod
    def parse(cls, d: Mapping[str, Any] | None, prefix: str = "") -> RedisConnection:
        return cls(**cls._conn(d or {}, prefix))


CACHE_PREFIX = "repoforge:cache:"


def cache_redis(config: Any = None) -> RedisConnection:
    """The Redis of a result cache (`redis:` of the plugin; its key prefix defaults to repoforge:cache:)."""
    if isinstance(config, RedisConnection):
        return config
    return RedisConnection.parse(as_data(config) if config is not None else None, CACHE_PREFIX)


@dataclass(frozen=True)
class Lookup(RedisConnection):
    """Online features: entity id → the float32 values stored under `prefix + id`."""

    key: str = ""
    fields: tuple[LookupField, ...] = ()
    ttl_s: int | None = 86400
    found: str | None = None

    @classmethod
    def parse(cls, d: Mapping[str, Any] | None, prefix: str = "") -> Lookup:
        d = d or {}
        return cls(
            **cls._conn(d, prefix),
            key=d["key"],
            fields=tuple(LookupField(f["name"], float(f.get("default", 0.0))) for f in d["fields"]),
            ttl_s=_opt(d, "ttl_s", 86400),
            found=d.get("found"),
        )

    @classmethod
    def coerce(cls, config: Any) -> Lookup:
        return config if isinstance(config, Lookup) else cls.parse(as_data(config))


@dataclass(frozen=True)
class FeatureOp:
    """One feature op; only the fields of its `op` matter (the others keep their defaults)."""

    op: str
    column: str = ""
    columns: tuple[str, ...] = ()
    mean: float | list[float] = 0.0
    std: float | list[float] = 1.0
    min: float | None = None
    max: float | None = None
    clip: bool = False
    boundaries: tuple[float, ...] = ()
    values: tuple[str | int, ...] = ()
    oov_buckets: int = 1
    buckets: int = 1
    parts: tuple[str, ...] = ()
    cyclical: bool = False
    output: str = "index"

    def inputs(self) -> list[str]:
        return list(self.columns) if self.op == "cross" else [self.column]

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> FeatureOp:
        op = str(d["op"])
        return cls(
            op=op,
            column=d.get("column", ""),
            columns=tuple(d.get("columns", ())),
            mean=d.get("mean", 0.0),
            std=d.get("std", 1.0),
            min=d.get("min"),
            max=d.get("max"),
            clip=bool(d.get("clip", False)),
            boundaries=tuple(float(b) for b in d.get("boundaries", ())),
            values=tuple(d.get("values", ())),
            oov_buckets=int(d.get("oov_buckets", 1)),
            buckets=int(d.get("buckets", 1)),
            parts=tuple(d.get("parts", ())),
            cyclical=bool(d.get("cyclical", False)),
            output=d.get("output", "one_hot" if op in _ONE_HOT_BY_DEFAULT else "index"),
        )


@dataclass(frozen=True)
class DriftSetting:
    reference: str
    window: int = 10000

    @classmethod
    def parse(cls, d: Mapping[str, Any] | None) -> DriftSetting | None:
        return cls(d["reference"], int(d.get("window", 10000))) if d else None


@dataclass(frozen=True)
class FeaturesConfig:
    """Raw columns in, one FP32 feature vector per row out."""

    columns: tuple[Column, ...]
    features: tuple[FeatureOp, ...]
    lookup: Lookup | None = None
    output: str = "FEATURES"
    drift: DriftSetting | None = None
    model: str | None = None  # the model the features feed (its outputs answer), run by the plugin
    version: int = -1
    model_input: str | None = None  # filled in by the plan: the model's input that takes the features
    in_process: bool = True
    kind: str = "features"

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> FeaturesConfig:
        return cls(
            columns=tuple(Column.parse(c) for c in d["columns"]),
            features=tuple(FeatureOp.parse(f) for f in d["features"]),
            lookup=Lookup.parse(d["lookup"]) if d.get("lookup") else None,
            output=d.get("output", "FEATURES"),
            drift=DriftSetting.parse(d.get("drift")),
            model=d.get("model") or None,
            version=int(d.get("version", -1)),
            model_input=d.get("model_input") or None,
            in_process=bool(d.get("in_process", True)),
        )


# --------------------------------------------------------------------------------------------
# caches
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResultCacheConfig:
    model: str
    version: int = -1
    backend: str = "memory"
    max_entries: int = 10000
    ttl_s: float | None = 300
    redis: RedisConnection = field(default_factory=cache_redis)
    near_cache_entries: int = 1024
    in_process: bool = True
    kind: str = "result_cache"

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> ResultCacheConfig:
        return cls(
            model=d["model"],
            version=int(d.get("version", -1)),
            backend=d.get("backend", "memory"),
            max_entries=int(d.get("max_entries", 10000)),
            ttl_s=_opt(d, "ttl_s", 300),
            redis=cache_redis(d.get("redis")),
            near_cache_entries=int(d.get("near_cache_entries", 1024)),
            in_process=bool(d.get("in_process", True)),
        )


@dataclass(frozen=True)
class SemanticCacheConfig:
    model: str
    embedding: str
    version: int = -1
    threshold: float = 0.95
    max_entries: int = 10000
    ttl_s: float | None = 600
    kind: str = "semantic_cache"

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> SemanticCacheConfig:
        return cls(
            model=d["model"],
            embedding=d["embedding"],
            version=int(d.get("version", -1)),
            threshold=float(d.get("threshold", 0.95)),
            max_entries=int(d.get("max_entries", 10000)),
            ttl_s=_opt(d, "ttl_s", 600),
        )


# --------------------------------------------------------------------------------------------
# router
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    model: str
    weight: float = 1.0
    version: int = -1


@dataclass(frozen=True)
class Canary:
    model: str
    percent: float
    version: int = -1


@dataclass(frozen=True)
class Shadow:
    model: str
    percent: float = 100
    version: int = -1
    timeout_ms: int = 1000
    max_pending: int = 64
    rtol: float = 1e-4
    atol: float = 1e-5


@dataclass(frozen=True)
class RouterConfig:
    routes: tuple[Route, ...]
    canary: Canary | None = None
    shadow: Shadow | None = None
    sticky_key: str | None = None
    route_output: str | None = "ROUTE"
    weights_input: str | None = "ROUTE_WEIGHTS"
    drift: DriftSetting | None = None
    in_process: bool = True
    kind: str = "router"

    @property
    def targets(self) -> list[Route | Canary]:
        """Routes in ROUTE-index order: the routes, then the canary."""
        return [*self.routes, *([self.canary] if self.canary else [])]

    def initial_weights(self) -> list[float]:
        """Normalized traffic shares, in `targets` order."""
        total = sum(r.weight for r in self.routes)
        share = 1.0 - (self.canary.percent / 100 if self.canary else 0.0)
        ws = [share * (r.weight / total if total > 0 else 1 / len(self.routes)) for r in self.routes]
        if self.canary:
            ws.append(self.canary.percent / 100)
        return ws

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> RouterConfig:
        canary, shadow = d.get("canary"), d.get("shadow")
        return cls(
            routes=tuple(
                Route(r["model"], float(r.get("weight", 1.0)), int(r.get("version", -1))) for r in d["routes"]
            ),
            canary=Canary(canary["model"], float(canary["percent"]), int(canary.get("version", -1)))
            if canary
            else None,
            shadow=Shadow(**{k: v for k, v in shadow.items() if k in Shadow.__dataclass_fields__}) if shadow else None,
            sticky_key=d.get("sticky_key"),
            route_output=_opt(d, "route_output", "ROUTE"),
            weights_input=_opt(d, "weights_input", "ROUTE_WEIGHTS"),
            drift=DriftSetting.parse(d.get("drift")),
            in_process=bool(d.get("in_process", True)),
        )


PluginConfig = FeaturesConfig | ResultCacheConfig | SemanticCacheConfig | RouterConfig
_PARSERS: dict[str, Any] = {
    "features": FeaturesConfig.parse,
    "result_cache": ResultCacheConfig.parse,
    "semantic_cache": SemanticCacheConfig.parse,
    "router": RouterConfig.parse,
}


def parse_plugin_config(config: Any) -> PluginConfig:
    """A plugin config from its JSON (the `repoforge_plugin` parameter), a dict or a pydantic spec model."""
    data = as_data(config)
    parser = _PARSERS.get(data.get("kind", ""))
    if parser is None:
        raise PluginConfigError(f"plugin `kind` must be one of {', '.join(PLUGIN_KINDS)}, got {data.get('kind')!r}")
    try:
        parsed: PluginConfig = parser(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise PluginConfigError(f"{data.get('kind')} plugin config: {type(exc).__name__}: {exc}") from exc
    return parsed


# --------------------------------------------------------------------------------------------
# static checks and dims of a features config (duck-typed: these dataclasses or the spec's models)
# --------------------------------------------------------------------------------------------
def op_width(op: Any, columns: Mapping[str, Any]) -> int:
    """Number of FP32 values `op` adds to each output row."""
    if op.op in ELEMENTWISE_OPS:
        return int(columns[op.column].width)
    if op.op == "bucketize":
        return len(op.boundaries) + 1 if op.output == "one_hot" else 1
    if op.op == "vocabulary":
        return len(op.values) + op.oov_buckets if op.output == "one_hot" else 1
    if op.op in ("hash", "cross"):
        return int(op.buckets) if op.output == "one_hot" else 1
    if op.op == "datetime":
        return sum(2 if op.cyclical and p in CYCLES else 1 for p in op.parts)
    if op.op == "length":
        return 1
    raise ValueError(f"unknown op {op.op}")


def all_columns(cfg: Any) -> dict[str, Any]:
    """Raw columns plus the FP32 columns a lookup adds (its fields, and the `found` flag)."""
    cols: dict[str, Any] = {c.name: c for c in cfg.columns}
    if cfg.lookup is not None:
        for f in cfg.lookup.fields:
            cols.setdefault(f.name, Column(name=f.name, dtype="FP32"))
        if cfg.lookup.found:
            cols.setdefault(cfg.lookup.found, Column(name=cfg.lookup.found, dtype="FP32"))
    return cols


def output_dim(cfg: Any) -> int:
    cols = all_columns(cfg)
    return sum(op_width(op, cols) for op in cfg.features)


def check_features(cfg: Any) -> list[tuple[RelPath, str]]:
    """Cross-field problems as (path inside `plugin`, message); empty when the config is sound."""
    problems = _column_problems(cfg)
    if cfg.lookup is not None:
        problems += _lookup_problems(cfg, cfg.lookup)
    problems += _feature_op_problems(cfg)
    if cfg.output in [c.name for c in cfg.columns]:
        problems.append((("output",), f"output '{cfg.output}' has the name of an input column"))
    return problems


def _column_problems(cfg: Any) -> list[tuple[RelPath, str]]:
    """Raw columns alone: each name once, and a fill of the column's kind (text or number)."""
    problems: list[tuple[RelPath, str]] = []
    raw = [c.name for c in cfg.columns]
    for j, n in enumerate(raw):
        if raw.index(n) != j:
            problems.append((("columns", j, "name"), f"column '{n}' is declared twice"))
    for j, c in enumerate(cfg.columns):
        if c.fill is not None:
            if c.is_text and not isinstance(c.fill, str):
                problems.append((("columns", j, "fill"), f"column '{c.name}' is BYTES; its fill must be a string"))
            if not c.is_text and isinstance(c.fill, str):
                problems.append((("columns", j, "fill"), f"column '{c.name}' is {c.dtype}; its fill must be a number"))
    return problems


def _lookup_problems(cfg: Any, lk: Any) -> list[tuple[RelPath, str]]:
    """The lookup's key must be a usable raw column, and its fields (and `found`) new, distinct names."""
    problems: list[tuple[RelPath, str]] = []
    raw = [c.name for c in cfg.columns]
    by = {c.name: c for c in cfg.columns}
    if lk.key not in by:
        problems.append((("lookup", "key"), f"lookup key '{lk.key}' is not a column; columns are {', '.join(raw)}"))
    elif by[lk.key].dtype not in ("BYTES", "INT32", "INT64", "UINT32", "UINT64") or by[lk.key].width != 1:
        problems.append((("lookup", "key"), f"lookup key '{lk.key}' must be a BYTES or integer column of width 1"))
    names = [f.name for f in lk.fields] + ([lk.found] if lk.found else [])
    for j, n in enumerate(names):
        where: RelPath = ("lookup", "fields", j, "name") if j < len(lk.fields) else ("lookup", "found")
        if n in by:
            problems.append((where, f"'{n}' is already a column; looked-up fields need their own names"))
        elif names.index(n) != j:
            problems.append((where, f"looked-up field '{n}' is declared twice"))
    return problems


def _feature_op_problems(cfg: Any) -> list[tuple[RelPath, str]]:
    """Each feature op's input columns must exist (raw or looked up) and suit the op."""
    problems: list[tuple[RelPath, str]] = []
    cols = all_columns(cfg)
    for j, op in enumerate(cfg.features):
        for k, name in enumerate(op.inputs()):
            where: RelPath = ("features", j, "columns", k) if op.op == "cross" else ("features", j, "column")
            col = cols.get(name)
            if col is None:
                also = " or looked-up field" if cfg.lookup else ""
                problems.append(
                    (
                        where,
                        f"{op.op} names column '{name}', which is not a column{also}; columns are {', '.join(cols)}",
                    )
                )
                continue
            problems += _op_column_problems(op, j, where, name, col)
    return problems


def _op_column_problems(op: Any, j: int, where: RelPath, name: str, col: Any) -> list[tuple[RelPath, str]]:
    """One existing input column against its op: kind (text or number), width, and per-element stats."""
    problems: list[tuple[RelPath, str]] = []
    if (op.op in ELEMENTWISE_OPS or op.op in ("bucketize", "datetime")) and col.is_text and op.op != "is_missing":
        problems.append((where, f"{op.op} needs a numeric column; '{name}' is BYTES"))
    if op.op in ("vocabulary", "hash", "cross") and col.dtype.startswith(("FP", "BOOL")):
        problems.append((where, f"{op.op} needs a BYTES or integer column; '{name}' is {col.dtype}"))
    if op.op == "length" and not col.is_text:
        problems.append((where, f"length needs a BYTES column; '{name}' is {col.dtype}"))
    if op.op not in ELEMENTWISE_OPS and col.width != 1:
        problems.append((where, f"{op.op} works on columns of width 1; '{name}' has width {col.width}"))
    if op.op == "standardize":
        for attr in ("mean", "std"):
            v = getattr(op, attr)
            if isinstance(v, list) and len(v) != col.width:
                problems.append(
                    (
                        ("features", j, attr),
                        f"{attr} has {len(v)} values but column '{name}' has width {col.width}",
                    )
                )
    return problems
