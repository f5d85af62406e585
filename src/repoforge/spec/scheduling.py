"""Scheduling settings shared by a model (`dynamic_batching`, `instance_groups`) and `serving:` (tenant priorities,
the server's rate limiter): here so that both spec modules import them without importing each other."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["QueuePolicy", "RateLimiter", "RateLimiterResource"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RateLimiterResource(_Strict):
    """A resource an instance must hold to run (Triton rate limiter)."""

    name: str = Field(description="Resource name; instances naming the same resource share it.")
    count: int = Field(ge=1, description="How many units of the resource one execution of the instance needs.")
    global_: bool = Field(
        default=False, alias="global", description="Shared by all devices of the server; false: one pool per device."
    )


class RateLimiter(_Strict):
    """Triton's rate limiter: instances run only when their resources are free."""

    resources: list[RateLimiterResource] = Field(default=[], description="Resources an execution needs.")
    priority: int = Field(
        default=0, ge=0, description="Weight across instances: priority 2 gets half the chances of 1; 0 acts as 1."
    )


class QueuePolicy(_Strict):
    """Triton `ModelQueuePolicy`: how long requests may wait in the batcher's queue, and how many."""

    timeout_us: int = Field(
        default=0, ge=0, description="µs a request may queue (default_timeout_microseconds); 0: none."
    )
    timeout_action: Literal["reject", "delay"] = Field(
        default="reject", description="A timed-out request is rejected, or delayed behind the others."
    )
    allow_timeout_override: bool = Field(default=False, description="Requests may set their own, shorter timeout.")
    max_queue_size: int = Field(default=0, ge=0, description="Most requests queued; more are rejected. 0: unbounded.")
