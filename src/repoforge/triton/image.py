"""The container image a Triton repository runs in on a GPU host: which models need repoforge installed there,
and the Dockerfile FROM the NGC image that installs it (`serve --print-command`, `deploy k8s`)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path

import repoforge
from repoforge.servers.triton_install import NGC_IMAGE
from repoforge.triton.reader import RepoModel

#: A Python backend that needs the repoforge package where Triton runs it.
_IMPORTS_REPOFORGE = re.compile(r"^\s*(?:from|import)\s+repoforge\b", re.MULTILINE)


def models_needing_repoforge(models: list[RepoModel]) -> list[str]:
    """Models whose Python backend imports repoforge: a `--device cpu` build's ONNX/TorchScript runners (which
    also need onnxruntime or torch) and every plugin. The NGC image has neither, so they fail to load there."""
    return [
        m.name
        for m in models
        if any(_IMPORTS_REPOFORGE.search(f.read_text(errors="replace")) for f in sorted(m.path.glob("*/*.py")))
    ]


def runtime_dockerfile(extra_packages: Sequence[str] = ()) -> tuple[str, Path | None]:
    """A Dockerfile FROM the NGC image with this repoforge (and so onnxruntime, numpy, redis, ...) and
    `extra_packages` installed in the Python its python backend runs, and the build context it needs: the source
    checkout repoforge runs from, or None (no context) when it was installed from a package, whose same version
    is installed then."""
    src = Path(repoforge.__file__).resolve().parent.parent
    extra = "".join(f" {shlex.quote(p)}" for p in extra_packages)
    if src.name == "src" and (src.parent / "pyproject.toml").is_file() and (src.parent / "README.md").is_file():
        return (
            f"FROM {NGC_IMAGE}\n"
            "COPY pyproject.toml README.md /opt/repoforge/\n"
            "COPY src /opt/repoforge/src\n"
            f"RUN python3 -m pip install --no-cache-dir /opt/repoforge{extra}\n"
        ), src.parent
    return (
        f"FROM {NGC_IMAGE}\nRUN python3 -m pip install --no-cache-dir repoforge=={repoforge.__version__}{extra}\n"
    ), None
