"""What one analysis interval saw of a route, from two scrapes of the router's metrics.

The counts are the router's own (rows sent, rows whose route call failed, each call's latency, shadow rows that
agree), not Triton's per-model statistics: Triton 2.51 counts a Python model's error responses as successes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_LE = re.compile(r'le="([^"]+)"')


@dataclass(frozen=True)
class RouteCounters:
    """Cumulative counters of one route of one router at one scrape."""

    rows: float = 0.0
    errors: float = 0.0
    latency_buckets: dict[float, float] = field(default_factory=dict)  # upper bound in µs (inf last) → count
    shadow_agree: float = 0.0
    shadow_disagree: float = 0.0


def _labels(**labels: str) -> str:
    return ",".join(sorted(f'{k}="{v}"' for k, v in labels.items()))


def counters(samples: dict[str, float], router: str, route: str) -> RouteCounters:
    """`route`'s counters in a scrape parsed by `repoforge.metrics.parse_prometheus` (sorted label keys)."""
    rl = _labels(model=router, route=route)
    buckets: dict[float, float] = {}
    prefix = "repoforge_router_latency_us_bucket{"
    for key, value in samples.items():
        if key.startswith(prefix) and f'model="{router}"' in key and f'route="{route}"' in key:
            m = _LE.search(key)
            if m:
                buckets[float(m.group(1))] = value  # "+Inf" parses as inf
    return RouteCounters(
        rows=samples.get(f"repoforge_router_rows_total{{{rl}}}", 0.0),
        errors=samples.get(f"repoforge_router_errors_total{{{rl}}}", 0.0),
        latency_buckets=dict(sorted(buckets.items())),
        shadow_agree=samples.get(
            f"repoforge_shadow_rows_total{{{_labels(model=router, outcome='agree', shadow=route)}}}", 0.0
        ),
        shadow_disagree=samples.get(
            f"repoforge_shadow_rows_total{{{_labels(model=router, outcome='disagree', shadow=route)}}}", 0.0
        ),
    )


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative `buckets` (upper bound → count): linear inside the
    bucket; the highest finite bound where the quantile lands in +Inf. None without observations."""
    bounds = sorted(buckets)
    if not bounds:
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for b in bounds:
        c = buckets[b]
        if c >= rank:
            if math.isinf(b):
                return lower
            if c == below:
                return b
            return lower + (b - lower) * (rank - below) / (c - below)
        lower, below = (b if not math.isinf(b) else lower), c
    return lower


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
        return self.errors / self.requests if self.requests else None

    @classmethod
    def between(cls, before: RouteCounters, after: RouteCounters) -> Window:
        # counters only rise; a restarted server resets them, so a negative delta counts as the new value
        def d(a: float, b: float) -> float:
            return b - a if b >= a else b

        buckets = {le: d(before.latency_buckets.get(le, 0.0), c) for le, c in after.latency_buckets.items()}
        p99 = quantile(0.99, buckets)
        agree = d(before.shadow_agree, after.shadow_agree)
        disagree = d(before.shadow_disagree, after.shadow_disagree)
        shadow = agree + disagree
        return cls(
            requests=int(round(d(before.rows, after.rows))),
            errors=int(round(d(before.errors, after.errors))),
            p99_ms=None if p99 is None else p99 / 1000.0,
            shadow_rows=int(round(shadow)),
            agreement=agree / shadow if shadow else None,
        )
