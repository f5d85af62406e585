"""What each Python model of a build needs at serve time beyond the stock server image (`python_requirements` in
`repoforge.lock.json`; deploy and image read it, TorchServe archives carry it as requirements.txt).

The stock images already have numpy (Triton's python backend needs it; TorchServe's image ships it with torch)
and the runtime itself ships inside the build, so only the optional packages a model's code imports are listed:
onnxruntime for a Python ONNX runner, torch for the TorchScript runner (Triton), redis for Redis lookups and
caches, usearch for the semantic cache. The requirement strings carry repoforge's own pins (its package
metadata), so a deployed model gets the versions repoforge was tested with.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.metadata import PackageNotFoundError, requires
from typing import Any

from repoforge.plan_base import ModelPlan, RepositoryPlan

LOCK_KEY = "python_requirements"
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
#: used when repoforge's metadata is not at hand (a source checkout without an install)
_FALLBACK = {
    "onnxruntime": "onnxruntime>=1.17",
    "redis": "redis>=5,<9",
    "usearch": "usearch>=2.26,<3",
    "torch": "torch==2.13.0",
}


@cache
def _pins() -> dict[str, str]:
    """package name → its requirement string in repoforge's metadata (markers and extras dropped)."""
    out = dict(_FALLBACK)
    try:
        lines = requires("repoforge") or []
    except PackageNotFoundError:
        return out
    for line in lines:
        spec = line.split(";")[0].strip()
        m = _NAME.match(spec)
        if m and m.group(1).lower() in _FALLBACK:
            out[m.group(1).lower()] = re.sub(r"\[[^]]*\]", "", spec).replace(" ", "")
    return out


def requirement(name: str) -> str:
    return _pins()[name]


def _plugin_needs(plugin: Any) -> list[str]:
    kind = getattr(plugin, "kind", None)
    if kind == "features" and getattr(plugin, "lookup", None) is not None:
        return ["redis"]
    if kind == "result_cache" and getattr(plugin, "backend", "") == "redis":
        return ["redis"]
    if kind == "semantic_cache":
        return ["usearch"]
    return []


def triton_model_needs(m: ModelPlan) -> list[str]:
    """Packages (names) the model's repoforge Python code imports beyond the stock Triton image."""
    runner = m.serving.runner
    if runner == "onnxruntime":
        return ["onnxruntime"]
    if runner == "torchscript":
        return ["torch"]
    if m.spec.plugin is not None:
        return _plugin_needs(m.spec.plugin)
    return []


def torchserve_model_needs(m: ModelPlan, own_handler: bool) -> list[str]:
    """Packages repoforge's handler needs for the model beyond the stock TorchServe image (torch, numpy are there).
    A handler of the user's own declares its own (its `requirements.txt` is not guessed)."""
    if own_handler:
        return []
    if m.spec.plugin is not None:
        return _plugin_needs(m.spec.plugin)
    return ["onnxruntime"] if m.format == "onnx" else []


def lock_entry(needs: dict[str, list[str]], declared: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """{model: [requirement strings]} for the models that need something (sorted; absent: nothing). `needs`: names
    of the packages repoforge's code imports (pinned here); `declared`: the user's `requirements:`, as written."""
    out: dict[str, list[str]] = {}
    for name in sorted(set(needs) | set(declared or {})):
        reqs = {requirement(n) for n in needs.get(name, [])} | set((declared or {}).get(name, []))
        if reqs:
            out[name] = sorted(reqs)
    return out


def triton_requirements(plan: RepositoryPlan) -> dict[str, list[str]]:
    return lock_entry(
        {m.name: triton_model_needs(m) for m in plan.models},
        {m.name: list(m.spec.requirements) for m in plan.models},
    )
