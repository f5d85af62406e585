"""The gateway's sections: top-level `gateway:` and `async:` (how `repoforge gateway` and `repoforge worker` serve this
build: the defaults of their flags) and `deploy.gateway:` (the same gateway in Kubernetes: `repoforge gateway` and
`repoforge worker` in pods, the workers scaled by KEDA on the queue's lag).

One set of models for both: `deploy.gateway` is a GatewaySpec plus what only pods have (image, replicas, resources),
and its `async`/`workers` are the top-level `async:` section's own models. What the top-level sections set fills what
`deploy.gateway` leaves unset (`deploy k8s` reads them from the build); a field set differently in both is an error."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AsyncQueueSpec(_Strict):
    """The Redis Streams queue (`repoforge gateway --redis`); its Redis is `deploy.redis` in pods."""

    queue: str = Field(default="repoforge:async", description="Key prefix of the queue's streams (--queue).")
    request_timeout_s: float = Field(default=60.0, gt=0, description="Per-delivery timeout (--request-timeout).")
    max_deliveries: int = Field(default=3, ge=1, description="Deliveries before the dead-letter stream.")
    visibility_timeout_s: float | None = Field(
        default=None, gt=0, description="Idle time before a dead worker's request is taken over; unset: timeout + 30."
    )
    result_ttl_s: int = Field(default=86400, ge=1, description="How long an answer stays readable.")

    @model_validator(mode="after")
    def _visibility(self) -> AsyncQueueSpec:
        if self.visibility_timeout_s is not None and self.visibility_timeout_s <= self.request_timeout_s:
            raise ValueError("visibility_timeout_s must be longer than request_timeout_s (a running request would "
                             "be taken over)")  # fmt: skip
        return self


class WorkersSpec(_Strict):
    """Queue workers: `repoforge worker --concurrency`, and in pods a Deployment KEDA scales on the consumer group's
    lag (redis-streams `lagCount`)."""

    concurrency: int = Field(default=4, ge=1, description="Requests each worker answers at a time.")
    min_replicas: int = Field(default=0, ge=0, description="0: scale to zero while the queue is empty.")
    max_replicas: int = Field(default=10, ge=1, description="Upper bound for KEDA.")
    lag_per_replica: int = Field(default=20, ge=1, description="Undelivered requests per worker replica (lagCount).")
    activation_lag: int = Field(default=0, ge=0, description="Lag above which KEDA wakes the first worker.")
    cpu: str = Field(default="500m", description="CPU request of a worker.")
    memory: str = Field(default="512Mi", description="Memory request and limit of a worker.")

    @model_validator(mode="after")
    def _bounds(self) -> WorkersSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        return self


class AsyncSpec(AsyncQueueSpec):
    """Top-level `async:`: the queue's settings and its workers (`repoforge gateway --redis`, `repoforge worker`)."""

    workers: WorkersSpec = Field(default=WorkersSpec(), description="Queue workers: concurrency, and replicas in pods.")


class GatewaySpec(_Strict):
    """Top-level `gateway:`: how `repoforge gateway` serves this build (the defaults of its flags)."""

    port: int = Field(
        default=8080, ge=1, le=65535, description="The gateway's HTTP port (--port; Service and container)."
    )
    timeout_s: float = Field(default=60.0, gt=0, description="/infer's timeout (--timeout).")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1, description="Larger bodies are a 413 (--max-body).")


class GatewayDeploySpec(GatewaySpec):
    """`deploy.gateway:` — a Deployment and Service of `repoforge gateway` in front of the server's gRPC port, and
    (with `async:`) workers scaled by KEDA on the queue."""

    image: str = Field(description="An image with repoforge installed (the gateway and workers run `repoforge`).")
    replicas: int = Field(default=2, ge=1, description="Gateway pods (stateless: any of them answers any id).")
    cpu: str = Field(default="500m", description="CPU request of a gateway pod.")
    memory: str = Field(default="512Mi", description="Memory request and limit of a gateway pod.")
    async_: AsyncQueueSpec | None = Field(
        default=None, alias="async", description="The asynchronous queue (needs deploy.redis); unset: async off."
    )
    workers: WorkersSpec = Field(default=WorkersSpec(), description="Queue workers (with async: only).")


#: A section problem: (path in the spec, message).
SectionProblem = tuple[tuple[str | int, ...], str]


def sections(gateway: GatewaySpec | None, async_: AsyncSpec | None) -> dict[str, Any] | None:
    """The top-level sections as the build records them (what the user set; the flags' defaults do the rest)."""
    out: dict[str, Any] = {}
    if gateway is not None:
        out["gateway"] = gateway.model_dump(mode="json", exclude_unset=True)
    if async_ is not None:
        out["async"] = async_.model_dump(mode="json", exclude_unset=True)
    return out or None


def conflicts(recorded: dict[str, Any] | None, deploy_gateway: dict[str, Any] | None) -> list[SectionProblem]:
    """Fields `deploy.gateway` sets to another value than the top-level `gateway:`/`async:` (located at deploy.gateway)."""
    if not recorded or not deploy_gateway:
        return []
    found: list[SectionProblem] = []
    Path = tuple[str | int, ...]
    pairs: list[tuple[Path, dict[str, Any], Path, dict[str, Any]]] = [
        (("gateway",), recorded.get("gateway") or {}, ("deploy", "gateway"), deploy_gateway)
    ]
    top_async = dict(recorded.get("async") or {})
    top_workers = top_async.pop("workers", None) or {}
    if isinstance(deploy_gateway.get("async"), dict):
        pairs.append((("async",), top_async, ("deploy", "gateway", "async"), deploy_gateway["async"]))
    if isinstance(deploy_gateway.get("workers"), dict):
        pairs.append((("async", "workers"), top_workers, ("deploy", "gateway", "workers"), deploy_gateway["workers"]))
    for top, values, where, there in pairs:
        for key, value in values.items():
            if key in there and there[key] != value:
                found.append(((*where, key), f"{there[key]!r} here, {value!r} in {'.'.join(map(str, top))}.{key}; "
                              "set it in one place (the top-level section is what `repoforge gateway` reads too)"))  # fmt: skip
    return found


def fill_deploy_gateway(deploy_gateway: dict[str, Any], recorded: dict[str, Any] | None) -> dict[str, Any]:
    """`deploy.gateway` (as written or overridden with --set) with what it leaves unset taken from the top-level
    sections: the gateway's port and timeouts, the queue (which turns async on in pods) and the workers."""
    if not recorded:
        return deploy_gateway
    out = dict(deploy_gateway)
    for key, value in (recorded.get("gateway") or {}).items():
        out.setdefault(key, value)
    if recorded.get("async") is not None:
        queue = dict(recorded["async"])
        workers = queue.pop("workers", None) or {}
        if isinstance(out.get("async"), dict):
            out["async"] = {**queue, **out["async"]}
        elif out.get("async") is None:
            out["async"] = queue
        out["workers"] = {**workers, **(out.get("workers") or {})}
    return out
