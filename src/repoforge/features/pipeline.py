"""Compiled feature pipelines (the implementation runs inside servers: `repoforge.runtime.pipeline`)."""

from repoforge.runtime.pipeline import FeatureConfigError, FeaturePipeline, Prepared, datetime_parts, one_hot

__all__ = ["FeatureConfigError", "FeaturePipeline", "Prepared", "datetime_parts", "one_hot"]
