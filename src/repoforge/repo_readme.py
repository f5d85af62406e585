"""The README.md written into every built repository: how to launch it, smoke-test it with curl and gate its
speed, with the model's own input names and shapes (rendered from `model_repo_templates/README.md.j2`)."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from typing import Any

from repoforge import __version__
from repoforge.plan import ModelPlan, RepositoryPlan
from repoforge.servers.triton_install import NGC_IMAGE  # the image whose Triton matches the bundled 2.51
from repoforge.templates import render

REPO_README = "README.md"


def _zeros(t: Any, batched: bool) -> tuple[list[int], list[Any]]:
    """One all-zero row of tensor `t` (variable dims become 1): its shape and flat data."""
    dims = [1 if d < 0 else d for d in t.dims]
    shape = ([1] if batched else []) + dims
    n = 1
    for d in shape:
        n *= d
    zero: Any = "" if t.dtype == "BYTES" else (False if t.dtype == "BOOL" else 0)
    return shape, [zero] * n


def triton_smoke_body(m: ModelPlan) -> str:
    """A KServe v2 JSON request of zeros for every required input of `m`."""
    inputs = []
    for t in m.inputs:
        if t.optional:
            continue
        shape, data = _zeros(t, m.max_batch_size > 0)
        inputs.append({"name": t.name, "shape": shape, "datatype": t.dtype, "data": data})
    return json.dumps({"inputs": inputs}, separators=(",", ":"))


def torchserve_smoke_body(m: ModelPlan) -> str:
    """repoforge's handler's JSON body (`{"data": {"<input>": rows}}`) of one zero row per input."""
    data = {}
    for t in m.inputs:
        if t.optional:
            continue
        dims = [1 if d < 0 else d for d in t.dims]
        row: Any = "" if t.dtype == "BYTES" else 0
        for d in reversed(dims):
            row = [row] * d
        data[t.name] = [row]
    return json.dumps({"data": data}, separators=(",", ":"))


def _smokable(m: ModelPlan) -> bool:
    decoupled = bool(m.spec.model_transaction_policy and m.spec.model_transaction_policy.decoupled)
    return bool(m.inputs) and not m.spec.sequence_batching and not decoupled


def _render(
    plan: RepositoryPlan, target: str, models: list[ModelPlan], body: Callable[[ModelPlan], str], **extra: Any
) -> str:
    rows = [{"name": m.name, "format": m.format, "body": shlex.quote(body(m)), "smoke": _smokable(m)} for m in models]
    return render("README.md", target=target, repository=plan.name, device=plan.device, version=__version__,
                  models=rows, perf_model=next((r["name"] for r in rows if r["smoke"]), None), **extra)  # fmt: skip


def triton_readme(plan: RepositoryPlan) -> str:
    python_models = [m.name for m in plan.models if m.serving.backend == "python"]  # the rest: native backends
    return _render(plan, "triton", plan.models, triton_smoke_body, image=NGC_IMAGE, python_models=python_models)


def torchserve_readme(plan: RepositoryPlan, archives: list[str], workflows: list[str]) -> str:
    """`archives`: the models archived as .mar (ensembles become the `workflows`)."""
    return _render(plan, "torchserve", [plan.model(n) for n in archives], torchserve_smoke_body, workflows=workflows)
