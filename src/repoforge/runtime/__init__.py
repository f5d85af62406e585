"""Code that runs inside servers (Triton Python backend stubs, TorchServe workers).

Self-contained: it imports only the standard library, numpy and, inside the code that needs them, the optional
packages its models use (onnxruntime, redis, usearch, torch; `ts` in TorchServe). Every import inside the package
is relative, so the same files work as `repoforge.runtime` (build time, tests) and as the copy each build ships
under the name `repoforge_runtime` (next to every generated model.py, at the root of every .mar): a server runs
the bytes of its build, never an installed repoforge. An import-linter contract keeps it a leaf.
"""

from typing import Any

from .lazy import own


class _Lazy:
    """Import a runner class only when a model asks for it (torch is heavy and optional)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def load(self) -> type:
        cls: type = own(self.module, self.name)
        return cls

    def __call__(self) -> Any:
        return self.load()()


RUNNERS: dict[str, _Lazy] = {
    "onnxruntime": _Lazy(".onnx_runner", "OnnxRunner"),
    "torchscript": _Lazy(".torchscript_runner", "TorchScriptRunner"),
    # plugins (spec `plugin:`), configured by the `repoforge_plugin` parameter
    "features": _Lazy(".plugins.features", "FeaturesRunner"),
    "result_cache": _Lazy(".plugins.result_cache", "ResultCacheRunner"),
    "semantic_cache": _Lazy(".plugins.semantic_cache", "SemanticCacheRunner"),
    "router": _Lazy(".plugins.router", "RouterRunner"),
}


def triton_python_model(runner: str) -> type:
    """The class a shipped model.py serves as `TritonPythonModel` for `runner`, imported when Triton loads it:
    the runner, with its failed requests counted in repoforge_model_errors_total{model,version}. (.errors imports
    numpy through the Triton stub; loaded here, the package itself stays light for the names build time reads.)"""
    counting = own(".errors", "counting")
    return counting(RUNNERS[runner].load())
