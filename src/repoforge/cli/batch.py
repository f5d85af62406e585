"""`batch`: score a data set through a built repository or a running server, resumably."""

from __future__ import annotations

from pathlib import Path

import click

from repoforge.cli.common import command, json_option, quiet_option


@command(
    "batch",
    kept="the shards written so far are kept in {output}; rerun the same command to resume",
    run="repoforge.cli.run.batch:batch",
)
@click.argument("target")
@click.option("-m", "--model", required=True, help="Model to score DATA with.")
@click.option(
    "--input",
    "data",
    required=True,
    type=click.Path(path_type=Path),
    help="DATA: Parquet file or folder, CSV or JSON Lines.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder for the shards, _manifest.json and _errors.parquet.",
)
@click.option(
    "--map", "maps", multiple=True, help="COLUMN=INPUT (or COL1,COL2=INPUT to stack scalar columns); default: by name."
)
@click.option(
    "--id-column", default=None, help="Column that identifies a row (default: its position, as column 'row')."
)
@click.option(
    "-b", "--batch-size", type=int, default=None, help="Rows per request (default: min(256, max_batch_size))."
)
@click.option("--concurrency", type=int, default=4, show_default=True, help="Requests in flight at once.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option(
    "--rows-per-shard", type=int, default=10_000, show_default=True, help="Rows of DATA per shard (the unit of resume)."
)
@click.option("--restart", is_flag=True, help="Discard what an earlier run wrote to OUTPUT and score everything again.")
@click.option("--model-version", default=None, help="Version to score with (default: the newest served).")
@click.option(
    "--retries", type=int, default=8, show_default=True, help="Retries of a request on transient errors (backoff)."
)
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds per request.")
@click.option(
    "--max-shards", type=int, default=None, help="Score at most this many shards in this run (resume for the rest)."
)
@click.option("--ray-address", default=None, help="--engine ray: a cluster's address (default: a local Ray).")
@click.option("--ray-actors", type=int, default=2, show_default=True, help="--engine ray: Triton client actors.")
@click.option(
    "--shared-memory/--no-shared-memory",
    default=True,
    show_default=True,
    help="Local engine: tensors through system shared memory when the server runs on this host.",
)
@click.option(
    "--progress-interval",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds between progress lines when not on a terminal.",
)
@json_option("Print the summary as JSON on stdout.")
@quiet_option()
def batch(**_: object) -> None:
    """Score every row of DATA with MODEL, resumably. TARGET is a built repository (served for the run) or a
    running server's grpc://host:port or http://host:port.

    \b
    Writes OUTPUT/part-NNNNN.parquet (the id column and every output), _manifest.json (done shards, model
    version and config hash) and _errors.parquet (rows not scored, with the reason). Rerunning the same
    command resumes: each row of DATA ends up in the output exactly once, even after kill -9.
      repoforge batch repo -m classifier --input data.parquet -o scores
    """
