"""The figures a release is judged on, each defined once: the candidate's error rate, its p99 and its shadow
agreement with the primary, from the router's own counters.

`repoforge rollout` evaluates them live on two scrapes of a server (rollout/window.py); `deploy k8s` emits the same
definitions as PromQL for Flagger and Argo Rollouts (deploy/rollout.py). tests/unit/test_quantities.py feeds one
recorded series to both (promtool evaluates the PromQL) and gets the same figures.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from repoforge.runtime import names

#: The router's metrics (written by repoforge.runtime.plugins.router, named in repoforge.runtime.names): rows sent
#: per route, rows whose route call failed, each call's latency in µs (a histogram), and shadow rows by outcome.
ROWS = names.ROUTER_ROWS
ERRORS = names.ROUTER_ERRORS
LATENCY_US = names.ROUTER_LATENCY
SHADOW_ROWS = names.SHADOW_ROWS

#: Input drift: the PSI gauge per (model, feature) a plugin with `drift:` exports; the deploy alert fires above
#: deploy.promql.DRIFT_PSI.
DRIFT_PSI = names.DRIFT_PSI

#: Queue time per request (the autoscaler's default metric): the servers' queue-time counter over their request
#: counter. Triton's counters (µs summed, successes), then TorchServe's.
TRITON_QUEUE_US = "nv_inference_queue_duration_us"
TRITON_REQUESTS = "nv_inference_request_success"
TORCHSERVE_QUEUE_US = "ts_queue_latency_microseconds"
TORCHSERVE_REQUESTS = "ts_inference_requests_total"

#: A parsed scrape (repoforge.metrics.parse_prometheus): 'name{k="v",...}' (sorted label keys) → value.
Samples = dict[str, float]
_SERIES = re.compile(r"^([^{]+)\{(.*)\}$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _labels_of(key: str) -> tuple[str, dict[str, str]]:
    m = _SERIES.match(key)
    return (m.group(1), dict(_LABEL.findall(m.group(2)))) if m else (key, {})


@dataclass(frozen=True)
class Count:
    """How much a counter rose, summed over its series that carry ``labels`` (and the caller's selection)."""

    metric: str
    labels: tuple[tuple[str, str], ...] = ()

    def promql(self, selector: str, window: str) -> str:
        extra = "".join(f', {k}="{v}"' for k, v in self.labels)
        return f"sum(increase({self.metric}{{{selector}{extra}}}[{window}]))"

    def total(self, samples: Samples, labels: dict[str, str]) -> float:
        """The counter's value in one scrape, over the series matching ``labels`` and this count's own."""
        want = {**labels, **dict(self.labels)}
        found = 0.0
        for key, value in samples.items():
            name, have = _labels_of(key)
            if name == self.metric and all(have.get(k) == v for k, v in want.items()):
                found += value
        return found


@dataclass(frozen=True)
class Ratio:
    """``part`` / ``whole`` over the window; no figure (a failed check) while ``whole`` is below the minimum."""

    name: str
    part: Count
    whole: Count
    #: The label that names the candidate in these series ("route" for calls, "shadow" for shadow rows).
    subject: str

    def promql(self, selector: str, window: str, min_count: int) -> str:
        part, whole = self.part.promql(selector, window), self.whole.promql(selector, window)
        # the part's counter may appear only with a first event: absent, it stands in as 0 while the whole exists
        return f"({part} or {whole} * 0) / ({whole} >= {min_count})"

    @staticmethod
    def of(part: float, whole: float) -> float | None:
        return part / whole if whole else None


@dataclass(frozen=True)
class Quantile:
    """A quantile of a histogram's observations over the window (Prometheus' histogram_quantile), scaled."""

    name: str
    metric: str
    q: float
    #: Observations are in µs; the figure in ms.
    divisor: float = 1000.0
    subject: str = "route"

    def promql(self, selector: str, window: str, guard: str) -> str:
        rate = f"sum by (le) (rate({self.metric}_bucket{{{selector}}}[{window}]))"
        return f"(histogram_quantile({self.q:g}, {rate}) / {self.divisor:g}) and on () {guard}"

    def buckets(self, samples: Samples, labels: dict[str, str]) -> dict[float, float]:
        """The cumulative buckets (upper bound, +Inf last → count) of the series matching ``labels``."""
        found: dict[float, float] = {}
        for key, value in samples.items():
            name, have = _labels_of(key)
            if name == f"{self.metric}_bucket" and "le" in have and all(have.get(k) == v for k, v in labels.items()):
                le = float(have["le"])  # "+Inf" parses as inf
                found[le] = found.get(le, 0.0) + value
        return dict(sorted(found.items()))

    def of(self, buckets: dict[float, float]) -> float | None:
        value = histogram_quantile(self.q, buckets)
        return None if value is None else value / self.divisor


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative ``buckets`` (upper bound → count): linear inside the bucket;
    the highest finite bound where the quantile lands in +Inf. None without observations."""
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


ERROR_RATE = Ratio("error-rate", part=Count(ERRORS), whole=Count(ROWS), subject="route")
P99_MS = Quantile("latency-p99", LATENCY_US, 0.99)
AGREEMENT = Ratio(
    "shadow-agreement", part=Count(SHADOW_ROWS, (("outcome", "agree"),)), whole=Count(SHADOW_ROWS), subject="shadow"
)
