"""repoforge's TorchServe handler. It runs inside TorchServe's workers, so it lives in the runtime
(`repoforge.runtime.torchserve.handler`, shipped in every .mar as `repoforge_runtime`); re-exported here."""

from repoforge.runtime.torchserve.handler import (
    BATCH_HEADER,
    CACHE_HEADER,
    FeaturesModel,
    HandlerConfig,
    LRUCache,
    OnnxModel,
    RepoforgeHandler,
    Request,
    RequestError,
    Result,
    Tensor,
    TorchModel,
    load_model,
    request_key,
)

__all__ = [
    "BATCH_HEADER",
    "CACHE_HEADER",
    "FeaturesModel",
    "HandlerConfig",
    "LRUCache",
    "OnnxModel",
    "RepoforgeHandler",
    "Request",
    "RequestError",
    "Result",
    "Tensor",
    "TorchModel",
    "load_model",
    "request_key",
]
