"""`gateway` and `worker`: streaming and asynchronous serving in front of Triton (repoforge.gateway.command)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from repoforge.cli.common import command

_TARGET = click.argument("target", metavar="TARGET")


def _queue_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--redis", "redis_url", metavar="URL", envvar="REPOFORGE_REDIS_URL",
                     help="Redis for the asynchronous queue (redis://host:port/db; default $REPOFORGE_REDIS_URL)."),
        click.option("--queue", default=None,
                     help="Key prefix of the queue's streams; gateways and workers that share it share the work "
                     "(default: the build's async.queue, else repoforge:async)."),
        click.option("--request-timeout", type=float, default=None, metavar="S",
                     help="Per-delivery timeout of a queued request (the request is cancelled in Triton, then retried; "
                     "default: async.request_timeout_s, else 60)."),
        click.option("--max-deliveries", type=int, default=None,
                     help="Deliveries before a request goes to the dead-letter stream with its reason (default: "
                     "async.max_deliveries, else 3)."),
        click.option("--visibility-timeout", type=float, default=None, metavar="S",
                     help="Idle time after which a dead worker's request is taken over (default: "
                     "async.visibility_timeout_s, else request timeout + 30)."),
        click.option("--result-ttl", type=int, default=None, metavar="S",
                     help="How long an answer stays readable at /v2/async/ID (default: async.result_ttl_s, else 86400)."),
        click.option("--allow-eviction", is_flag=True,
                     help="Start even when the queue's Redis may evict keys (maxmemory-policy other than noeviction), "
                     "which can drop accepted requests; refused otherwise."),
        click.option("--grpc-url", metavar="HOST:PORT",
                     help="Triton's gRPC endpoint when TARGET is a running Triton and it is not TARGET or TARGET's port + 1."),
    ]  # fmt: skip
    for option in reversed(options):
        fn = option(fn)
    return fn


@command(
    "gateway",
    kept="the gateway stopped (and the Triton it served); accepted asynchronous ids stay in Redis for any worker",
    run="repoforge.cli.run.gateway:gateway_command",
)
@_TARGET
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option(
    "--port", type=int, default=None, help="Port to listen on (default: the build's gateway.port, else 8080)."
)
@click.option("--timeout", type=float, default=None, metavar="S",
              help="/infer answers 504 past this, and the request is cancelled in Triton (default: gateway.timeout_s, "
              "else 60).")  # fmt: skip
@click.option("--workers", type=int, default=0, show_default=True,
              help="Queue requests this gateway answers itself, at a time (needs --redis; for a laptop).")  # fmt: skip
@click.option("--max-body", type=int, default=None, metavar="BYTES",
              help="Larger bodies are answered 413 (default: gateway.max_body_bytes, else 16 MiB).")  # fmt: skip
@click.option(
    "--max-loaded",
    type=int,
    default=None,
    metavar="N",
    help="Load models on demand, at most N at once (default: the build's serving.max_loaded).",
)
@click.option(
    "--memory-budget",
    default=None,
    metavar="SIZE",
    help="Unload idle models before the server's RSS would pass SIZE, e.g. 6GiB (default: serving.memory_budget).",
)
@click.option(
    "--always-loaded",
    multiple=True,
    metavar="MODEL",
    help="A model loaded at start and never unloaded (repeat; default: serving.always_loaded).",
)
@click.option(
    "--server-pid",
    type=int,
    default=None,
    metavar="PID",
    help="tritonserver's pid when TARGET is a running Triton: its RSS is measured per load (default: the "
    "tritonserver on this host, or in this pod, serving that gRPC port; else estimated).",
)
@click.option(
    "--serving",
    "serving_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help="With a running Triton: the build's serving section as JSON (or its repoforge.lock.json).",
)
@click.option(
    "--load-concurrency",
    type=int,
    default=None,
    metavar="N",
    help="Model loads at once (default: 1 under a memory budget, so each model's memory is measured; else 2).",
)
@click.option(
    "--load-timeout",
    type=float,
    default=300.0,
    show_default=True,
    metavar="S",
    help="How long a request waits for its model to load (503 past it).",
)
@_queue_options
def gateway_command(**_: object) -> None:
    """Serve TARGET's models over HTTP, SSE, WebSocket and an asynchronous queue.

    TARGET is a Triton build folder (served for the run) or a running Triton's HOST:PORT. A build's `gateway:` and
    `async:` sections give the defaults of the flags not given.

    \b
      POST /v2/models/M/infer            KServe v2 JSON; 504 past --timeout (cancelled in Triton)
      POST /v2/models/M/generate_stream  Server-Sent Events, Triton's generate-extension shapes
      WS   /v2/models/M/stream           one JSON request per message, one event per response
      POST /v2/models/M/async            202 {"id"}; GET /v2/async/ID -> pending | done | failed
      GET  /metrics                      Prometheus: requests, streams, queue length/lag/pending/dead letters
      GET  /v2/repository/index          with serving: what is loaded, in flight, its memory
    A client that disconnects from a stream cancels its request inside Triton.

    With the build's `serving:` section (or --max-loaded / --memory-budget) Triton runs with explicit model
    control: a model loads on its first request and the least recently used idle one is unloaded to make room;
    a model with requests in flight is never unloaded. A running Triton must then be started with
    --model-control-mode explicit.
    """


@command(
    "worker",
    kept="the worker stopped after finishing what it held; the rest stays queued in Redis",
    run="repoforge.cli.run.gateway:worker_command",
)
@_TARGET
@click.option(
    "--concurrency",
    type=int,
    default=None,
    help="Requests answered at a time (default: async.workers.concurrency, else 4).",
)
@_queue_options
def worker_command(**_: object) -> None:
    """Answer the gateway's queued requests through TARGET (a Triton build folder or HOST:PORT).

    Run as many as you like on the same --redis and --queue: a worker killed mid-request loses nothing (another
    takes its request over after --visibility-timeout), and each id is answered exactly once.
    """
