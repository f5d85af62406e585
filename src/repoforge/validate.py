"""`repoforge validate`: load a build in its target's real server (or reach one already running), check every model
is READY and answers a smoke request, and compare the answers with in-process references. The checks themselves
are each target's (`repoforge.targets`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from repoforge.targets import DEFAULT_TARGET, get_target, target_of
from repoforge.targets.answers import judge_answer
from repoforge.targets.types import SMOKE_TIMEOUT_S, ModelCheck, ValidationReport

__all__ = ["ModelCheck", "ValidationReport", "judge_answer", "validate"]


def validate(
    repository: str | Path,
    *,
    url: str | None = None,
    grpc_url: str | None = None,
    tritonserver: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    timeout: float = SMOKE_TIMEOUT_S,
) -> ValidationReport:
    """Validate `repository` in a Triton at `url`, or in its target's server started (and stopped) for the purpose;
    every server call is bounded, and each model gets `timeout` seconds to answer (all responses of a streaming
    model)."""
    say = progress or (lambda _m: None)
    if url is not None:
        return get_target(DEFAULT_TARGET).validate_running(
            Path(repository), url=url, grpc_url=grpc_url, progress=say, timeout=timeout
        )
    return target_of(repository).validate(Path(repository), progress=say, tritonserver=tritonserver, timeout=timeout)
