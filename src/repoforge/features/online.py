"""Online features from Redis (the implementation runs inside servers: `repoforge.runtime.online`)."""

from repoforge.runtime.online import FeatureStore, LookupStats, OnlineLookup, encode_values, redis_client

__all__ = ["FeatureStore", "LookupStats", "OnlineLookup", "encode_values", "redis_client"]
