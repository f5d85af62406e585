"""Benchmarks that take minutes (serving comparison, tune vs grid) run only when asked for:
`pytest bench/test_serving.py --benchmark-enable` (or REPOFORGE_LONG_BENCH=1)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def long_bench(request: pytest.FixtureRequest) -> None:
    cfg = request.config
    disabled = cfg.getoption("benchmark_disable", default=False) and not cfg.getoption(
        "benchmark_enable", default=False
    )
    if disabled and os.environ.get("REPOFORGE_LONG_BENCH") != "1":
        pytest.skip("long benchmark (minutes): run with --benchmark-enable or REPOFORGE_LONG_BENCH=1")
