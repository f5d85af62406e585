"""Failed requests counted where they happen: `repoforge_model_errors_total{model,version}`.

Triton 2.51 leaves `nv_inference_request_failure` at 0 when a Python model answers a request with an error
response, so error-rate alerts on it never fire for a Python model. Every Python model of a build (runners,
plugins, and a user's model through the generated wrapper) is served through `counting`, which counts the
error responses of each `execute` (and every request of an execute that raises) in a custom counter, and the
error responses a model sends itself through a response sender (decoupled models, and any model whose `execute`
returns None), as they are sent, from whichever thread sends them.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

from .metrics import Metrics
from .names import MODEL_ERRORS, MODEL_ERRORS_HELP, USER_MODEL_FILE
from .triton_model import pb_utils

#: The counter of the model this stub process serves (Triton runs one model instance per stub process), for the
#: responses it sends through response senders.
_SENT: ErrorCounter | None = None


class ErrorCounter:
    """repoforge_model_errors_total for one model version (created at 0 when the model loads, so a rate exists)."""

    def __init__(self, model: str, version: str) -> None:
        self.metrics = Metrics(model)
        self.version = str(version)
        self.add(0)

    def add(self, n: int) -> None:
        self.metrics.inc(MODEL_ERRORS, MODEL_ERRORS_HELP, float(n), version=self.version)

    def count(self, responses: Any) -> int:
        """Add the error responses among `responses` (None for a decoupled model: it sends them itself)."""
        if not responses:
            return 0
        failed = 0
        for r in responses:
            try:
                failed += bool(r.has_error())
            except Exception:  # noqa: BLE001 - not an InferenceResponse: nothing to count
                pass
        if failed:
            self.add(failed)
        return failed


def _sender_class() -> Any:
    """The stub's response sender class: the stub's embedded C++ module defines it (Triton 2.51's
    triton_python_backend_utils does not re-export it)."""
    found = getattr(pb_utils(), "InferenceResponseSender", None)
    return found if found is not None else importlib.import_module("c_python_backend_utils").InferenceResponseSender


def count_sent_errors(counter: ErrorCounter, sender_class: Any = None) -> bool:
    """Count the error responses this process's model sends through `InferenceResponseSender.send` in `counter`.
    The sender class is wrapped once per process (the stub's own C++ class, or `sender_class`), and counts after
    the send succeeds, so a response the server refused is not counted. False where there is no sender class."""
    global _SENT
    _SENT = counter
    try:
        cls = sender_class if sender_class is not None else _sender_class()
    except Exception:  # noqa: BLE001 - outside the stub (or an old one): nothing to wrap
        return False
    if getattr(cls.send, "_repoforge_counted", False):
        return True
    original = cls.send

    def send(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        response = args[0] if args else kwargs.get("response")
        sent = _SENT
        if response is not None and sent is not None:
            sent.count([response])
        return result

    send._repoforge_counted = True  # type: ignore[attr-defined]
    send.__doc__ = original.__doc__
    cls.send = send
    return True


def counting(cls: type) -> type:
    """`cls` (a TritonPythonModel) with its failed requests counted; everything else is `cls`'s own."""

    class Counted(cls):
        def initialize(self, args: dict[str, str]) -> Any:
            self._repoforge_errors = ErrorCounter(args.get("model_name", ""), args.get("model_version", ""))
            count_sent_errors(self._repoforge_errors)
            init = getattr(super(), "initialize", None)
            return init(args) if init is not None else None

        def execute(self, requests: list[Any]) -> Any:
            errors: ErrorCounter | None = getattr(self, "_repoforge_errors", None)
            try:
                responses = super().execute(requests)
            except Exception:
                if errors is not None:
                    errors.add(len(requests))
                raise
            if errors is not None:
                errors.count(responses)
            return responses

    Counted.__name__ = Counted.__qualname__ = cls.__name__
    Counted.__doc__ = cls.__doc__
    Counted.__module__ = cls.__module__
    return Counted


def user_model(wrapper_file: str) -> type:
    """The TritonPythonModel of the user's model beside `wrapper_file` (repoforge_user_model.py: the user's model.py,
    renamed by the build), with its failed requests counted. The user's module is loaded under its own name, from
    the same folder (which the stub put on sys.path), so its imports and `__file__`-relative paths still work."""
    folder = os.path.dirname(os.path.abspath(wrapper_file))
    name = f"repoforge_user_model_{os.path.basename(os.path.dirname(folder))}_{os.path.basename(folder)}"
    spec = importlib.util.spec_from_file_location(name, os.path.join(folder, USER_MODEL_FILE))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {USER_MODEL_FILE} from {folder}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return counting(module.TritonPythonModel)
