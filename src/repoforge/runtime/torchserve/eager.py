"""Load an eager PyTorch model: the nn.Module class from a user's file plus a state_dict.

Shared by the build (which loads every state_dict once in-process, so a state_dict that does not
match its class fails the build naming the model instead of crashing a TorchServe worker later) and
by repoforge's TorchServe handler. Imports torch lazily: the rest of repoforge does not need it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

from .. import lazy


class EagerLoadError(ValueError):
    """The class file or the state_dict cannot make a model; the message says what to fix."""


def module_classes(class_file: Path) -> list[type]:
    """The torch.nn.Module subclasses defined in `class_file` (imported under a private module name)."""
    torch = lazy.torch()

    digest = hashlib.sha256(str(class_file.resolve()).encode()).hexdigest()[:12]
    name = f"_repoforge_model_{class_file.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, class_file)
    if spec is None or spec.loader is None:
        raise EagerLoadError(f"cannot import {class_file.name}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    # The class file may import siblings shipped next to it.
    parent = str(class_file.resolve().parent)
    added = parent not in sys.path
    if added:
        sys.path.insert(0, parent)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise EagerLoadError(f"importing {class_file.name} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if added:
            sys.path.remove(parent)
    return [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if obj.__module__ == name and issubclass(obj, torch.nn.Module)
    ]


def model_class(class_file: Path, class_name: str | None = None) -> type:
    """The one nn.Module class of `class_file` (or the one called `class_name`)."""
    classes = module_classes(class_file)
    if class_name:
        chosen = [c for c in classes if c.__name__ == class_name]
        if not chosen:
            raise EagerLoadError(
                f"{class_file.name} defines no nn.Module class '{class_name}'; it defines "
                f"{', '.join(c.__name__ for c in classes) or 'none'}"
            )
        return chosen[0]
    if len(classes) != 1:
        found = ", ".join(c.__name__ for c in classes) or "none"
        raise EagerLoadError(
            f"{class_file.name} must define exactly one torch.nn.Module class (found: {found}); "
            "write it as `model_file: file.py:ClassName` to choose one"
        )
    return classes[0]


def split_model_file(value: str) -> tuple[str, str | None]:
    """`net.py:TinyNet` → ("net.py", "TinyNet"); `net.py` → ("net.py", None)."""
    path, _, cls = value.partition(":")
    return path, (cls or None)


def load_eager(class_file: Path, state_dict: Path, *, class_name: str | None = None, device: Any = "cpu") -> Any:
    """Instantiate the class (no arguments) and load the state_dict strictly; returns the module in eval mode."""
    torch = lazy.torch()

    cls = model_class(class_file, class_name)
    try:
        model = cls()
    except Exception as exc:
        raise EagerLoadError(
            f"{cls.__name__}() failed: {type(exc).__name__}: {exc} (the class must be constructible without arguments)"
        ) from exc
    try:
        weights = torch.load(state_dict, map_location=device, weights_only=True)
    except Exception as exc:
        raise EagerLoadError(
            f"{state_dict.name} is not a loadable state_dict: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        ) from exc
    if isinstance(weights, torch.nn.Module):
        weights = weights.state_dict()
    if not isinstance(weights, dict):
        raise EagerLoadError(
            f"{state_dict.name} holds a {type(weights).__name__}, not a state_dict "
            "(save it with torch.save(model.state_dict(), path))"
        )
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise EagerLoadError(
            f"{state_dict.name} does not match class {cls.__name__} from {class_file.name}: {detail}"
        ) from exc
    return model.to(device).eval()
