"""Each judged quantity (error rate, p99, shadow agreement) is defined once (rollout/quantities.py): the PromQL that
`deploy k8s` emits for Flagger/Argo and the live evaluation of `repoforge rollout` give the same figure on the same
scrapes. promtool evaluates the PromQL over a recorded series; the live side reads the same series' samples."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from repoforge.deploy.rollout import Release, checks
from repoforge.rollout.window import Window, counters
from repoforge.spec.rollout import RolloutSpec

PROMTOOL = shutil.which("promtool")
BASE = {"job": "released-metrics", "namespace": "default", "pod": "released-7d9f8b6c5-x2k4q", "model": "router"}
STEPS = 21  # scrapes 15 s apart: 0 .. 5 min


def _series() -> dict[str, list[float]]:
    """Cumulative counters of one route as the router writes them, rising irregularly (a seeded walk)."""
    rng = random.Random(7)
    names = {
        "rows": ("repoforge_router_rows_total", {"route": "model_b"}),
        "errors": ("repoforge_router_errors_total", {"route": "model_b"}),
        "agree": ("repoforge_shadow_rows_total", {"shadow": "model_b", "outcome": "agree"}),
        "disagree": ("repoforge_shadow_rows_total", {"shadow": "model_b", "outcome": "disagree"}),
        **{f"le{le}": ("repoforge_router_latency_us_bucket", {"route": "model_b", "le": le})
           for le in ("5000", "10000", "20000", "50000", "+Inf")},
    }  # fmt: skip
    values: dict[str, list[float]] = {k: [0.0] for k in names}
    for _ in range(STEPS - 1):
        rows = rng.randint(30, 60)
        lat = sorted(rng.choice([3000, 8000, 8000, 15000, 15000, 15000, 15000, 40000]) for _ in range(rows))
        step = {"rows": rows, "errors": rng.randint(0, 3), "agree": rows - (d := rng.randint(0, 4)), "disagree": d}
        for le in ("5000", "10000", "20000", "50000"):
            step[f"le{le}"] = sum(x <= float(le) for x in lat)
        step["le+Inf"] = rows
        for k in names:
            values[k].append(values[k][-1] + step[k])
    return {_key(*names[k]): v for k, v in values.items()}


def _key(metric: str, labels: dict[str, str]) -> str:
    return metric + "{" + ",".join(f'{k}="{v}"' for k, v in sorted({**BASE, **labels}.items())) + "}"


@pytest.mark.skipif(PROMTOOL is None, reason="promtool missing: apt-get install prometheus")
def test_promql_and_the_live_controller_give_the_same_figures(tmp_path: Path) -> None:
    series = _series()
    before = {k: v[STEPS - 5] for k, v in series.items()}  # the scrape at 4 min
    after = {k: v[STEPS - 1] for k, v in series.items()}  # and at 5 min
    live = Window.between(counters(before, "router", "model_b"), counters(after, "router", "model_b"))
    assert live.requests >= 50 and live.error_rate and live.p99_ms and live.agreement  # every figure is measured

    spec = RolloutSpec(router="router", candidate="model_b", max_p99_ms=50, min_requests=50)
    rel = Release(spec, "released", "default", "released-metrics", "router", "model_b", True, "http://prom:9090",
                  "60s", "60s", [5, 25, 50], 4)  # fmt: skip
    queries = {c.name: c.query for c in checks(rel, namespace="default", pods="released-.*", window="1m")}
    expected = {"error-rate": live.error_rate, "latency-p99": live.p99_ms, "shadow-agreement": live.agreement}
    assert set(queries) == set(expected)

    def sample(name: str) -> dict[str, Any]:  # to a millionth, so float formatting cannot differ
        value = round(float(expected[name]) * 1_000_000)
        return {"expr": f"round(({queries[name]}) * 1000000)", "eval_time": "5m",
                "exp_samples": [{"labels": "{}", "value": value}]}  # fmt: skip

    input_series = [{"series": k, "values": " ".join(f"{x:g}" for x in v)} for k, v in series.items()]
    tests = [{"interval": "15s", "input_series": input_series, "promql_expr_test": [sample(n) for n in expected]}]
    (tmp_path / "empty.rules.yml").write_text("groups: []\n")
    (tmp_path / "test.yml").write_text(yaml.safe_dump({"rule_files": ["empty.rules.yml"], "tests": tests}))
    assert PROMTOOL
    r = subprocess.run([PROMTOOL, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
