"""Triton Python backends for the spec's `plugin:` models: features, result_cache, semantic_cache and router.

Each runner reads its config from the `repoforge_plugin` parameter (plain JSON, read by `..config`),
calls other models with BLS (`pb_utils.InferenceRequest(...).exec()`), and exports custom metrics
with `pb_utils.MetricFamily` (they appear on Triton's /metrics beside the nv_* ones):

- `repoforge_feature_lookup_total{model,result=hit|miss|error|skipped}`
- `repoforge_cache_requests_total{model,result=hit|miss}`, `repoforge_cache_latency_us{model,result}` (histogram),
  `repoforge_cache_entries{model}`
- `repoforge_semantic_cache_rows_total{model,result=hit|miss}`, `repoforge_semantic_cache_entries{model}`
- `repoforge_router_rows_total{model,route}`, `repoforge_router_weight{model,route}`,
  `repoforge_shadow_rows_total{model,shadow,outcome=agree|disagree}`,
  `repoforge_shadow_batches_total{model,shadow,outcome=ok|error|dropped}`, `repoforge_shadow_latency_us{model,shadow}`
- with `drift:` (features, router): `repoforge_drift_psi{model,feature}` (gauge; `..drift`)
"""

from ._common import (
    LATENCY_BUCKETS_US,
    Metrics,
    call_model,
    plugin_config,
)
from .features import FeaturesRunner
from .result_cache import (
    NEAR_CACHE_TTL_S,
    MemoryCache,
    RedisCache,
    ResultCacheRunner,
    cache_key,
    pack_arrays,
    unpack_arrays,
)
from .router import RouterRunner, route_rows, sticky_draws
from .semantic_cache import SemanticCacheRunner, SemanticIndex

__all__ = [
    "LATENCY_BUCKETS_US",
    "NEAR_CACHE_TTL_S",
    "FeaturesRunner",
    "MemoryCache",
    "Metrics",
    "RedisCache",
    "ResultCacheRunner",
    "RouterRunner",
    "SemanticCacheRunner",
    "SemanticIndex",
    "cache_key",
    "call_model",
    "pack_arrays",
    "plugin_config",
    "route_rows",
    "sticky_draws",
    "unpack_arrays",
]
