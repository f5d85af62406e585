"""The tune search on recorded measurements, no server (issue 22: a strategy driven by a measurement function).

RECORDED are the coordinate search's own trials of the bench run of 2026-11-25 15:04 UTC (bench/RESULTS.md:
the small MLP, concurrency 16, 3000 ms windows), throughput infer/s and p99 ms."""

from __future__ import annotations

import pytest

from repoforge.perf.tune_search import Candidate, Recorded, Trial, TuneSearch, TuneSpace

RECORDED = [
    (Candidate(64, "none", 0, 1), 6310, 5.57),
    (Candidate(64, "none", 0, 2), 6625, 7.53),
    (Candidate(64, "none", 100, 2), 6463, 6.44),
    (Candidate(32, "none", 0, 2), 7058, 6.61),
    (Candidate(16, "none", 0, 2), 6955, 6.33),
    (Candidate(32, "half_max", 0, 2), 5638, 8.47),
    (Candidate(32, "none", 0, 1), 5592, 6.83),
    (Candidate(32, "none", 100, 2), 6601, 6.61),
    (Candidate(16, "none", 500, 2), 6615, 5.06),
    (Candidate(8, "none", 0, 2), 7134, 6.22),
]
SPACE = TuneSpace(max_batch_sizes=(8, 16, 32, 64), preferred=("none", "half_max"), max_queue_delays_us=(0, 100, 500),
                  instance_counts=(1, 2))  # fmt: skip


def _trials(rows: list[tuple[Candidate, float, float]] = RECORDED) -> list[Trial]:
    return [Trial(c, throughput=tp, p50_ms=p99 / 2, p99_ms=p99, runs=1,
                  samples=[{"throughput": tp, "p50_ms": p99 / 2, "p99_ms": p99}]) for c, tp, p99 in rows]  # fmt: skip


def _search(budget_ms: float, max_runs: int, trials: list[Trial] | None = None) -> TuneSearch:
    return TuneSearch(Recorded(trials or _trials()), budget_ms, max_runs, lambda _m: None)


def test_grid_picks_the_fastest_recorded_config_within_budget() -> None:
    s = _search(8.0, 1000)
    s.grid(SPACE)
    assert len(s.trials) == SPACE.size == 48 and s.runs == 48
    best = s.best()
    assert best is not None and best.candidate == Candidate(8, "none", 0, 2) and best.throughput == 7134
    assert not s.trials[Candidate(32, "half_max", 0, 2)].feasible  # 8.47 ms is over the 8 ms budget
    assert s.trials[Candidate(8, "none", 500, 1)].error == "mbs 8 pref none delay 500us x1 was not recorded"


def test_nothing_within_budget_gives_no_best_and_the_closest() -> None:
    s = _search(5.0, 1000)
    s.grid(SPACE)
    assert s.best() is None
    closest = min((t for t in s.trials.values() if t.runs), key=lambda t: t.p99_ms)
    assert closest.candidate == Candidate(16, "none", 500, 2) and closest.p99_ms == 5.06


def test_coordinate_spends_at_most_its_runs_and_never_picks_over_budget() -> None:
    s = _search(6.5, 8)
    s.coordinate(SPACE, Candidate(64, "none", 0, 1), confirm=2)
    assert s.runs <= 8
    best = s.best()
    assert best is not None and best.p99_ms <= 6.5 and best.runs >= 2  # confirmed: never one lucky run


@pytest.mark.parametrize("confirm", [0, 4])
def test_confirmation_exposes_a_lucky_first_run(confirm: int) -> None:
    lucky = Trial(Candidate(32, "max", 0, 1), throughput=3000, p99_ms=1.0, runs=3, samples=[
        {"throughput": 3000, "p50_ms": 0.5, "p99_ms": 1.0}, {"throughput": 1000, "p50_ms": 0.5, "p99_ms": 1.0},
        {"throughput": 1000, "p50_ms": 0.5, "p99_ms": 1.0}])  # fmt: skip
    steady = Trial(Candidate(16, "max", 0, 1), throughput=2200, p99_ms=1.0, runs=1,
                   samples=[{"throughput": 2200, "p50_ms": 0.5, "p99_ms": 1.0}])  # fmt: skip
    space = TuneSpace(max_batch_sizes=(16, 32), preferred=("max",), max_queue_delays_us=(0,), instance_counts=(1,))
    s = _search(5.0, 2 + confirm, [lucky, steady])
    s.smooth = False
    s.grid(space)
    s.start = Candidate(16, "max", 0, 1)
    s.confirm(confirm)
    best = s.best()
    assert best is not None
    assert best.candidate.max_batch_size == (32 if confirm == 0 else 16)  # re-measured, the lucky one falls back
