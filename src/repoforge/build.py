"""`repoforge build`: spec → plan → repository, as one function the CLI and Python users share."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Literal

from repoforge.plan import Device, make_plan
from repoforge.spec import load_spec
from repoforge.triton.repository import BuildResult, write_repository

Target = Literal["triton", "torchserve"]


def build(spec: str | Path, output: str | Path, *, target: Target = "triton", device: Device | None = None,
          force: bool = False, progress: Callable[[str], None] | None = None) -> BuildResult:
    """Validate `spec` completely, then write the repository atomically to `output`.

    Raises SpecError (nothing written) for a wrong spec and BuildError when `output` exists without `force`.
    """
    loaded = load_spec(spec)
    if target == "torchserve":  # .mar archives + config.properties (repoforge.torchserve)
        from repoforge.torchserve.builder import build_torchserve

        return build_torchserve(loaded, Path(output), force=force, progress=progress, device=device)  # type: ignore[return-value]
    plan = make_plan(loaded, device)
    for w in plan.warnings:
        (progress or (lambda _m: None))(f"warning: {w}")
    return write_repository(plan, Path(output), force=force, progress=progress)
