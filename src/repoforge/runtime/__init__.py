"""Code that runs inside servers (Triton Python backend stubs, TorchServe workers).

Imported from the environment the server runs in, so the files shipped into a repository stay thin.
"""

from typing import Any


class _Lazy:
    """Import a runner class only when a model asks for it (torch is heavy and optional)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self) -> Any:
        import importlib

        return getattr(importlib.import_module(self.module), self.name)()


RUNNERS: dict[str, Any] = {
    "onnxruntime": _Lazy("repoforge.runtime.onnx_runner", "OnnxRunner"),
    "torchscript": _Lazy("repoforge.runtime.torchscript_runner", "TorchScriptRunner"),
    # plugins (spec `plugin:`), configured by the `repoforge_plugin` parameter
    "features": _Lazy("repoforge.runtime.plugins.features", "FeaturesRunner"),
    "result_cache": _Lazy("repoforge.runtime.plugins.result_cache", "ResultCacheRunner"),
    "semantic_cache": _Lazy("repoforge.runtime.plugins.semantic_cache", "SemanticCacheRunner"),
    "router": _Lazy("repoforge.runtime.plugins.router", "RouterRunner"),
}


def triton_python_model(runner: str) -> type:
    """The class a shipped backends/<runner>/model.py serves as `TritonPythonModel`, imported when Triton loads it."""
    factory = RUNNERS[runner]
    import importlib

    cls: type = getattr(importlib.import_module(factory.module), factory.name)
    return cls
