"""repoforge: one declarative spec → a Triton model repository (or TorchServe archives), proven in a real server.

The commands as Python functions, imported on first use (so `import repoforge` stays cheap):

    import repoforge
    result = repoforge.build("spec.yaml", "repo", device="cpu")
    report = repoforge.lint("repo")

`build`, `validate`, `serve`, `perf`, `lint`, `optimize`, `deploy`, `batch` and `rollout` share their names with
the subpackages that implement them (`repoforge.build` is also a module). So that both keep working, whichever is
imported first, each of those names gives its module made callable: calling it calls the command's function,
and its attributes are the module's (`import repoforge.batch.local` and `repoforge.build.build` still work).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

#: Each public name → (module, function) of the command it calls.
_FACE: dict[str, tuple[str, str]] = {
    "build": ("repoforge.build", "build"),
    "validate": ("repoforge.validate", "validate"),
    "serve": ("repoforge.serve", "serve"),
    "perf": ("repoforge.perf.command", "perf"),
    "lint": ("repoforge.lint", "lint_repository"),
    "import_repository": ("repoforge.importer", "import_repository"),
    "optimize": ("repoforge.optimize", "optimize"),
    "deploy": ("repoforge.deploy.command", "deploy_k8s"),
    "batch": ("repoforge.batch.command", "batch"),
    "rollout": ("repoforge.rollout.command", "rollout"),
}

__all__ = [*_FACE, "__version__"]


def _command(name: str) -> Any:
    module, function = _FACE[name]
    return getattr(importlib.import_module(module), function)


class _CommandModule(types.ModuleType):
    """A subpackage that is also its command: calling it calls the function `_FACE` names."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _command(self.__name__.rpartition(".")[2])(*args, **kwargs)


def _shared(name: str) -> property:
    """`repoforge.<name>`: the submodule, imported on first use and made callable. Setting it (the import
    system does, when it imports the submodule) is ignored: the module is read from sys.modules."""

    def get(_self: types.ModuleType) -> types.ModuleType:
        mod = importlib.import_module(f"{__name__}.{name}")
        if not isinstance(mod, _CommandModule):
            mod.__class__ = _CommandModule
        return mod

    return property(get, lambda _self, _value: None)


class _Package(types.ModuleType):
    """This package, with the command names that are also submodules as properties."""


for _name in _FACE.keys() - {"import_repository"}:  # the names that are also submodules
    setattr(_Package, _name, _shared(_name))
sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    """The command names that are not submodules (import_repository), imported on first use."""
    if name in _FACE:
        return _command(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_FACE})
