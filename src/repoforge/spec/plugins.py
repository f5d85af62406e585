"""The `plugin:` block of a python-format model: repoforge's own serving plugins, configured in the spec.

    - name: user_features
      format: python
      plugin:
        kind: features            # | result_cache | router
        columns: [{name: age, dtype: FP32, fill: 0}, {name: city, dtype: BYTES}]
        features: [{op: standardize, column: age, mean: 40, std: 12}, {op: hash, column: city, buckets: 16}]

`kind` picks the plugin (a discriminated union, so an error names the right fields). Everything here
is static configuration: the features library (`repoforge.features`) compiles it, the plan derives
the model's inputs/outputs from it (`repoforge.plugin_plan`), and the runtime reads it back
from the `repoforge_plugin` config parameter as JSON. This module imports nothing from the rest of
the spec package, so `repoforge.spec.models` can import it.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

RelPath = tuple[str | int, ...]

# Dtypes a raw feature column may have. Text columns are BYTES (Triton's strings).
NUMERIC_DTYPES = ("FP32", "FP64", "FP16", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "BOOL")
COLUMN_DTYPES = (*NUMERIC_DTYPES, "BYTES")
_DTYPE_ALIASES = {"float32": "FP32", "float": "FP32", "float64": "FP64", "double": "FP64", "int32": "INT32",
                  "int64": "INT64", "bool": "BOOL", "bytes": "BYTES", "string": "BYTES", "str": "BYTES", "STRING": "BYTES"}
_TENSOR_NAME = r"^[A-Za-z_][A-Za-z0-9_.\-]*$"
DATETIME_PARTS = ("hour", "minute", "weekday", "day", "month", "year", "dayofyear", "is_weekend")
# Periods for the sin/cos encoding of the cyclical parts (value - offset) / period.
CYCLES: dict[str, tuple[int, int]] = {"hour": (24, 0), "minute": (60, 0), "weekday": (7, 0), "day": (31, 1),
                                      "month": (12, 1), "dayofyear": (366, 1)}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _dtype(v: Any) -> str:
    text = str(v).strip()
    upper = text.upper().removeprefix("TYPE_")
    out = _DTYPE_ALIASES.get(text) or _DTYPE_ALIASES.get(upper) or upper
    if out not in COLUMN_DTYPES:
        raise ValueError(f"unknown column dtype '{v}'; expected one of {', '.join(COLUMN_DTYPES)}")
    return out


# --------------------------------------------------------------------------------------------
# features
# --------------------------------------------------------------------------------------------
class Column(_Strict):
    """A raw input column: one model input of dims [width] (per row), named like the column."""

    name: str = Field(pattern=_TENSOR_NAME)
    dtype: str = "FP32"
    width: int = Field(default=1, ge=1)
    fill: float | str | None = None  # missing values (NaN, or an empty string for BYTES) become this

    @field_validator("dtype", mode="before")
    @classmethod
    def _dt(cls, v: Any) -> str:
        return _dtype(v)

    @property
    def is_text(self) -> bool:
        return self.dtype == "BYTES"


class LookupField(_Strict):
    """A stored feature of an entity; the request still answers with `default` on a miss or an outage."""

    name: str = Field(pattern=_TENSOR_NAME)
    default: float = 0.0


class RedisConnection(_Strict):
    url: str = "redis://127.0.0.1:6379/0"
    url_env: str | None = None  # when this environment variable is set (in the server), its value wins
    timeout_ms: int = Field(default=50, ge=1)
    retry_after_s: float = Field(default=1.0, ge=0)  # after a failure, do not ask Redis again for this long


class Lookup(RedisConnection):
    """Online features: entity id → the values stored under `prefix + id` (float32 little-endian, one per field)."""

    key: str                 # the column holding the entity id
    prefix: str = ""
    fields: list[LookupField] = Field(min_length=1)
    ttl_s: int | None = Field(default=86400, ge=1)  # TTL applied when writing features (FeatureStore.write)
    found: str | None = Field(default=None, pattern=_TENSOR_NAME)  # optional column: 1.0 when the entity was found


class _Op(_Strict):
    column: str

    def inputs(self) -> list[str]:
        return [self.column]


OutputMode = Literal["one_hot", "index"]


class Identity(_Op):
    op: Literal["identity"]


class Standardize(_Op):
    op: Literal["standardize"]
    mean: float | list[float] = 0.0
    std: float | list[float] = 1.0

    @field_validator("std")
    @classmethod
    def _positive(cls, v: float | list[float]) -> float | list[float]:
        if any(s <= 0 for s in (v if isinstance(v, list) else [v])):
            raise ValueError("std must be > 0")
        return v


class MinMax(_Op):
    op: Literal["min_max"]
    min: float
    max: float
    clip: bool = False

    @model_validator(mode="after")
    def _order(self) -> MinMax:
        if self.max <= self.min:
            raise ValueError(f"max ({self.max}) must be greater than min ({self.min})")
        return self


class Log1p(_Op):
    """log(1 + max(x, 0))."""

    op: Literal["log1p"]


class Clip(_Op):
    op: Literal["clip"]
    min: float | None = None
    max: float | None = None


class Bucketize(_Op):
    """Bucket i holds boundaries[i-1] <= x < boundaries[i] (len(boundaries) + 1 buckets)."""

    op: Literal["bucketize"]
    boundaries: list[float] = Field(min_length=1)
    output: OutputMode = "one_hot"

    @field_validator("boundaries")
    @classmethod
    def _sorted(cls, v: list[float]) -> list[float]:
        if any(b <= a for a, b in pairwise(v)):
            raise ValueError("boundaries must be strictly increasing")
        return v


class Vocabulary(_Op):
    """Known values → their position; unknown ones → one of `oov_buckets` extra slots (by stable hash)."""

    op: Literal["vocabulary"]
    values: list[str | int] = Field(min_length=1)
    oov_buckets: int = Field(default=1, ge=0)
    output: OutputMode = "one_hot"

    @field_validator("values")
    @classmethod
    def _unique(cls, v: list[str | int]) -> list[str | int]:
        texts = [str(x) for x in v]
        if len(set(texts)) != len(texts):
            dup = next(t for t in texts if texts.count(t) > 1)
            raise ValueError(f"vocabulary value '{dup}' is listed twice")
        return v


class Hash(_Op):
    """The hashing trick: stable 64-bit hash of the value's UTF-8 text (integers: decimal text) mod `buckets`."""

    op: Literal["hash"]
    buckets: int = Field(ge=1)
    output: OutputMode = "index"


class Datetime(_Op):
    """Parts of a UTC unix timestamp in seconds; `cyclical` encodes periodic parts as sin/cos pairs."""

    op: Literal["datetime"]
    parts: list[Literal["hour", "minute", "weekday", "day", "month", "year", "dayofyear", "is_weekend"]] = Field(min_length=1)
    cyclical: bool = False


class Length(_Op):
    """Length of a text value in characters."""

    op: Literal["length"]


class IsMissing(_Op):
    """1.0 where the raw value is missing (NaN / empty), before `fill`."""

    op: Literal["is_missing"]


class Cross(_Strict):
    """Feature cross: stable hash of the values of two or more columns together, mod `buckets`."""

    op: Literal["cross"]
    columns: list[str] = Field(min_length=2)
    buckets: int = Field(ge=1)
    output: OutputMode = "index"

    def inputs(self) -> list[str]:
        return list(self.columns)


FeatureOp = Annotated[
    Identity | Standardize | MinMax | Log1p | Clip | Bucketize | Vocabulary | Hash | Datetime | Length | IsMissing | Cross,
    Field(discriminator="op"),
]
ELEMENTWISE_OPS = ("identity", "standardize", "min_max", "log1p", "clip", "is_missing")


class FeaturesPlugin(_Strict):
    kind: Literal["features"]
    columns: list[Column] = Field(min_length=1)
    lookup: Lookup | None = None
    features: list[FeatureOp] = Field(min_length=1)
    output: str = Field(default="FEATURES", pattern=_TENSOR_NAME)


# --------------------------------------------------------------------------------------------
# result cache
# --------------------------------------------------------------------------------------------
class CacheRedis(RedisConnection):
    prefix: str = "repoforge:cache:"


class ResultCachePlugin(_Strict):
    """A cache in front of `model` (called via BLS): key = hash of the request's input tensors."""

    kind: Literal["result_cache"]
    model: str
    version: int = -1
    backend: Literal["memory", "redis"] = "memory"
    max_entries: int = Field(default=10000, ge=1)      # memory backend: LRU bound per instance
    ttl_s: float | None = Field(default=300, gt=0)     # None: entries never expire (LRU still bounds them)
    redis: CacheRedis | None = None                     # backend: redis (defaults used when omitted)
    # backend redis: hot keys also kept in process (LRU, at most 5 s) to skip the Redis round trip; 0 = off
    near_cache_entries: int = Field(default=1024, ge=0)


class SemanticCachePlugin(_Strict):
    """Reuse the answer of a *similar* earlier row: cosine similarity of the `embedding` input >= `threshold`.

    Per row (the target must batch); an HNSW index (usearch, inner product on unit vectors) of at most
    `max_entries` rows per instance (oldest evicted first, expired after `ttl_s`). HNSW is approximate:
    a missed neighbour is a miss (the model answers), never a wrong answer.
    """

    kind: Literal["semantic_cache"]
    model: str
    version: int = -1
    embedding: str                                      # the FP32/FP16 input [d] compared between requests
    threshold: float = Field(default=0.95, gt=-1, le=1)
    max_entries: int = Field(default=10000, ge=1)
    ttl_s: float | None = Field(default=600, gt=0)


# --------------------------------------------------------------------------------------------
# router
# --------------------------------------------------------------------------------------------
class Route(_Strict):
    model: str
    weight: float = Field(default=1.0, ge=0)
    version: int = -1


class Canary(_Strict):
    """Send `percent` % of the traffic to `model`; the routes share the rest by their weights."""

    model: str
    percent: float = Field(ge=0, le=100)
    version: int = -1


class Shadow(_Strict):
    """A copy of (a sample of) the traffic goes to `model` in the background; only metrics see its answers."""

    model: str
    percent: float = Field(default=100, ge=0, le=100)
    version: int = -1
    timeout_ms: int = Field(default=1000, ge=1)
    max_pending: int = Field(default=64, ge=1)   # shadow batches waiting beyond this are dropped
    rtol: float = Field(default=1e-4, ge=0)
    atol: float = Field(default=1e-5, ge=0)


class RouterPlugin(_Strict):
    kind: Literal["router"]
    routes: list[Route] = Field(min_length=1)
    canary: Canary | None = None
    shadow: Shadow | None = None
    sticky_key: str | None = None                 # input whose value (hash) picks the route: same key, same route
    route_output: str | None = Field(default="ROUTE", pattern=_TENSOR_NAME)          # INT32 route index per row
    weights_input: str | None = Field(default="ROUTE_WEIGHTS", pattern=_TENSOR_NAME)  # optional control input

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


PLUGIN_KINDS = ("features", "result_cache", "semantic_cache", "router")


def _kind(v: Any) -> str | None:
    kind = v.get("kind") if isinstance(v, dict) else getattr(v, "kind", None)
    # Tags are bracketed so repoforge's error locations skip them (like pydantic's own markers).
    return f"[{kind}]" if kind in PLUGIN_KINDS else None


PluginSpec = Annotated[
    Annotated[FeaturesPlugin, Tag("[features]")]
    | Annotated[ResultCachePlugin, Tag("[result_cache]")]
    | Annotated[SemanticCachePlugin, Tag("[semantic_cache]")]
    | Annotated[RouterPlugin, Tag("[router]")],
    Discriminator(_kind, custom_error_type="plugin_kind",
                  custom_error_message="`kind` must be one of features, result_cache, semantic_cache, router"),
]


def parse_plugin(data: str | dict[str, Any]) -> FeaturesPlugin | ResultCachePlugin | SemanticCachePlugin | RouterPlugin:
    """A plugin config from its JSON (the `repoforge_plugin` parameter) or a dict."""
    from pydantic import TypeAdapter

    adapter: TypeAdapter[Any] = TypeAdapter(PluginSpec)
    return adapter.validate_json(data) if isinstance(data, str) else adapter.validate_python(data)


# --------------------------------------------------------------------------------------------
# static checks and dims (need no other model)
# --------------------------------------------------------------------------------------------
def op_width(op: Any, columns: dict[str, Column]) -> int:
    """Number of FP32 values `op` adds to each output row."""
    if op.op in ELEMENTWISE_OPS:
        return columns[op.column].width
    if op.op in ("bucketize",):
        return len(op.boundaries) + 1 if op.output == "one_hot" else 1
    if op.op == "vocabulary":
        return len(op.values) + op.oov_buckets if op.output == "one_hot" else 1
    if op.op in ("hash", "cross"):
        return op.buckets if op.output == "one_hot" else 1
    if op.op == "datetime":
        return sum(2 if op.cyclical and p in CYCLES else 1 for p in op.parts)
    if op.op == "length":
        return 1
    raise ValueError(f"unknown op {op.op}")


def all_columns(cfg: FeaturesPlugin) -> dict[str, Column]:
    """Raw columns plus the FP32 columns a lookup adds (its fields, and the `found` flag)."""
    cols = {c.name: c for c in cfg.columns}
    if cfg.lookup is not None:
        for f in cfg.lookup.fields:
            cols.setdefault(f.name, Column(name=f.name, dtype="FP32"))
        if cfg.lookup.found:
            cols.setdefault(cfg.lookup.found, Column(name=cfg.lookup.found, dtype="FP32"))
    return cols


def output_dim(cfg: FeaturesPlugin) -> int:
    cols = all_columns(cfg)
    return sum(op_width(op, cols) for op in cfg.features)


def check_features(cfg: FeaturesPlugin) -> list[tuple[RelPath, str]]:
    """Cross-field problems as (path inside `plugin`, message); empty when the config is sound."""
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
    if cfg.lookup is not None:
        lk = cfg.lookup
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
    cols = all_columns(cfg)
    for j, op in enumerate(cfg.features):
        for k, name in enumerate(op.inputs()):
            where = ("features", j, "columns", k) if op.op == "cross" else ("features", j, "column")
            col = cols.get(name)
            if col is None:
                also = " or looked-up field" if cfg.lookup else ""
                problems.append((where, f"{op.op} names column '{name}', which is not a column{also}; columns are {', '.join(cols)}"))
                continue
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
                        problems.append((("features", j, attr), f"{attr} has {len(v)} values but column '{name}' has width {col.width}"))
    if cfg.output in raw:
        problems.append((("output",), f"output '{cfg.output}' has the name of an input column"))
    return problems
