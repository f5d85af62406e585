"""What `batch` run: the implementations, imported only when a command runs (declared, with their options
and help, in repoforge/cli/batch.py, which `--help` and usage errors import alone)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from repoforge.batch.command import batch as do_batch
from repoforge.batch.command import check_arguments
from repoforge.cli.common import progress
from repoforge.errors import ArgumentError


def batch(
    target: str,
    model: str,
    data: Path,
    output: Path,
    maps: tuple[str, ...],
    id_column: str | None,
    batch_size: int | None,
    concurrency: int,
    engine: str,
    rows_per_shard: int,
    restart: bool,
    model_version: str | None,
    retries: int,
    timeout: float,
    max_shards: int | None,
    ray_address: str | None,
    ray_actors: int,
    shared_memory: bool,
    progress_interval: float,
    as_json: bool,
    quiet: bool,
) -> None:
    """`repoforge batch` once its arguments are parsed."""
    kwargs = dict(
        data=data, output=output, maps=maps, batch_size=batch_size, concurrency=concurrency,
        rows_per_shard=rows_per_shard, engine=engine, retries=retries, max_ranges=max_shards,
    )  # fmt: skip
    check_arguments(target, **kwargs)  # type: ignore[arg-type]
    if ray_actors < 1:
        raise ArgumentError("--ray-actors", f"--ray-actors must be >= 1, not {ray_actors}")
    say = progress(as_json or quiet)
    result = do_batch(
        target, model, id_column=id_column, restart=restart, model_version=model_version, timeout_s=timeout,
        ray_address=ray_address, ray_actors=ray_actors, shared_memory=shared_memory, progress=say, show_progress=not (as_json or quiet),
        progress_interval=progress_interval, **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    click.echo(
        f"{result.rows_scored:,} rows scored, {result.rows_errored:,} errored, {result.rows_skipped:,} skipped as done "
        f"in {result.seconds:.1f} s ({result.rows_per_s:,.0f} rows/s); {result.ranges_done}/{result.ranges_total} shards "
        f"in {result.output}" + ("" if result.complete else " (not complete: rerun to resume)")
    )
