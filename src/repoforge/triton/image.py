"""Which models of a Triton repository import repoforge in their Python backend (`deploy`'s build info)."""

from __future__ import annotations

import re

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
