"""The tune search on this host's noise (issue 26.3): replayed on a recorded grid of the small MLP (tests/data/tune/,
recorded by bench/record_tune_grid.py under load 10-15 on 2 shared cores), each replay with its own seeded noise,
and scored against the grid searched under the same noise, as bench/test_tune.py compares them side by side.

The recording's own noise is about 0.3 a run (log throughput, 1 s windows); the feasible configs lie within about
20 % of each other, so the grid's pick is itself a noisy one and no search reaches the true best every time
(bench/RESULTS.md has the figures over 60 replays). What is pinned here: the default search (a spread-out screen,
the additive model, then a race of the finalists) has better worst replays than the descent with a two-round
confirmation it replaced, and at this host's noise stays within 5 % of the grid's pick in the median replay,
within 10 % of the grid's runs plus its stated confirmation budget. (At low noise, 0.05, the descent's median is
better: bench/RESULTS.md.)"""

from __future__ import annotations

import functools
import json
import statistics
from pathlib import Path

import pytest

from repoforge.perf.tune_search import (
    Candidate,
    Landscape,
    Measurer,
    TuneSearch,
    TuneSpace,
    noisy_replays,
    recorded_landscape,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "tune" / "grid_small_mlp.json"
SPACE = TuneSpace()
START = Candidate(64, "none", 0, 1)  # the bench spec's own config
SEARCH_RUNS = SPACE.size // 10  # 12: 10 % of the grid
SEEDS = range(24)


def _landscape() -> Landscape:
    d = json.loads(DATA.read_text())
    rows = [(Candidate(m, p, q, i), d["served_keys"][k], [{"throughput": s[0], "p99_ms": s[1], "p50_ms": s[1] / 2} for s in runs])
            for m, p, q, i, k, runs in d["rows"]]  # fmt: skip
    return recorded_landscape(rows, SPACE)


LAND = _landscape()
BUDGET = statistics.median(p for _tp, p in LAND.truth.values())  # half of the configs within budget


def _grid(m: Measurer) -> TuneSearch:
    s = TuneSearch(m, BUDGET, 10_000, lambda _m: None)
    s.start = START
    s.grid(SPACE, seed=7)
    s.confirm(8)
    return s


def _default(m: Measurer) -> TuneSearch:
    s = TuneSearch(m, BUDGET, SEARCH_RUNS + 12, lambda _m: None)
    s.coordinate(SPACE, START, confirm=12)
    return s


def _before(m: Measurer) -> TuneSearch:
    """The search of the 2026-11-25 bench runs: descent, then the model, two rounds of 3 finalists + current."""
    s = TuneSearch(m, BUDGET, SEARCH_RUNS + 8, lambda _m: None)
    s.strategy, s.race, s.finalist_count = "model", False, 3
    s.coordinate(SPACE, START, confirm=8)
    return s


@functools.cache
def _ratios(search: object, sigma: float, drift: float) -> tuple[list[float], int]:
    grid = noisy_replays(LAND, BUDGET, sigma, drift, [1000 + s for s in SEEDS], _grid)
    found = noisy_replays(LAND, BUDGET, sigma, drift, SEEDS, search)  # type: ignore[arg-type]
    ratios = [
        LAND.value(f, BUDGET) / max(LAND.value(g, BUDGET), 1e-9) for (f, _), (g, _) in zip(found, grid, strict=True)
    ]
    return ratios, max(n for _, n in found)


def test_the_recording_is_a_landscape_with_this_hosts_noise() -> None:
    assert len(LAND.truth) == 100 and len(set(LAND.served.values())) == 71
    assert 0.15 < LAND.sigma < 0.45  # one 1 s run on a 2-core host at load 10-15
    feasible = [tp for tp, p in LAND.truth.values() if p <= BUDGET]
    assert max(feasible) / min(feasible) > 1.2  # the pick matters


def _worst_tenth(x: list[float]) -> float:
    return sorted(x)[len(x) // 10]


@pytest.mark.parametrize(("sigma", "drift"), [(0.1, 0.1), (0.25, 0.15)])
def test_the_default_search_has_better_worst_replays_than_the_descent(sigma: float, drift: float) -> None:
    ratios, runs = _ratios(_default, sigma, drift)
    before, _ = _ratios(_before, sigma, drift)
    assert runs <= SEARCH_RUNS + 12  # 10 % of the grid, plus the confirmation budget stated up front
    assert _worst_tenth(ratios) > _worst_tenth(before)


def test_at_this_hosts_noise_the_median_replay_is_within_5_percent_of_the_grid() -> None:
    ratios, _ = _ratios(_default, 0.25, 0.15)
    before, _ = _ratios(_before, 0.25, 0.15)
    assert statistics.median(ratios) >= 0.95 > statistics.median(before)
    assert sum(r >= 0.95 for r in ratios) > sum(r >= 0.95 for r in before)
