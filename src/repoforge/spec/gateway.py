"""`deploy.gateway:`: the streaming/async gateway and its queue workers next to the server in Kubernetes
(`repoforge gateway` and `repoforge worker` in pods; the workers scaled by KEDA on the queue's lag)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AsyncQueueSpec(_Strict):
    """The Redis Streams queue (`repoforge gateway --redis`); its Redis is `deploy.redis`."""

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
    """Queue workers: a Deployment KEDA scales on the consumer group's lag (redis-streams `lagCount`)."""

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


class GatewayDeploySpec(_Strict):
    """`deploy.gateway:` — a Deployment and Service of `repoforge gateway` in front of the server's gRPC port, and
    (with `async:`) workers scaled by KEDA on the queue."""

    image: str = Field(description="An image with repoforge installed (the gateway and workers run `repoforge`).")
    port: int = Field(default=8080, ge=1, le=65535, description="The gateway's HTTP port (Service and container).")
    replicas: int = Field(default=2, ge=1, description="Gateway pods (stateless: any of them answers any id).")
    timeout_s: float = Field(default=60.0, gt=0, description="/infer's timeout (--timeout).")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1, description="Larger bodies are a 413 (--max-body).")
    cpu: str = Field(default="500m", description="CPU request of a gateway pod.")
    memory: str = Field(default="512Mi", description="Memory request and limit of a gateway pod.")
    async_: AsyncQueueSpec | None = Field(
        default=None, alias="async", description="The asynchronous queue (needs deploy.redis); unset: async off."
    )
    workers: WorkersSpec = Field(default=WorkersSpec(), description="Queue workers (with async: only).")
