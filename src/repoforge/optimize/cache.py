"""A content-addressed cache of variants, gate results and timings, keyed by the hashes of their inputs.

A rebuild re-runs only what changed: a new threshold re-runs the gate, not the quantization; new calibration data
re-makes int8_static alone. Cached timings also keep a rebuild's selection stable (the same inputs ship the same
variant). Entries are written to a temp sibling and renamed into place, so two builds can share the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
import weakref
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

from repoforge.output import write_file_atomic
from repoforge.servers.triton_install import cache_root

#: Distributions whose version changes what a variant file or a figure is.
TOOLS = ("repoforge", "onnx", "onnxruntime", "onnxconverter-common", "openvino", "numpy", "torch")


def tool_versions() -> dict[str, str]:
    out = {}
    for name in TOOLS:
        try:
            out[name] = dist_version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    out["python"] = platform.python_version()
    return out


def key(*parts: Any) -> str:
    """sha256 of the parts as canonical JSON: the name of a cache entry."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class Cache:
    """`root/{files,records}/<key>`; disabled (nothing read, a temp root written) with `enabled=False`."""

    def __init__(self, root: Path | None = None, *, enabled: bool = True) -> None:
        if root is None:
            root = cache_root() / "optimize"
        self.enabled = enabled
        self.root = root if enabled else Path(tempfile.mkdtemp(prefix="repoforge-optimize-"))
        if not enabled:  # a scratch root lives as long as this object (the files it hands out are copied by then)
            weakref.finalize(self, shutil.rmtree, self.root, True)

    def file(self, k: str, make: Callable[[Path], dict[str, Any]]) -> tuple[Path, dict[str, Any], bool]:
        """The cached `model.onnx` of key `k` (made by `make(dest)` when missing), its metadata, and whether it was
        reused. `make` may raise; nothing is cached then."""
        entry = self.root / "files" / k
        meta = entry / "meta.json"
        if self.enabled and meta.is_file():
            return entry / "model.onnx", json.loads(meta.read_text()), True
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{k[:12]}-", dir=entry.parent))
        try:
            info = make(tmp / "model.onnx")
            (tmp / "meta.json").write_text(json.dumps(info, sort_keys=True))
            try:
                os.rename(tmp, entry)
            except OSError:  # another build put it there first: same key, same content
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return entry / "model.onnx", json.loads(meta.read_text()), False

    def record(self, k: str) -> dict[str, Any] | None:
        path = self.root / "records" / f"{k}.json"
        if self.enabled and path.is_file():
            data: dict[str, Any] = json.loads(path.read_text())
            return data
        return None

    def put(self, k: str, value: dict[str, Any]) -> None:
        path = self.root / "records" / f"{k}.json"
        write_file_atomic(path, json.dumps(value, sort_keys=True))
