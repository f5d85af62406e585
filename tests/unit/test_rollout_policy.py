"""The rollout policy and its arithmetic: steps and durations checked up front, p99 from histogram buckets as
Prometheus computes it, and a check that fails on no data instead of passing."""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from repoforge.cli import main
from repoforge.rollout.controller import judge
from repoforge.rollout.window import RouteCounters, Window, counters, quantile
from repoforge.spec.rollout import RolloutSpec, duration_s, parse_steps


def test_steps_must_rise_to_100_and_durations_parse() -> None:
    assert RolloutSpec(steps=[5, 25, 50, 100]).steps == [5, 25, 50, 100]
    for bad, words in [([5, 50, 25, 100], "increase"), ([5, 50], "last step must be 100"), ([0, 100], r"\(0, 100\]")]:
        with pytest.raises(ValidationError, match=words):
            RolloutSpec(steps=bad)
    assert duration_s("500ms") == 0.5 and duration_s("10m") == 600 and RolloutSpec(interval=2).interval_s == 2
    with pytest.raises(ValidationError, match="duration"):
        RolloutSpec(interval="3x")
    with pytest.raises(ValueError, match="comma-separated"):
        parse_steps("5,a")


def test_quantile_matches_prometheus_histogram_quantile() -> None:
    b = {100.0: 50.0, 250.0: 90.0, 1000.0: 100.0, math.inf: 100.0}
    assert quantile(0.5, b) == 100.0
    assert quantile(0.9, b) == 250.0
    assert quantile(0.99, b) == pytest.approx(250 + 750 * 9 / 10)
    assert quantile(0.99, {100.0: 0.0, math.inf: 5.0}) == 100.0  # in +Inf: the highest finite bound
    assert quantile(0.99, {100.0: 0.0, math.inf: 0.0}) is None


def test_window_from_scrapes_and_the_verdicts() -> None:
    samples = {
        'repoforge_router_rows_total{model="r",route="c"}': 200.0,
        'repoforge_router_errors_total{model="r",route="c"}': 6.0,
        'repoforge_router_latency_us_bucket{le="1000",model="r",route="c"}': 190.0,
        'repoforge_router_latency_us_bucket{le="+Inf",model="r",route="c"}': 200.0,
        'repoforge_shadow_rows_total{model="r",outcome="agree",shadow="c"}': 90.0,
        'repoforge_shadow_rows_total{model="r",outcome="disagree",shadow="c"}': 10.0,
        'repoforge_router_rows_total{model="r",route="p"}': 999.0,
    }
    after = counters(samples, "r", "c")
    w = Window.between(RouteCounters(rows=100.0, errors=1.0), after)
    assert (w.requests, w.errors, w.shadow_rows, w.agreement) == (100, 5, 100, 0.9)
    policy = RolloutSpec(min_requests=50, max_error_rate=0.01, max_p99_ms=0.5)
    failures = judge(policy, w, traffic=True, agreement=True)
    assert failures == [
        "error rate 5.00% > --max-error-rate 1.00%",
        "p99 1.0 ms > --max-p99-ms 0.5",
        "agreement 90.00% < --min-agreement 99.00%",
    ]
    empty = Window.between(after, after)
    assert judge(policy, empty, traffic=True, agreement=False) == ["no data: 0 requests < --min-requests 50"]
    assert judge(policy, empty, traffic=False, agreement=True) == ["no data: 0 shadow rows < --min-requests 50"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--steps", "5,50,25,100"], "steps must increase"),
        (["--steps", "5,50"], "last step must be 100"),
        (["--interval", "soon"], "duration"),
        (["--threshold", "0"], "--threshold"),
        (["--max-error-rate", "2"], "--max-error-rate"),
        (["--metrics-url", "nowhere"], "host:port"),
    ],
)
def test_wrong_arguments_are_usage_errors_before_any_request(args: list[str], words: str) -> None:
    res = CliRunner().invoke(main, ["rollout", "127.0.0.1:1", "--router", "r", "--candidate", "c", *args])
    assert res.exit_code == 2, res.output
    assert words in res.output


def test_a_bad_target_is_refused() -> None:
    res = CliRunner().invoke(main, ["rollout", "no-port", "--router", "r", "--candidate", "c"])
    assert res.exit_code == 2 and "expected host:port" in res.output
