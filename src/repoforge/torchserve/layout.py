"""What a TorchServe build folder looks like, for the tools that must recognise one without building it (lint and
import say "this is a TorchServe build" instead of reading it as a Triton repository)."""

from __future__ import annotations

from pathlib import Path


def looks_like_torchserve_output(path: Path) -> bool:
    return (path / "config.properties").is_file() and (path / "model-store").is_dir()
