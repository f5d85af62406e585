"""repoforge's features library: declarative, vectorised feature transforms and online (Redis) lookups.

The code lives in `repoforge.runtime` (it ships inside every build); these modules re-export it. Pure numpy
(redis-py only for lookups), free of Triton and TorchServe imports, so the same compiled
pipeline runs in a Triton Python backend, a TorchServe handler, or a notebook.
"""

from repoforge.features.hashing import stable_hash
from repoforge.features.online import FeatureStore, OnlineLookup
from repoforge.features.pipeline import (
    FeatureConfigError,
    FeaturePipeline,
    datetime_parts,
    one_hot,
)

__all__ = [
    "FeatureConfigError",
    "FeaturePipeline",
    "FeatureStore",
    "OnlineLookup",
    "datetime_parts",
    "one_hot",
    "stable_hash",
]
