"""`doctor`: what this machine can serve (declared here; run by repoforge/cli/run/doctor.py)."""

from __future__ import annotations

from repoforge.cli.common import command, json_option


@command(run="repoforge.cli.run.doctor:doctor")
@json_option("Print the checks as JSON.")
def doctor(**_: object) -> None:
    """Report what this machine can serve (Triton, tracing, backends, perf_analyzer, GPU) and how to fill each gap,
    then the optional extras (Ray, OpenVINO, torch, TorchServe, promtool, Redis) and the commands each enables."""
