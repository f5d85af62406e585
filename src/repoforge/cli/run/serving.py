"""What `validate` and `serve` run: the implementations, imported only when a command runs (declared, with their options
and help, in repoforge/cli/serving.py, which `--help` and usage errors import alone)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from repoforge.cli.common import fail, progress
from repoforge.errors import RepoforgeError
from repoforge.serve import Endpoints, docker_lines
from repoforge.serve import serve as do_serve
from repoforge.targets import target_of
from repoforge.validate import validate as do_validate


def validate(
    repository: Path, url: str | None, grpc_url: str | None, tritonserver: Path | None, timeout: float, as_json: bool
) -> None:
    """`repoforge validate` once its arguments are parsed."""
    report = do_validate(
        repository,
        url=url,
        grpc_url=grpc_url,
        tritonserver=tritonserver,
        progress=progress(as_json),
        timeout=timeout,
    )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    if not report.ok:
        failed = ", ".join(sorted({c.name for c in report.failures()}))
        fail(RepoforgeError(f"{len(report.failures())} check(s) failed: {failed}"), 1)
    if not as_json:
        click.echo(f"all {len(report.checks)} model version(s) READY and answering")


def serve(
    repository: Path,
    host: str,
    http_port: int | None,
    grpc_port: int | None,
    metrics_port: int | None,
    ports: str,
    tritonserver: Path | None,
    cache_size: int | None,
    model_control: str,
    load_models: tuple[str, ...],
    print_command: bool,
) -> None:
    """`repoforge serve` once its arguments are parsed."""
    if print_command:
        why = target_of(repository).cannot("print_command", repository)
        if why:
            raise click.UsageError(why)
        click.echo(
            docker_lines(
                repository,
                http_port=http_port,
                grpc_port=grpc_port,
                metrics_port=metrics_port,
                cache_size_bytes=cache_size,
            )
        )
        return

    def ready(ep: Endpoints) -> None:
        click.echo(f"{ep.server} is ready (Ctrl-C to stop)")
        for line in ep.lines():
            click.echo(f"  {line}")

    do_serve(
        repository,
        on_ready=ready,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        auto_ports=ports == "auto",
        tritonserver=tritonserver,
        cache_size_bytes=cache_size,
        model_control=model_control,
        load_models=list(load_models) or None,
    )
    click.echo("stopped")
