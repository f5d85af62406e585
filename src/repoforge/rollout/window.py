"""What one analysis interval saw of a route, from two scrapes of the router's metrics.

The counts are the router's own (rows sent, rows whose route call failed, each call's latency, shadow rows that
agree), not Triton's per-model statistics: Triton 2.51 counts a Python model's error responses as successes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from repoforge.rollout.quantities import AGREEMENT, ERROR_RATE, P99_MS, histogram_quantile


@dataclass(frozen=True)
class RouteCounters:
    """Cumulative counters of one route of one router at one scrape."""

    rows: float = 0.0
    errors: float = 0.0
    latency_buckets: dict[float, float] = field(default_factory=dict)  # upper bound in µs (inf last) → count
    shadow_agree: float = 0.0
    shadow_disagree: float = 0.0


def counters(samples: dict[str, float], router: str, route: str) -> RouteCounters:
    """`route`'s counters in a scrape parsed by `repoforge.metrics.parse_prometheus`, read as the judged quantities
    (rollout/quantities.py) define them."""
    calls, shadow = {"model": router, ERROR_RATE.subject: route}, {"model": router, AGREEMENT.subject: route}
    agree = AGREEMENT.part.total(samples, shadow)
    return RouteCounters(
        rows=ERROR_RATE.whole.total(samples, calls),
        errors=ERROR_RATE.part.total(samples, calls),
        latency_buckets=P99_MS.buckets(samples, {"model": router, P99_MS.subject: route}),
        shadow_agree=agree,
        shadow_disagree=AGREEMENT.whole.total(samples, shadow) - agree,
    )


quantile = histogram_quantile  # Prometheus' histogram_quantile, as the live checks compute it


@dataclass(frozen=True)
class Window:
    """One interval of one route: deltas between two scrapes."""

    requests: int
    errors: int
    p99_ms: float | None
    shadow_rows: int
    agreement: float | None

    @property
    def error_rate(self) -> float | None:
        return ERROR_RATE.of(self.errors, self.requests)

    @classmethod
    def between(cls, before: RouteCounters, after: RouteCounters) -> Window:
        # counters only rise; a restarted server resets them, so a negative delta counts as the new value
        def d(a: float, b: float) -> float:
            return b - a if b >= a else b

        buckets = {le: d(before.latency_buckets.get(le, 0.0), c) for le, c in after.latency_buckets.items()}
        agree = d(before.shadow_agree, after.shadow_agree)
        disagree = d(before.shadow_disagree, after.shadow_disagree)
        shadow = agree + disagree
        return cls(
            requests=int(round(d(before.rows, after.rows))),
            errors=int(round(d(before.errors, after.errors))),
            p99_ms=P99_MS.of(buckets),
            shadow_rows=int(round(shadow)),
            agreement=AGREEMENT.of(agree, shadow),
        )
