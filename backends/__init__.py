"""Triton Python backends shipped into generated repositories: one folder per backend (the onnxruntime and
TorchScript runners, and each plugin), each a thin `model.py`; the logic lives in `repoforge.runtime`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def model_file(runner: str) -> Path:
    """The `model.py` a build ships beside a model served by `runner` (a key of `repoforge.runtime.RUNNERS`)."""
    return Path(str(resources.files(__name__).joinpath(runner, "model.py")))
