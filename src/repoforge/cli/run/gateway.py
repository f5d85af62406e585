"""What `gateway` and `worker` run: the implementations, imported only when a command runs (declared, with their options
and help, in repoforge/cli/gateway.py, which `--help` and usage errors import alone)."""

from __future__ import annotations

from typing import Any

import click

from repoforge.gateway.command import QueueOptions, ServingOptions, gateway, worker


def _queue(kw: dict[str, Any]) -> Any:
    return QueueOptions(redis_url=kw.pop("redis_url"), queue=kw.pop("queue"),
                        request_timeout_s=kw.pop("request_timeout"), max_deliveries=kw.pop("max_deliveries"),
                        visibility_timeout_s=kw.pop("visibility_timeout"), result_ttl_s=kw.pop("result_ttl"),
                        allow_eviction=kw.pop("allow_eviction"))  # fmt: skip


def _say(msg: str) -> None:
    click.echo(f"  {msg}", err=True)


def gateway_command(
    target: str, host: str, port: int | None, timeout: float | None, workers: int, max_body: int | None, **kw: Any
) -> None:
    """`repoforge gateway` once its arguments are parsed."""
    serving = ServingOptions(max_loaded=kw.pop("max_loaded"), memory_budget=kw.pop("memory_budget"),
                             always_loaded=tuple(kw.pop("always_loaded")), server_pid=kw.pop("server_pid"),
                             load_timeout_s=kw.pop("load_timeout"),
                             load_concurrency=kw.pop("load_concurrency"),
                             serving_file=kw.pop("serving_file"))  # fmt: skip

    grpc_url = kw.pop("grpc_url")
    gateway(target, host=host, port=port, timeout_s=timeout, grpc_url=grpc_url, queue=_queue(kw),
            workers=workers, max_body_bytes=max_body, serving=serving, say=_say)  # fmt: skip


def worker_command(target: str, concurrency: int | None, **kw: Any) -> None:
    """`repoforge worker` once its arguments are parsed."""
    grpc_url = kw.pop("grpc_url")
    worker(target, queue=_queue(kw), concurrency=concurrency, grpc_url=grpc_url, say=_say)
