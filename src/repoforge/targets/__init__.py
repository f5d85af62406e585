"""The target seam: everything a command needs to know about Triton or TorchServe, behind one protocol.

The commands (`build`, `serve`, `validate`, `perf`, `batch`, `rollout`, `deploy`) ask `get_target(name)` (from
`--target`) or `target_of(path)` (a built folder) once, then call the target; none of them asks which target it
has. Where a target cannot do something, `Target.cannot` says why. A new target is one package here
(`targets/<name>/`, its `target.py` implementing `repoforge.targets.types.Target`), added to `TARGETS`.
"""

from __future__ import annotations

from pathlib import Path

from repoforge.contract import Target as TargetName
from repoforge.deploy.build_info import BuildInfo, read_lock
from repoforge.errors import BuildError
from repoforge.targets.torchserve.target import TorchServeTarget
from repoforge.targets.triton.target import TritonTarget
from repoforge.targets.types import Progress, Target

#: The target a running server reached by URL is (Triton's protocol), and a folder no target recognises.
DEFAULT_TARGET: TargetName = "triton"

TARGETS: dict[str, Target] = {"triton": TritonTarget(), "torchserve": TorchServeTarget()}
TARGET_NAMES: tuple[str, ...] = tuple(TARGETS)


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; expected one of {', '.join(TARGETS)}") from None


def target_of(path: str | Path) -> Target:
    """The target whose build `path` is: another target's when it recognises the folder, else Triton's (a plain
    model repository, also one repoforge did not write)."""
    p = Path(path)
    for target in TARGETS.values():
        if target is not TARGETS[DEFAULT_TARGET] and target.recognises(p):
            return target
    return TARGETS[DEFAULT_TARGET]


def target_at(http_url: str) -> Target:
    """The target whose server answers at `http_url` (host:port): another target's when its server answers there,
    else Triton's (whose commands then say what they cannot reach)."""
    for target in TARGETS.values():
        if target is not TARGETS[DEFAULT_TARGET] and target.serves_at(http_url):
            return target
    return TARGETS[DEFAULT_TARGET]


def read_build(path: Path) -> BuildInfo:
    """The build at `path` as `deploy` and `image` need it: its lock file, then what its target adds (the models
    that run, the features its configs turn on, its stock server image). BuildError (exit 2) for a folder
    repoforge did not build."""
    info = read_lock(path)
    target = TARGETS.get(info.target)
    if target is None:
        raise BuildError(f"{path} was built for target {info.target!r}, which this repoforge does not know")
    return target.describe_build(info)


__all__ = [
    "DEFAULT_TARGET",
    "TARGETS",
    "TARGET_NAMES",
    "Progress",
    "Target",
    "TargetName",
    "get_target",
    "read_build",
    "target_at",
    "target_of",
]
