"""The spec's `rollout:` as Kubernetes release policy: a Flagger Canary with its MetricTemplates, and an Argo
Rollouts AnalysisTemplate with the Rollout that uses it, both judging a new revision of the Triton Deployment on
the thresholds `repoforge rollout` uses (repoforge.spec.rollout).

In Kubernetes the release unit is the Deployment revision: Flagger (or Argo) starts pods of the new revision next to
the current ones and shifts traffic between the two sets. The checks therefore read the router plugin's own series
from the new revision's pods only, for the candidate route of the router named in `rollout:`:

- error rate: `repoforge_router_errors_total / repoforge_router_rows_total` of the candidate route. Not Triton's
  `nv_inference_request_failure`: Triton 2.51 counted a Python model that answered every request with an error as
  successes, because repoforge's Python backends answer a failure as an error *response*; the router counts a route
  call that failed itself;
- p99 latency of the candidate's route calls (`repoforge_router_latency_us` histogram, as the router sees them),
  when `max_p99_ms` is set;
- shadow agreement (`repoforge_shadow_rows_total`, outcome agree / all), when the router shadows the candidate.

Fewer than `min_requests` candidate rows in an interval is no data, never a pass: each query then returns an empty
result (a `>= min_requests` guard on the denominator). Flagger counts an empty (or NaN) result as a failed check
(ErrNoValuesFound; fluxcd/flagger pkg/metrics/providers/prometheus.go and the scheduler's runAnalysis). Argo does
not: an empty vector makes `result[0]` an evaluation *error* (argoproj/argo-rollouts#1466), and errors do not count
towards failureLimit, so a run of errors and failures could end Successful (argoproj/argo-rollouts#4479). The
AnalysisTemplate's conditions test `len(result) == 0` and NaN (`result[0] != result[0]`, valid in every Argo
version, unlike isNaN) first, so no data is a measured *failure*, and `consecutiveErrorLimit: 0` makes any
remaining error (Prometheus unreachable) end the analysis in Error, which aborts the rollout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from repoforge.deploy.build_info import BuildInfo
from repoforge.errors import Location, Problem, SpecError
from repoforge.output import MANIFEST
from repoforge.rollout.quantities import AGREEMENT, ERROR_RATE, P99_MS
from repoforge.spec.deploy import DeploySpec
from repoforge.spec.load import _message
from repoforge.spec.rollout import RolloutSpec

FLAGGER_API = "flagger.app/v1beta1"
ARGO_API = "argoproj.io/v1alpha1"
#: Flagger's canary pods are `<target>-<replicaset hash>-<pod id>`; its primary pods `<target>-primary-<hash>-<id>`
#: do not match (one more dash-separated part). The pattern Flagger's own docs use for pod-level metrics.
FLAGGER_CANARY_PODS = "{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"
FLAGGER_FILE = "rollout-flagger.yaml"
ARGO_FILE = "rollout-argo.yaml"
#: Shortest query range: 4 scrapes of the ServiceMonitor's 15 s, so increase() always has samples to work with.
MIN_WINDOW_S = 60
#: The Argo template's arguments: the namespace, and the pod-template hash of the revision being released.
ARGO_ARGS = ("namespace", "canary-hash")


@dataclass(frozen=True)
class Check:
    """One release check: a PromQL query returning one value per interval, and its bound."""

    name: str
    query: str
    bound: Literal["max", "min"]
    threshold: float
    what: str


@dataclass(frozen=True)
class Release:
    """`rollout:` resolved against the build and the deploy settings."""

    spec: RolloutSpec
    name: str  # the Deployment (and the Canary / Rollout) name
    namespace: str
    job: str  # the metrics Service, the `job` label of the scraped series
    router: str
    candidate: str
    shadowed: bool  # the router shadows the candidate: agreement is checked
    prometheus: str
    interval: str  # whole seconds or minutes, as Flagger's schema accepts (^[0-9]+(m|s))
    window: str  # the queries' range: the interval, at least MIN_WINDOW_S
    weights: list[int]  # canary traffic steps without the final 100
    iterations: int  # blue-green: checks before the switch


def _whole(seconds: float) -> str | None:
    if seconds <= 0 or seconds != int(seconds):
        return None
    s = int(seconds)
    return f"{s // 60}m" if s % 60 == 0 else f"{s}s"


def release(info: BuildInfo, d: DeploySpec, job: str) -> Release | None:
    """The build's recorded `rollout:`, or None. SpecError (at the lock file) for what Flagger/Argo cannot take."""
    if info.rollout is None:
        return None
    where = Location(str(info.path / MANIFEST))
    try:
        r = RolloutSpec.model_validate(info.rollout)
    except ValidationError as exc:
        raise SpecError(
            [
                Problem(
                    where, "rollout." + ".".join(map(str, e["loc"])), _message({**e, "loc": ("rollout", *e["loc"])})
                )
                for e in exc.errors()
            ]
        ) from None
    problems = []
    interval = _whole(r.interval_s)
    if interval is None:
        problems.append(Problem(where, "rollout.interval", f"Flagger and Argo Rollouts take whole seconds (got {r.interval})"))  # fmt: skip
    if _whole(r.keep_blue_s) is None:
        problems.append(Problem(where, "rollout.keep_blue", f"Argo Rollouts takes whole seconds (got {r.keep_blue})"))
    if any(s != int(s) for s in r.steps):
        problems.append(Problem(where, "rollout.steps", f"Flagger and Argo Rollouts take whole percents (got {r.steps})"))  # fmt: skip
    router = info.routers.get(r.router or "")
    if router is None:
        problems.append(Problem(where, "rollout.router", f"{r.router!r} is not a router plugin model of this build"))
    if problems:
        raise SpecError(problems)
    assert router is not None and r.router is not None and r.candidate is not None and interval is not None
    shadow = router.get("shadow") or {}
    return Release(
        spec=r,
        name=d.name or info.repository,
        namespace=d.namespace,
        job=job,
        router=r.router,
        candidate=r.candidate,
        shadowed=shadow.get("model") == r.candidate,
        prometheus=d.autoscale.prometheus_url,
        interval=interval,
        window=_whole(max(r.interval_s, MIN_WINDOW_S)) or interval,
        weights=[int(s) for s in r.steps if s < 100],
        iterations=len(r.steps),
    )


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def checks(rel: Release, *, namespace: str, pods: str, window: str) -> list[Check]:
    """The release checks, with the namespace, the pod regex of the new revision and the window filled in as given
    (Flagger's and Argo's template variables, or literal values in the tests)."""
    base = f'job="{rel.job}", namespace="{namespace}", pod=~"{pods}", model="{rel.router}"'
    calls = base + f', {ERROR_RATE.subject}="{rel.candidate}"'
    enough = f"({ERROR_RATE.whole.promql(calls, window)} >= {rel.spec.min_requests})"
    out = [
        Check(
            ERROR_RATE.name,
            ERROR_RATE.promql(calls, window, rel.spec.min_requests),
            "max",
            rel.spec.max_error_rate,
            f"failed route calls to {rel.candidate} as a share of its rows",
        )
    ]
    if rel.spec.max_p99_ms is not None:
        out.append(
            Check(
                P99_MS.name,
                P99_MS.promql(base + f', {P99_MS.subject}="{rel.candidate}"', window, enough),
                "max",
                rel.spec.max_p99_ms,
                f"p99 of the router's calls to {rel.candidate}, in ms",
            )
        )
    if rel.shadowed:
        out.append(
            Check(
                AGREEMENT.name,
                AGREEMENT.promql(base + f', {AGREEMENT.subject}="{rel.candidate}"', window, rel.spec.min_requests),
                "min",
                rel.spec.min_agreement,
                f"shadow rows where {rel.candidate} agrees with the primary route",
            )
        )
    return out


def _meta(d: DeploySpec, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": d.namespace, "labels": labels}


def flagger_checks(rel: Release) -> list[Check]:
    return checks(rel, namespace="{{ namespace }}", pods=FLAGGER_CANARY_PODS, window="{{ interval }}")


def argo_checks(rel: Release) -> list[Check]:
    return checks(
        rel,
        namespace="{{args.namespace}}",
        pods=f"{rel.name}-{{{{args.canary-hash}}}}-[0-9a-zA-Z]+",
        window=rel.window,  # like Flagger: at least MIN_WINDOW_S, so enough scrapes fall inside
    )


def flagger_objects(
    rel: Release, d: DeploySpec, labels: dict[str, str], port: tuple[str, int], startup_s: int
) -> list[dict[str, Any]]:
    """The Canary and one MetricTemplate per check. Canary: `stepWeights` are the steps without the final 100
    (Flagger promotes after the last step); blue-green: `iterations` checks on mirrored traffic, then the switch."""
    templates, metrics = [], []
    for c in flagger_checks(rel):
        tname = f"{rel.name}-{c.name}"
        templates.append(
            {
                "apiVersion": FLAGGER_API,
                "kind": "MetricTemplate",
                "metadata": _meta(d, tname, labels),
                "spec": {"provider": {"type": "prometheus", "address": rel.prometheus}, "query": c.query},
            }
        )
        metrics.append(
            {
                "name": c.name,
                "templateRef": {"name": tname},
                "thresholdRange": {c.bound: c.threshold},
                "interval": rel.window,  # what {{ interval }} becomes in the query
            }
        )
    analysis: dict[str, Any] = {"interval": rel.interval, "threshold": rel.spec.threshold}
    if rel.spec.strategy == "canary":
        analysis["stepWeights"] = rel.weights
    else:
        analysis["iterations"] = rel.iterations
        analysis["mirror"] = True  # the candidate pods see a copy of the traffic before the switch (a mesh's mirror)
    analysis["metrics"] = metrics
    spec: dict[str, Any] = {
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": rel.name},
    }
    if d.autoscale.enabled:
        spec["autoscalerRef"] = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "name": rel.name}
    spec["progressDeadlineSeconds"] = startup_s + 60  # model loading counts as progress
    spec["service"] = {"port": port[1], "portName": port[0], "targetPort": port[0], "portDiscovery": True}
    spec["analysis"] = analysis
    canary = {"apiVersion": FLAGGER_API, "kind": "Canary", "metadata": _meta(d, rel.name, labels), "spec": spec}
    return [canary, *templates]


def _conditions(c: Check) -> tuple[str, str]:
    """successCondition, failureCondition: complementary (never Inconclusive), and an empty or NaN result fails."""
    op, neg = ("<=", ">") if c.bound == "max" else (">=", "<")
    t = _num(c.threshold)
    return (
        f"len(result) > 0 && result[0] == result[0] && result[0] {op} {t}",
        f"len(result) == 0 || result[0] != result[0] || result[0] {neg} {t}",
    )


def argo_objects(rel: Release, d: DeploySpec, labels: dict[str, str], service: str) -> list[dict[str, Any]]:
    """The AnalysisTemplate and a Rollout that takes its pods from the Deployment (workloadRef). failureLimit is
    threshold - 1: Argo fails a metric when its failures exceed the limit, Flagger rolls back when failed checks
    reach the threshold, so both give up on the same failed check."""
    metrics = []
    for c in argo_checks(rel):
        ok, bad = _conditions(c)
        m: dict[str, Any] = {"name": c.name, "interval": rel.interval}
        if rel.spec.strategy == "blue-green":
            m["count"] = rel.iterations
        m |= {
            "successCondition": ok,
            "failureCondition": bad,
            "failureLimit": rel.spec.threshold - 1,
            "inconclusiveLimit": 0,
            "consecutiveErrorLimit": 0,
            "provider": {"prometheus": {"address": rel.prometheus, "query": c.query}},
        }
        metrics.append(m)
    tname = f"{rel.name}-release"
    template = {
        "apiVersion": ARGO_API,
        "kind": "AnalysisTemplate",
        "metadata": _meta(d, tname, labels),
        "spec": {"args": [{"name": a} for a in ARGO_ARGS], "metrics": metrics},
    }
    analysis = {
        "templates": [{"templateName": tname}],
        "args": [
            {"name": "namespace", "value": d.namespace},
            {"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}},
        ],
    }
    strategy: dict[str, Any]
    if rel.spec.strategy == "canary":
        steps: list[dict[str, Any]] = []
        for w in rel.weights:
            steps += [{"setWeight": w}, {"pause": {"duration": rel.interval}}]
        strategy = {"canary": {"steps": steps, "analysis": analysis}}
    else:  # all at once, then checked while blue stays up for `keep_blue`
        strategy = {
            "blueGreen": {
                "activeService": service,
                "autoPromotionEnabled": True,
                "postPromotionAnalysis": analysis,
                "scaleDownDelaySeconds": int(rel.spec.keep_blue_s),
            }
        }
    rollout = {
        "apiVersion": ARGO_API,
        "kind": "Rollout",
        "metadata": _meta(d, rel.name, labels),
        "spec": {
            "replicas": d.replicas.min,
            "workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": rel.name, "scaleDown": "onsuccess"},
            "strategy": strategy,
        },
    }
    return [template, rollout]
