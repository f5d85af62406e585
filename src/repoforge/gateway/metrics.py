"""The gateway's `/metrics`: its own request counters and latencies, and the queue's state read from Redis at
scrape time (so every gateway reports the same numbers, whichever worker did the work)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from repoforge.gateway.queue import AsyncQueue

PREFIX = "repoforge_gateway"


class _QueueCollector:
    """Reports the last snapshot of the queue (taken just before each scrape renders)."""

    def __init__(self) -> None:
        self.snapshot: dict[str, float] = {}

    def collect(self) -> Iterator[Any]:
        s = self.snapshot
        if not s:
            return
        gauges = {
            "length": "Entries in the requests stream (waiting or being worked on)",
            "lag": "Entries not yet delivered to any worker (the consumer group's lag)",
            "pending": "Entries delivered to a worker and not yet answered",
            "delayed": "Retries waiting out their backoff",
            "dead": "Entries in the dead-letter stream",
        }
        for key, text in gauges.items():
            yield GaugeMetricFamily(f"{PREFIX}_queue_{key}", text, value=s.get(key, 0.0))
        outcomes = CounterMetricFamily(
            f"{PREFIX}_async_outcomes", "Asynchronous requests by outcome", labels=["outcome"]
        )
        for key, value in s.items():
            if key.startswith("outcome_"):
                outcomes.add_metric([key.removeprefix("outcome_")], value)
        yield outcomes


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(f"{PREFIX}_requests", "Requests by route and HTTP status", ["route", "code"],
                                registry=self.registry)  # fmt: skip
        self.latency = Histogram(f"{PREFIX}_request_seconds", "Time to answer (streams: to accept)", ["route"],
                                 registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))  # fmt: skip
        self.events = Counter(
            f"{PREFIX}_stream_events", "Streamed responses sent", ["protocol"], registry=self.registry
        )
        self.cancelled = Counter(f"{PREFIX}_stream_cancelled", "Streams whose client left (request cancelled in Triton)",
                                 ["protocol"], registry=self.registry)  # fmt: skip
        self.stream_errors = Counter(f"{PREFIX}_stream_errors", "Streams ended by an error event", ["protocol"],
                                     registry=self.registry)  # fmt: skip
        self._queue: AsyncQueue | None = None
        self._collector = _QueueCollector()
        # labelled children, looked up once: `labels()` validates and locks on every call (~5 µs of each /infer)
        self._counted: dict[tuple[str, int], Any] = {}
        self._timed: dict[str, Any] = {}

    def attach_queue(self, queue: AsyncQueue) -> None:
        self._queue = queue
        self.registry.register(self._collector)

    def observe(self, route: str, code: int, seconds: float) -> None:
        counter = self._counted.get((route, code))
        if counter is None:
            counter = self._counted[(route, code)] = self.requests.labels(route, str(code))
        counter.inc()
        if seconds:
            timer = self._timed.get(route)
            if timer is None:
                timer = self._timed[route] = self.latency.labels(route)
            timer.observe(seconds)

    async def render(self) -> tuple[bytes, str]:
        if self._queue is not None:
            self._collector.snapshot = await self._queue.snapshot()
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
