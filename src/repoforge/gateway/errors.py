"""Errors with an HTTP status, raised before anything reaches Triton or the queue."""

from __future__ import annotations

from repoforge.errors import RepoforgeError


class RequestError(Exception):
    """A request the gateway refuses: `status` is the HTTP answer, the message says what to fix."""

    def __init__(self, status: int, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra

    def body(self) -> dict[str, object]:
        return {"error": str(self), **self.extra}


class GatewayArgumentError(RepoforgeError):
    """Wrong `gateway`/`worker` arguments: a usage error (exit 2) before any server starts."""

    exit_code = 2
