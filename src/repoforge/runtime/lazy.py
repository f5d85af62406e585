"""The runtime's loaders: the packages its models may need, imported when a model needs them.

Why here and not repoforge/lazy.py: the runtime runs inside servers as its own copy (`repoforge_runtime`) and
imports nothing of the rest of repoforge. A server's Python has numpy and the standard library; the rest is
there only where a model uses it (torch in a TorchServe worker, redis for an online lookup or a result cache,
usearch for a semantic cache), so each is imported on first use, raising its ImportError where it is missing.
An import inside a function anywhere else in the runtime fails scripts/check_import_cycles.py.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


def own(module: str, name: str) -> Any:
    """`name` of the runtime's own `module` (relative: ".onnx_runner"), imported on first use: a runner's module
    imports its model's packages, so the runners a build does not use are never imported."""
    return getattr(importlib.import_module(module, __package__), name)


def torch() -> ModuleType:
    """torch: TorchScript and eager models (seconds to import; absent from Triton's Python stubs)."""
    import torch

    return torch


def onnxruntime() -> ModuleType:
    """onnxruntime: ONNX models served by the runtime's own runner."""
    import onnxruntime

    return onnxruntime


def redis() -> ModuleType:
    """redis, with redis.backoff and redis.retry: online lookups and the result cache."""
    import redis
    import redis.backoff
    import redis.retry

    return redis


def usearch_index() -> ModuleType:
    """usearch.index: the semantic cache's vector index."""
    import usearch.index

    return usearch.index
