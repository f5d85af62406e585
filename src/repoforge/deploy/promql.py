"""Every PromQL query the manifests carry, per target, in one place: the autoscaler's, the alerts' and the
dashboard's. The integration test evaluates each of them against a real Prometheus scraping a real server.

Queries select the deployment's series by `job` (the metrics Service, as the Prometheus Operator labels a
ServiceMonitor's targets) and `namespace`. A query over series that do not exist returns an empty result;
none of them turns that into 0 (`or vector(0)` is what made a Prometheus outage read as "no load" and scale
services to the minimum, kedacore/keda#3065): an idle server answers 0, a missing one answers nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from repoforge.rollout import quantities
from repoforge.runtime import names

#: Failed requests a Python model of a build counts itself (labels model, version), through Triton's custom metrics:
#: Triton 2.51 counts a Python model's error *response* as a success, so nv_inference_request_failure stays 0 for
#: it. The name is the runtime's; the error queries add it to Triton's own failures.
MODEL_ERRORS = names.MODEL_ERRORS
#: PSI above which a feature counts as drifted (the usual rule of thumb: < 0.1 stable, 0.1-0.2 moderate, > 0.2 shifted)
DRIFT_PSI = 0.2
#: How long PSI stays above DRIFT_PSI before the alert fires: one noisy window is not drift.
DRIFT_FOR = "15m"


@dataclass(frozen=True)
class Query:
    """One PromQL expression and how a panel labels and scales it."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"  # Grafana unit id
    description: str = ""


@dataclass(frozen=True)
class Alert:
    """`(query) op threshold` (or `absent(query)` when `op` is "absent"), so each alert's query can be evaluated
    on its own: a query that returns nothing would make its alert silent forever."""

    name: str
    query: str
    op: str
    threshold: float
    for_: str
    severity: str
    summary: str
    description: str

    @property
    def expr(self) -> str:
        if self.op == "absent":
            return f"absent({self.query})"
        return f"({self.query}) {self.op} {_num(self.threshold)}"


@dataclass
class Catalog:
    """What one deployment is measured by."""

    selector: str
    window: str
    autoscale: str  # pods needed × target: KEDA divides it by the target (AverageValue, the type fallback needs)
    autoscale_per_pod: str  # the same metric per pod, what `target` is compared with (alert, dashboard)
    panels: list[Panel] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _sel(job: str, namespace: str, extra: str = "") -> str:
    parts = [f'job="{job}"', f'namespace="{namespace}"'] + ([extra] if extra else [])
    return "{" + ", ".join(parts) + "}"


@dataclass(frozen=True)
class Features:
    """What the build uses, so the dashboard has a panel (and only a panel) for each metric the server exports."""

    gpu: bool = False
    response_cache: bool = False
    plugins: frozenset[str] = frozenset()  # features | result_cache | semantic_cache | router
    drift: frozenset[str] = frozenset()  # models whose plugin sets `drift:` (they export repoforge_drift_psi)


def _ratio(num: str, den: str) -> str:
    """num / den where den > 0, else 0 when den's series exist (idle), else nothing (no series)."""
    return f"({num} / ({den} > 0) or {den} * 0)"


def triton_catalog(
    *, job: str, namespace: str, window: str, metric: str, target: float, on_demand: int, slo: dict[str, object],
    name: str, features: Features,
) -> Catalog:  # fmt: skip
    """Triton's nv_* series (and repoforge's plugin metrics) for a deployment."""
    s = _sel(job, namespace)
    w = window

    def rate(metric_name: str, by: str = "", sel: str = s) -> str:
        agg = f"sum by ({by}) " if by else "sum"
        return f"{agg}(rate({metric_name}{sel}[{w}]))"

    success, queue = quantities.TRITON_REQUESTS, quantities.TRITON_QUEUE_US
    pods = f"count(count by (pod) ({success}{s}))"
    per_pod = {
        "queue_time_per_request_us": _ratio(rate(queue), rate(success)),
        "pending_requests": f"(sum(nv_inference_pending_request_count{s}) / {pods})",
        "request_rate": f"({rate(success)} / {pods})",
        "gpu_utilization": f"(avg(nv_gpu_utilization{s}) * 100)",
    }[metric]
    total = {
        "queue_time_per_request_us": f"{per_pod} * {pods}",
        "pending_requests": f"sum(nv_inference_pending_request_count{s})",
        "request_rate": rate(success),
        "gpu_utilization": f"sum(nv_gpu_utilization{s}) * 100",
    }[metric]
    if on_demand:  # the ScaledObject scales the spot pool only: the on-demand pods already carry their share
        total = f"{total} - {_num(on_demand * target)}"
    cat = Catalog(selector=s, window=w, autoscale=total, autoscale_per_pod=per_pod)

    by_model = "model"
    req = rate(success, by_model)
    fail = rate("nv_inference_request_failure", by_model)
    error_share = _ratio(errors_query(rate(MODEL_ERRORS, by_model), fail), f"({req} + {fail})")
    p = cat.panels
    p.append(Panel("Request rate", (Query(req, "{{model}}"),), "reqps", "Successful inference requests per second."))
    latency = [
        Query(f"max by (model) (nv_inference_request_summary_us{_sel(job, namespace, _quantile(q))}) / 1000", f"{{{{model}}}} p{label}")
        for q, label in (("0.5", "50"), ("0.99", "99"))
    ]  # fmt: skip
    p.append(
        Panel(
            "Latency p50 / p99",
            tuple(latency),
            "ms",
            "Request duration quantiles from Triton's summaries (--metrics-config summary_latencies=true), the "
            "slowest pod per model.",
        )
    )
    p.append(
        Panel(
            "Queue vs compute time per request",
            (
                Query(_ratio(rate(queue, by_model), req), "{{model}} queue"),
                Query(_ratio(rate("nv_inference_compute_infer_duration_us", by_model), req), "{{model}} compute"),
            ),
            "µs",
            "Time a request waits for an instance against the time the model computes.",
        )
    )
    p.append(
        Panel(
            "Batch size formed",
            (Query(_ratio(rate("nv_inference_count", by_model), rate("nv_inference_exec_count", by_model)), "{{model}}"),),
            "short",
            "Inferences per model execution: how full the dynamic batcher's batches are.",
        )
    )  # fmt: skip
    p.append(
        Panel(
            "Error rate",
            (Query(error_share, "{{model}}"),),
            "percentunit",
            "Failed requests as a share of all requests: Triton's failures plus the errors a Python model answers "
            f"({MODEL_ERRORS}), which Triton counts as successes.",
        )
    )
    p.append(
        Panel(
            f"Autoscaling metric: {metric}",
            (Query(per_pod, "per pod"), Query(f"{_num(target)} + 0 * {per_pod}", "target")),
            "short",
            "The value KEDA holds at the target; an empty graph here means KEDA is on its fallback replicas.",
        )
    )
    if features.response_cache:
        hits, misses = rate("nv_cache_num_hits_per_model", by_model), rate("nv_cache_num_misses_per_model", by_model)
        p.append(
            Panel(
                "Response cache hit rate",
                (Query(_ratio(hits, f"({hits} + {misses})"), "{{model}}"),),
                "percentunit",
                "Triton's response cache: hits as a share of lookups.",
            )
        )
    if "result_cache" in features.plugins:
        hit = rate("repoforge_cache_requests_total", by_model, _sel(job, namespace, 'result="hit"'))
        p.append(
            Panel(
                "Result cache hit rate (plugin)",
                (Query(_ratio(hit, rate("repoforge_cache_requests_total", by_model)), "{{model}}"),),
                "percentunit",
            )
        )
    if "semantic_cache" in features.plugins:
        hit = rate("repoforge_semantic_cache_rows_total", by_model, _sel(job, namespace, 'result="hit"'))
        p.append(
            Panel(
                "Semantic cache hit rate (plugin)",
                (Query(_ratio(hit, rate("repoforge_semantic_cache_rows_total", by_model)), "{{model}}"),),
                "percentunit",
            )
        )
    if "router" in features.plugins:
        split = rate("repoforge_router_rows_total", "model, route")
        agree = rate("repoforge_shadow_rows_total", "model, shadow", _sel(job, namespace, 'outcome="agree"'))
        p.append(
            Panel(
                "Router split (plugin)",
                (Query(f"{split} / on (model) group_left {rate('repoforge_router_rows_total', by_model)}", "{{model}} → {{route}}"),),
                "percentunit",
            )
        )  # fmt: skip
        p.append(
            Panel(
                "Shadow agreement (plugin)",
                (Query(_ratio(agree, rate("repoforge_shadow_rows_total", "model, shadow")), "{{model}} vs {{shadow}}"),),
                "percentunit",
            )
        )  # fmt: skip
    if "features" in features.plugins:
        found = rate("repoforge_feature_lookup_total", by_model, _sel(job, namespace, 'result="hit"'))
        p.append(
            Panel(
                "Feature lookup hit rate (plugin)",
                (Query(_ratio(found, rate("repoforge_feature_lookup_total", by_model)), "{{model}}"),),
                "percentunit",
            )
        )
    drift = f"max by (model, feature) ({quantities.DRIFT_PSI}{s})"
    if features.drift:
        p.append(
            Panel(
                "Input drift PSI (plugin)",
                (Query(drift, "{{model}} {{feature}}"), Query(f"{_num(DRIFT_PSI)} + 0 * {drift}", "alert above")),
                "short",
                "Population stability index of each input feature over the plugin's sliding window against its "
                f"reference profile; above {_num(DRIFT_PSI)} the inputs have shifted.",
            )
        )
    if features.gpu:
        p.append(
            Panel("GPU utilization", (Query(f"avg by (pod, gpu_uuid) (nv_gpu_utilization{s}) * 100", "{{pod}}"),), "percent")
        )  # fmt: skip
        p.append(
            Panel(
                "GPU memory used",
                (Query(f"sum by (pod) (nv_gpu_memory_used_bytes{s}) / sum by (pod) (nv_gpu_memory_total_bytes{s})", "{{pod}}"),),
                "percentunit",
            )
        )  # fmt: skip
    else:
        p.append(
            Panel("CPU utilization", (Query(f"avg by (pod) (nv_cpu_utilization{s}) * 100", "{{pod}}"),), "percent")
        )
        p.append(Panel("CPU memory used", (Query(f"sum by (pod) (nv_cpu_memory_used_bytes{s})", "{{pod}}"),), "bytes"))

    title = _camel(name)
    a = cat.alerts
    a.append(
        Alert(
            f"{title}MetricsAbsent", f"{success}{s}", "absent", 0, "5m", "critical",
            "No Triton metrics for {{ $labels.job }}: the autoscaler is blind",
            "Prometheus has no nv_inference_request_success series for this deployment. KEDA's query fails "
            "(ignoreNullValues: false), so it holds the fallback replicas instead of scaling down; fix the "
            "scrape (ServiceMonitor, metrics port) before load changes.",
        )
    )  # fmt: skip
    for_ = str(slo.get("for", "5m"))
    p99 = slo.get("p99_ms")
    if isinstance(p99, (int, float)):
        a.append(
            Alert(
                f"{title}P99LatencyHigh", latency[1].expr, ">", float(p99), for_, "warning",
                "p99 latency of {{ $labels.model }} above " + _num(float(p99)) + " ms",
                "The slowest pod's p99 request duration (Triton summary quantile) breaks the SLO.",
            )
        )  # fmt: skip
    err = slo.get("error_rate")
    if isinstance(err, (int, float)):
        a.append(
            Alert(
                f"{title}ErrorRateHigh", error_share, ">", float(err), for_, "warning",
                "{{ $labels.model }} fails more than " + _num(float(err) * 100) + " % of requests",
                f"Failed requests (Triton's nv_inference_request_failure plus the model's own {MODEL_ERRORS}: a "
                "Python model's error responses) as a share of all requests break the SLO.",
            )
        )  # fmt: skip
    if features.drift:
        a.append(
            Alert(
                f"{title}InputDrift", drift, ">", DRIFT_PSI, DRIFT_FOR, "warning",
                "Input drift on {{ $labels.model }}: feature {{ $labels.feature }} has PSI above " + _num(DRIFT_PSI),
                "The plugin's PSI of feature {{ $labels.feature }} against its reference profile (repoforge drift "
                "profile) stays above " + _num(DRIFT_PSI) + ": the traffic no longer looks like the data the model "
                "was built on. Compare with `repoforge drift report`, then retrain or refresh the reference.",
            )
        )  # fmt: skip
    a.append(
        Alert(
            f"{title}AutoscalingSaturated", per_pod, ">", 2 * target, "15m", "warning",
            f"{metric} stays above twice its target",
            "Each pod is far above the autoscaling target for 15 minutes: replicas.max is reached, pods cannot be "
            "scheduled (GPUs, spot capacity), or the target is wrong.",
        )
    )  # fmt: skip
    return cat


def torchserve_catalog(
    *, job: str, namespace: str, window: str, metric: str, target: float, on_demand: int, slo: dict[str, object],
    name: str, features: Features,
) -> Catalog:  # fmt: skip
    """TorchServe's Prometheus-mode counters (ts_*; per model_name): sums only, so means, no quantiles."""
    s = _sel(job, namespace)
    w = window

    def rate(metric_name: str, by: str = "") -> str:
        agg = f"sum by ({by}) " if by else "sum"
        return f"{agg}(rate({metric_name}{s}[{w}]))"

    reqs, queue, lat = (
        quantities.TORCHSERVE_REQUESTS,
        quantities.TORCHSERVE_QUEUE_US,
        "ts_inference_latency_microseconds",
    )
    pods = f"count(count by (pod) ({reqs}{s}))"
    per_pod = {
        "queue_time_per_request_us": _ratio(rate(queue), rate(reqs)),
        "request_rate": f"({rate(reqs)} / {pods})",
    }[metric]
    total = {"queue_time_per_request_us": f"{per_pod} * {pods}", "request_rate": rate(reqs)}[metric]
    if on_demand:
        total = f"{total} - {_num(on_demand * target)}"
    cat = Catalog(selector=s, window=w, autoscale=total, autoscale_per_pod=per_pod)
    by = "model_name"
    r = rate(reqs, by)
    # Requests4XX/5XX appear only after a first such answer (and `a + nothing` is nothing): each counter stands in
    # as 0 while absent, and the `or` of _ratio answers 0 while no 5xx happened. One regex selector over the three
    # cannot be used: rate() drops __name__, and 2xx and 4xx series with the same labels then collide (HTTP 422)
    zero = f"{rate(reqs)} * 0"
    answered = "(" + " + ".join(f"({rate(f'Requests{c}XX')} or {zero})" for c in (2, 4, 5)) + ")"
    errors = _ratio(rate("Requests5XX"), answered)
    cat.panels += [
        Panel("Request rate", (Query(r, "{{model_name}}"),), "reqps"),
        Panel("Mean latency", (Query(_ratio(rate(lat, by), r) + " / 1000", "{{model_name}}"),), "ms",
              "TorchServe exports cumulative sums only: the mean over the window, no quantiles."),
        Panel("Queue vs total time per request", (Query(_ratio(rate(queue, by), r), "{{model_name}} queue"),
                                                  Query(_ratio(rate(lat, by), r), "{{model_name}} total")), "µs"),
        Panel("Error rate (HTTP 5xx)", (Query(errors, "5xx share"),), "percentunit",
              "Requests answered 5xx as a share of all (TorchServe counts these per host, not per model)."),
        Panel(f"Autoscaling metric: {metric}", (Query(per_pod, "per pod"),), "short"),
    ]  # fmt: skip
    title = _camel(name)
    cat.alerts.append(
        Alert(
            f"{title}MetricsAbsent", f"{reqs}{s}", "absent", 0, "5m", "critical",
            "No TorchServe metrics for {{ $labels.job }}: the autoscaler is blind",
            "Prometheus has no ts_inference_requests_total series for this deployment; KEDA holds its fallback replicas.",
        )
    )  # fmt: skip
    err = slo.get("error_rate")
    if isinstance(err, (int, float)):
        cat.alerts.append(
            Alert(
                f"{title}ErrorRateHigh", errors, ">", float(err), str(slo.get("for", "5m")), "warning",
                "TorchServe answers more than " + _num(float(err) * 100) + " % of requests with 5xx",
                "Requests5XX as a share of all answers (2xx, 4xx, 5xx) breaks the SLO.",
            )
        )  # fmt: skip
    cat.alerts.append(
        Alert(
            f"{title}AutoscalingSaturated", per_pod, ">", 2 * target, "15m", "warning",
            f"{metric} stays above twice its target", "Each pod is far above the autoscaling target for 15 minutes.",
        )
    )  # fmt: skip
    _ = features
    return cat


def errors_query(own: str, triton: str) -> str:
    """Failed requests per model: the model's own count where it exports one (Python models), plus Triton's
    failures; a model without the counter (a native backend) has Triton's failures alone."""
    return f"({own} + {triton} or {triton})"


def _quantile(q: str) -> str:
    return f'quantile="{q}"'


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.replace("_", "-").split("-") if part)
