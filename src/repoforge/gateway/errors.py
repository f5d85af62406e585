"""Errors with an HTTP status, raised before anything reaches Triton or the queue."""

from __future__ import annotations

from repoforge.errors import ArgumentError


class RequestError(Exception):
    """A request the gateway refuses: `status` is the HTTP answer, the message says what to fix."""

    def __init__(self, status: int, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra

    def body(self) -> dict[str, object]:
        return {"error": str(self), **self.extra}


class GatewayArgumentError(ArgumentError):
    """Wrong `gateway`/`worker` arguments: a usage error (exit 2) before any server starts; `param` names the
    argument as typed ('--redis', 'TARGET')."""
