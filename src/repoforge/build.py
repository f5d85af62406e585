"""`repoforge build`: spec → plan → repository, as one function the CLI and Python users share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from repoforge.contract import Device, Target
from repoforge.output import BuildResult
from repoforge.spec import load_spec
from repoforge.targets import get_target


def build(
    spec: str | Path,
    output: str | Path,
    *,
    target: Target = "triton",
    device: Device | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    pack_env: bool = False,
) -> BuildResult:
    """Validate `spec` completely, then write the repository atomically to `output` (a Triton model repository, or
    TorchServe archives with `target="torchserve"`).

    `pack_env` (Triton): each Python model that declares packages (`python_requirements` in the lock file) gets a
    custom execution environment holding them, packed from this Python's installed packages, and its config.pbtxt
    names it (EXECUTION_ENV_PATH), so the stock server image needs nothing installed for it.

    Raises SpecError (nothing written) for a wrong spec and BuildError when `output` exists without `force`.
    """
    loaded = load_spec(spec)
    return get_target(target).build(
        loaded, Path(output), device=device, force=force, progress=progress or (lambda _m: None), pack_env=pack_env
    )
