"""Read a server's Prometheus /metrics: the plugins' custom metrics, Triton's and TorchServe's series."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def parse_prometheus(text: str, prefix: str = "") -> dict[str, float]:
    """`name{label="v",...}` → value for every sample whose name starts with `prefix`; labels are sorted
    (and a trailing comma, as TorchServe writes, is dropped) so keys can be written by hand.

    Read with prometheus_client's parser. The `# TYPE`/`# HELP` lines are left out first: with them it renames a
    counter's samples to the OpenMetrics `<name>_total`, and the keys must be the names the server wrote."""
    samples = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(samples):
        for s in family.samples:
            if s.name.startswith(prefix):
                labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}"] = float(s.value)
    return out


def scrape(url: str, prefix: str = "", timeout: float = 10.0) -> dict[str, float]:
    """A server's Prometheus `/metrics` (full URL), parsed (`parse_prometheus`); Triton's and TorchServe's clients
    read their metrics endpoints through this."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # a local server's metrics URL
        return parse_prometheus(resp.read().decode(), prefix)


#: TorchServe's per-model counters (Prometheus mode): requests, and cumulative µs of queue and of the
#: whole inference (queue included), per ``model_name`` label.
TORCHSERVE_COUNTERS = (
    "ts_inference_requests_total",
    "ts_queue_latency_microseconds",
    "ts_inference_latency_microseconds",
)


def _model_sum(samples: dict[str, float], name: str, model: str) -> float | None:
    label = f'model_name="{model}"'
    found = [v for k, v in samples.items() if k.startswith(name + "{") and label in k]
    return sum(found) if found else None


def torchserve_per_request(
    before: dict[str, float], after: dict[str, float], model: str
) -> tuple[float, float, int] | None:
    """(queue µs, total µs, requests) per request of ``model`` between two scrapes of TorchServe's
    /metrics; None when the counters are missing or no request came in between. TorchServe gives only
    cumulative sums, so the average over the interval is what can be reported."""
    values = []
    for name in TORCHSERVE_COUNTERS:
        a, b = _model_sum(before, name, model), _model_sum(after, name, model)
        if b is None:
            return None
        values.append(b - (a or 0.0))
    requests, queue, total = values
    if requests <= 0:
        return None
    return queue / requests, total / requests, int(requests)
