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
    TypeAdapter,
    field_validator,
    model_validator,
)

# Checks and dims shared with the runtime (one implementation, duck-typed over these models and the runtime's).
from repoforge.runtime.config import (
    CYCLES as CYCLES,
)
from repoforge.runtime.config import (
    DATETIME_PARTS as DATETIME_PARTS,
)
from repoforge.runtime.config import (
    ELEMENTWISE_OPS as ELEMENTWISE_OPS,
)
from repoforge.runtime.config import (
    RelPath as RelPath,
)
from repoforge.runtime.config import (
    all_columns as all_columns,
)
from repoforge.runtime.config import (
    check_features as check_features,
)
from repoforge.runtime.config import (
    op_width as op_width,
)
from repoforge.runtime.config import (
    output_dim as output_dim,
)

# Dtypes a raw feature column may have. Text columns are BYTES (Triton's strings).
NUMERIC_DTYPES = (
    "FP32",
    "FP64",
    "FP16",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "BOOL",
)
COLUMN_DTYPES = (*NUMERIC_DTYPES, "BYTES")
_DTYPE_ALIASES = {
    "float32": "FP32",
    "float": "FP32",
    "float64": "FP64",
    "double": "FP64",
    "int32": "INT32",
    "int64": "INT64",
    "bool": "BOOL",
    "bytes": "BYTES",
    "string": "BYTES",
    "str": "BYTES",
    "STRING": "BYTES",
}
_TENSOR_NAME = r"^[A-Za-z_][A-Za-z0-9_.\-]*$"


class _Strict(BaseModel):
    """Base of every plugin model: an unknown key is an error, so a typo is never silently ignored."""

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

    name: str = Field(pattern=_TENSOR_NAME, description="Column name, also the name of its model input.")
    dtype: str = Field(default="FP32", description="Input dtype: a numeric Triton dtype, or BYTES for text.")
    width: int = Field(default=1, ge=1, description="Values per row: the input's dims are [width].")
    fill: float | str | None = Field(  # missing values (NaN, or an empty string for BYTES) become this
        default=None, description="Replaces missing values (NaN; empty string for BYTES); unset: kept as they are."
    )

    @field_validator("dtype", mode="before")
    @classmethod
    def _dt(cls, v: Any) -> str:
        return _dtype(v)

    @property
    def is_text(self) -> bool:
        return self.dtype == "BYTES"


class LookupField(_Strict):
    """A stored feature of an entity; the request still answers with `default` on a miss or an outage."""

    name: str = Field(pattern=_TENSOR_NAME, description="Field name; usable as a column by the feature ops.")
    default: float = Field(default=0.0, description="Value on a miss, a timeout or a Redis outage.")


class RedisConnection(_Strict):
    """Where Redis is, and how long repoforge waits for it."""

    url: str = Field(default="redis://127.0.0.1:6379/0", description="Redis URL.")
    url_env: str | None = Field(  # when this environment variable is set (in the server), its value wins
        default=None, description="Environment variable (in the server) whose value, when set, replaces `url`."
    )
    timeout_ms: int = Field(default=50, ge=1, description="Timeout of each Redis call, in ms.")
    retry_after_s: float = Field(  # after a failure, do not ask Redis again for this long
        default=1.0, ge=0, description="Seconds Redis is left alone after a failure (requests answer without it)."
    )


class Lookup(RedisConnection):
    """Online features: entity id → the values stored under `prefix + id` (float32 little-endian, one per field)."""

    key: str = Field(description="The column holding the entity id (BYTES or integer, width 1).")
    prefix: str = Field(default="", description="Redis key prefix: the values live under prefix + id.")
    fields: list[LookupField] = Field(min_length=1, description="The stored features, in their stored order.")
    ttl_s: int | None = Field(  # TTL applied when writing features (FeatureStore.write)
        default=86400, ge=1, description="TTL in seconds FeatureStore.write sets on the keys; null: none."
    )
    found: str | None = Field(  # optional column: 1.0 when the entity was found
        default=None, pattern=_TENSOR_NAME, description="Optional column name: 1.0 where the entity was found, else 0."
    )


class _Op(_Strict):
    """A feature op over one column."""

    column: str = Field(description="The column (or looked-up field) the op reads.")

    def inputs(self) -> list[str]:
        return [self.column]


OutputMode = Literal["one_hot", "index"]


class Identity(_Op):
    """The column's values, as FP32."""

    op: Literal["identity"] = Field(description="Selects this op.")


class Standardize(_Op):
    """(x - mean) / std."""

    op: Literal["standardize"] = Field(description="Selects this op.")
    mean: float | list[float] = Field(default=0.0, description="Mean, or one per value of a wider column.")
    std: float | list[float] = Field(default=1.0, description="Standard deviation (> 0), or one per value.")

    @field_validator("std")
    @classmethod
    def _positive(cls, v: float | list[float]) -> float | list[float]:
        if any(s <= 0 for s in (v if isinstance(v, list) else [v])):
            raise ValueError("std must be > 0")
        return v


class MinMax(_Op):
    """(x - min) / (max - min)."""

    op: Literal["min_max"] = Field(description="Selects this op.")
    min: float = Field(description="Value that becomes 0.")
    max: float = Field(description="Value that becomes 1 (must exceed min).")
    clip: bool = Field(default=False, description="Clip the result to [0, 1].")

    @model_validator(mode="after")
    def _order(self) -> MinMax:
        if self.max <= self.min:
            raise ValueError(f"max ({self.max}) must be greater than min ({self.min})")
        return self


class Log1p(_Op):
    """log(1 + max(x, 0))."""

    op: Literal["log1p"] = Field(description="Selects this op.")


class Clip(_Op):
    """x limited to [min, max]."""

    op: Literal["clip"] = Field(description="Selects this op.")
    min: float | None = Field(default=None, description="Lower bound; unset: none.")
    max: float | None = Field(default=None, description="Upper bound; unset: none.")


class Bucketize(_Op):
    """Bucket i holds boundaries[i-1] <= x < boundaries[i] (len(boundaries) + 1 buckets)."""

    op: Literal["bucketize"] = Field(description="Selects this op.")
    boundaries: list[float] = Field(min_length=1, description="Strictly increasing bucket boundaries.")
    output: OutputMode = Field(default="one_hot", description="one_hot: a value per bucket; index: the bucket number.")

    @field_validator("boundaries")
    @classmethod
    def _sorted(cls, v: list[float]) -> list[float]:
        if any(b <= a for a, b in pairwise(v)):
            raise ValueError("boundaries must be strictly increasing")
        return v


class Vocabulary(_Op):
    """Known values → their position; unknown ones → one of `oov_buckets` extra slots (by stable hash)."""

    op: Literal["vocabulary"] = Field(description="Selects this op.")
    values: list[str | int] = Field(min_length=1, description="The known values, each once.")
    oov_buckets: int = Field(default=1, ge=0, description="Extra slots unknown values hash into.")
    output: OutputMode = Field(default="one_hot", description="one_hot: a value per slot; index: the slot number.")

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

    op: Literal["hash"] = Field(description="Selects this op.")
    buckets: int = Field(ge=1, description="Number of hash buckets.")
    output: OutputMode = Field(default="index", description="index: the bucket number; one_hot: a value per bucket.")


class Datetime(_Op):
    """Parts of a UTC unix timestamp in seconds; `cyclical` encodes periodic parts as sin/cos pairs."""

    op: Literal["datetime"] = Field(description="Selects this op.")
    parts: list[Literal["hour", "minute", "weekday", "day", "month", "year", "dayofyear", "is_weekend"]] = Field(
        min_length=1, description="Parts to extract, one value each (two when cyclical)."
    )
    cyclical: bool = Field(default=False, description="Encode periodic parts (hour, month, ...) as a sin/cos pair.")


class Length(_Op):
    """Length of a text value in characters."""

    op: Literal["length"] = Field(description="Selects this op.")


class IsMissing(_Op):
    """1.0 where the raw value is missing (NaN / empty), before `fill`."""

    op: Literal["is_missing"] = Field(description="Selects this op.")


class Cross(_Strict):
    """Feature cross: stable hash of the values of two or more columns together, mod `buckets`."""

    op: Literal["cross"] = Field(description="Selects this op.")
    columns: list[str] = Field(min_length=2, description="The columns crossed (BYTES or integer, width 1).")
    buckets: int = Field(ge=1, description="Number of hash buckets.")
    output: OutputMode = Field(default="index", description="index: the bucket number; one_hot: a value per bucket.")

    def inputs(self) -> list[str]:
        return list(self.columns)


FeatureOp = Annotated[
    Identity
    | Standardize
    | MinMax
    | Log1p
    | Clip
    | Bucketize
    | Vocabulary
    | Hash
    | Datetime
    | Length
    | IsMissing
    | Cross,
    Field(discriminator="op"),
]


class DriftSetting(_Strict):
    """Input drift measured in the serving path: PSI of each feature over the last `window` rows against a
    reference profile (`repoforge drift profile`), exported as `repoforge_drift_psi{model,feature}`."""

    reference: str = Field(description="The reference profile (JSON from `repoforge drift profile`), spec-relative.")
    window: int = Field(default=10000, ge=100, description="Rows in the sliding window the PSI is computed over.")


class FeaturesPlugin(_Strict):
    """Feature engineering in Triton: raw columns in, one FP32 feature vector per row out."""

    kind: Literal["features"] = Field(description="Selects the features plugin.")
    columns: list[Column] = Field(min_length=1, description="Raw input columns, one model input each.")
    lookup: Lookup | None = Field(default=None, description="Online features from Redis, looked up per batch.")
    features: list[FeatureOp] = Field(min_length=1, description="Ops whose values, in order, form the output row.")
    output: str = Field(default="FEATURES", pattern=_TENSOR_NAME, description="Name of the FP32 output tensor.")
    drift: DriftSetting | None = Field(default=None, description="Drift of the raw input columns (PSI on /metrics).")
    # features → model in one Python model: an ensemble of the two pays a second stub hop (bench/PLUGINS_RESULTS.md)
    model: str | None = Field(
        default=None,
        description="A model the features feed, called by the plugin: its outputs are the plugin's; unset: the "
        "plugin answers the features (put it in an ensemble in front of a model instead).",
    )
    version: int = Field(default=-1, description="with `model`: its version; -1: the latest.")
    model_input: str | None = Field(
        default=None,
        pattern=_TENSOR_NAME,
        description="with `model`: its input that takes the features; unset: its only input.",
    )
    in_process: bool = Field(
        default=True,
        description="with `model`: run it inside the plugin's stub when it is an ONNX model of this build served by "
        "repoforge's onnxruntime runner (as the router does); false: through BLS.",
    )


# --------------------------------------------------------------------------------------------
# result cache
# --------------------------------------------------------------------------------------------
class CacheRedis(RedisConnection):
    """The Redis a result cache stores its entries in."""

    prefix: str = Field(default="repoforge:cache:", description="Prefix of the cache's Redis keys.")


class ResultCachePlugin(_Strict):
    """A cache in front of `model` (called via BLS): key = hash of the request's input tensors."""

    kind: Literal["result_cache"] = Field(description="Selects the result cache plugin.")
    model: str = Field(description="The model whose answers are cached (called via BLS).")
    version: int = Field(default=-1, description="Its version; -1: the latest.")
    backend: Literal["memory", "redis"] = Field(
        default="memory", description="memory: an LRU per instance; redis: shared by every instance."
    )
    max_entries: int = Field(  # memory backend: LRU bound per instance
        default=10000, ge=1, description="memory backend: most entries per instance (LRU)."
    )
    ttl_s: float | None = Field(  # None: entries never expire (LRU still bounds them)
        default=300, gt=0, description="Seconds an entry lives; null: never expires (the LRU still bounds memory)."
    )
    redis: CacheRedis | None = Field(  # backend: redis (defaults used when omitted)
        default=None, description="backend redis: the connection; unset: the defaults (127.0.0.1:6379/0)."
    )
    # backend redis: hot keys also kept in process (LRU, at most 5 s) to skip the Redis round trip; 0 = off
    near_cache_entries: int = Field(
        default=1024, ge=0, description="backend redis: hot keys also kept in process (LRU, <= 5 s); 0: off."
    )
    in_process: bool = Field(  # a miss's BLS hop costs about as much as the cache saves on a small model
        default=True,
        description="Answer misses inside the cache's stub when `model` is an ONNX model of this build served by "
        "repoforge's onnxruntime runner (as the router does); false: every miss through BLS.",
    )


class SemanticCachePlugin(_Strict):
    """Reuse the answer of a *similar* earlier row: cosine similarity of the `embedding` input >= `threshold`.

    Per row (the target must batch); an HNSW index (usearch, inner product on unit vectors) of at most
    `max_entries` rows per instance (oldest evicted first, expired after `ttl_s`). HNSW is approximate:
    a missed neighbour is a miss (the model answers), never a wrong answer.
    """

    kind: Literal["semantic_cache"] = Field(description="Selects the semantic cache plugin.")
    model: str = Field(description="The model whose answers are reused (called via BLS; it must batch).")
    version: int = Field(default=-1, description="Its version; -1: the latest.")
    embedding: str = Field(  # the FP32/FP16 input [d] compared between requests
        description="The model's FP32/FP16 input [d] compared between requests."
    )
    threshold: float = Field(default=0.95, gt=-1, le=1, description="Least cosine similarity that counts as a hit.")
    max_entries: int = Field(default=10000, ge=1, description="Most rows in the index per instance (oldest evicted).")
    ttl_s: float | None = Field(default=600, gt=0, description="Seconds a row lives; null: never expires.")


# --------------------------------------------------------------------------------------------
# router
# --------------------------------------------------------------------------------------------
class Route(_Strict):
    """A model the router sends traffic to; the routes share the traffic by weight."""

    model: str = Field(description="The model called (via BLS).")
    weight: float = Field(default=1.0, ge=0, description="Relative share of the traffic (all 0: equal shares).")
    version: int = Field(default=-1, description="Its version; -1: the latest.")


class Canary(_Strict):
    """Send `percent` % of the traffic to `model`; the routes share the rest by their weights."""

    model: str = Field(description="The canary model.")
    percent: float = Field(ge=0, le=100, description="Percent of the traffic it gets.")
    version: int = Field(default=-1, description="Its version; -1: the latest.")


class Shadow(_Strict):
    """A copy of (a sample of) the traffic goes to `model` in the background; only metrics see its answers."""

    model: str = Field(description="The shadow model.")
    percent: float = Field(default=100, ge=0, le=100, description="Percent of the traffic copied to it.")
    version: int = Field(default=-1, description="Its version; -1: the latest.")
    timeout_ms: int = Field(default=1000, ge=1, description="Timeout of each shadow call, in ms.")
    max_pending: int = Field(  # shadow batches waiting beyond this are dropped
        default=64, ge=1, description="Most shadow batches pending at once; more are dropped."
    )
    rtol: float = Field(default=1e-4, ge=0, description="Relative tolerance when comparing its answers (agreement).")
    atol: float = Field(default=1e-5, ge=0, description="Absolute tolerance when comparing its answers.")


class RouterPlugin(_Strict):
    """Route each request to one of several models (weights, canary, sticky key), optionally shadowing."""

    kind: Literal["router"] = Field(description="Selects the router plugin.")
    routes: list[Route] = Field(min_length=1, description="The models that share the traffic.")
    canary: Canary | None = Field(default=None, description="A model that gets a fixed percent of the traffic.")
    shadow: Shadow | None = Field(default=None, description="A model that gets a background copy of the traffic.")
    sticky_key: str | None = Field(  # input whose value (hash) picks the route: same key, same route
        default=None, description="Input whose value (hashed) picks the route: same key, same route. Unset: random."
    )
    route_output: str | None = Field(  # INT32 route index per row
        default="ROUTE", pattern=_TENSOR_NAME, description="INT32 output with the route index per row; null: none."
    )
    weights_input: str | None = Field(  # optional control input
        default="ROUTE_WEIGHTS",
        pattern=_TENSOR_NAME,
        description="Optional FP32 input that changes the weights at run time; null: none.",
    )
    drift: DriftSetting | None = Field(default=None, description="Drift of the router's inputs (PSI on /metrics).")
    in_process: bool = Field(  # a BLS call costs more than a small model (bench/RESULTS.md, "router")
        default=True,
        description="Run routes that are ONNX models of this build served by repoforge's onnxruntime runner inside "
        "the router (no BLS hop); false: every route through BLS.",
    )

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
    Discriminator(
        _kind,
        custom_error_type="plugin_kind",
        custom_error_message="`kind` must be one of features, result_cache, semantic_cache, router",
    ),
]


def parse_plugin(data: str | dict[str, Any]) -> FeaturesPlugin | ResultCachePlugin | SemanticCachePlugin | RouterPlugin:
    """A plugin config from its JSON (the `repoforge_plugin` parameter) or a dict."""
    adapter: TypeAdapter[Any] = TypeAdapter(PluginSpec)
    return adapter.validate_json(data) if isinstance(data, str) else adapter.validate_python(data)
