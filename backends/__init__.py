"""Triton Python backends shipped into generated repositories: one folder per backend (the onnxruntime and
TorchScript runners, and each plugin), each a thin `model.py` that imports the runtime copy the build ships
beside it (`repoforge_runtime/`, from `repoforge.runtime`), never an installed repoforge."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from repoforge.runtime.names import PACKAGE as RUNTIME_PACKAGE


def model_file(runner: str) -> Path:
    """The `model.py` a build ships beside a model served by `runner` (a key of `repoforge.runtime.RUNNERS`)."""
    return Path(str(resources.files(__name__).joinpath(runner, "model.py")))


def runtime_files() -> list[tuple[str, Path]]:
    """(path inside the shipped package, source file) of every file of `repoforge.runtime`, sorted: the bytes a
    build ships, the same on every machine (no caches)."""
    import repoforge.runtime

    root = Path(repoforge.runtime.__file__).parent
    return sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def ship_runtime(parent: Path) -> Path:
    """Copy the runtime into `parent/repoforge_runtime/` (a model's version folder, or a .mar's staging folder)."""
    dest = parent / RUNTIME_PACKAGE
    for rel, src in runtime_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
    return dest
