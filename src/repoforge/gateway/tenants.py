"""Tenants of the gateway (`serving.tenants`): the API key in `Authorization: Bearer <key>` says who is asking;
an unknown or missing key is a 401; over its rate (a token bucket: `rate` per second, `burst` at once) or its
`max_concurrency` a tenant gets 429 with `Retry-After`. The keys come from the environment variables the spec
names, read once when the gateway starts (never from the spec or the lock file).

A pure ASGI wrapper, so it guards every model route (infer, SSE, WebSocket, async) the same way and holds a
concurrency slot for as long as the route runs (a whole stream included); health, /metrics and the repository
index stay open."""

from __future__ import annotations

import hmac
import json
import math
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from repoforge.gateway.errors import GatewayArgumentError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

GUARDED = ("/v2/models/", "/v2/async")


@dataclass
class Tenant:
    name: str
    key: str
    rate: float | None = None  # requests per second
    burst: int | None = None
    max_concurrency: int | None = None
    priority: int = 1
    tokens: float = field(default=0.0, init=False)
    stamp: float = field(default_factory=time.monotonic, init=False)
    in_flight: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.rate is not None and self.burst is None:
            self.burst = max(1, math.ceil(self.rate))
        self.tokens = float(self.burst or 0)

    def take(self) -> float:
        """0 when a request may go now (a token taken), else the seconds until the next token."""
        if self.rate is None:
            return 0.0
        assert self.burst is not None
        now = time.monotonic()
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


def tenants_from(specs: list[dict[str, Any]], environ: MutableMapping[str, str] | None = None) -> list[Tenant]:
    """The lock's `serving.tenants` with their keys from the environment; a usage error (exit 2) naming the variable
    when one is unset or empty, or when two tenants share a key."""
    env = os.environ if environ is None else environ
    out: list[Tenant] = []
    for spec in specs:
        key = env.get(spec["api_key_env"], "")
        if not key:
            raise GatewayArgumentError("serving.tenants", f"tenant {spec['name']!r}: its API key variable "
                                       f"{spec['api_key_env']} is not set (or empty) in the gateway's environment")  # fmt: skip
        out.append(Tenant(spec["name"], key, rate=spec.get("rate"), burst=spec.get("burst"),
                          max_concurrency=spec.get("max_concurrency"), priority=int(spec.get("priority") or 1)))  # fmt: skip
    keys = [t.key for t in out]
    if len(set(keys)) != len(keys):
        raise GatewayArgumentError("serving.tenants", "two tenants have the same API key: each needs its own")
    return out


def priority_of(scope: Scope) -> int:
    """The Triton priority level of the tenant asking (its requests carry it; `build` wrote the levels into every
    dynamically batched model), 0 without tenants: the model's default level."""
    tenant = (scope.get("state") or {}).get("tenant")
    return tenant.priority if isinstance(tenant, Tenant) else 0


class TenantGate:
    """ASGI middleware: who is asking (401), may they now (429 + Retry-After), and a concurrency slot held while the
    route runs."""

    def __init__(self, app: ASGIApp, tenants: list[Tenant], registry: CollectorRegistry) -> None:
        self.app = app
        self.tenants = tenants
        self.requests = Counter("repoforge_gateway_tenant_requests", "Requests per tenant by outcome (ok, "
                                "unauthorized, rate_limited, concurrency_limited)", ["tenant", "outcome"],
                                registry=registry)  # fmt: skip
        # each tenant's "ok" child looked up once: labels() on every request is a lock and a dict of tuples
        self._ok = {t.name: self.requests.labels(t.name, "ok") for t in tenants}

    def _who(self, scope: Scope) -> Tenant | None:
        raw = next((v for k, v in scope.get("headers") or () if k == b"authorization"), b"")  # ASGI: lower-case
        scheme, _, key = raw.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not key:
            return None
        for tenant in self.tenants:  # constant-time per comparison: no key is found faster than another
            if hmac.compare_digest(tenant.key.encode(), key.strip().encode()):
                return tenant
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not str(scope.get("path", "")).startswith(GUARDED):
            await self.app(scope, receive, send)
            return
        tenant = self._who(scope)
        if tenant is None:
            self.requests.labels("", "unauthorized").inc()
            await _refuse(scope, send, 401, "missing or unknown API key: send Authorization: Bearer <key>",
                          {"www-authenticate": "Bearer"})  # fmt: skip
            return
        if tenant.max_concurrency is not None and tenant.in_flight >= tenant.max_concurrency:
            self.requests.labels(tenant.name, "concurrency_limited").inc()
            await _refuse(scope, send, 429, f"tenant {tenant.name!r} has {tenant.in_flight} requests in flight, its "
                          f"max_concurrency", {"retry-after": "1"})  # fmt: skip
            return
        wait = tenant.take()
        if wait > 0:
            self.requests.labels(tenant.name, "rate_limited").inc()
            await _refuse(scope, send, 429, f"tenant {tenant.name!r} is over its rate of {tenant.rate:g}/s",
                          {"retry-after": str(max(1, math.ceil(wait)))})  # fmt: skip
            return
        self._ok[tenant.name].inc()
        scope.setdefault("state", {})["tenant"] = tenant
        tenant.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            tenant.in_flight -= 1


async def _refuse(scope: Scope, send: Send, status: int, message: str, headers: dict[str, str]) -> None:
    if scope["type"] == "websocket":  # refused during the handshake (the client sees an HTTP 403)
        await send({"type": "websocket.close", "code": 1008, "reason": f"{status}: {message}"[:120]})
        return
    body = json.dumps({"error": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
