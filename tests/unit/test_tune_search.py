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


def _sampled(c: Candidate, runs: list[tuple[float, float]]) -> Trial:
    t = Trial(c, samples=[{"throughput": tp, "p50_ms": p / 2, "p99_ms": p} for tp, p in runs])
    t.runs = len(t.samples)
    t.throughput = sorted(tp for tp, _ in runs)[len(runs) // 2]
    t.p99_ms = sorted(p for _, p in runs)[len(runs) // 2]
    t.feasible = True
    return t


def test_among_equally_fast_finalists_the_pick_is_the_one_with_p99_headroom() -> None:
    """Within the noise of the leader, the lower p99 wins (it stays within budget when the host gets busier); one
    clearly slower is not picked for its headroom, and one only just within the budget gives way to a safe one."""
    from repoforge.perf.tune_search import pick_with_headroom

    a, b, c = Candidate(8, "none", 0, 2), Candidate(16, "none", 0, 1), Candidate(32, "none", 0, 1)
    fast_tight = _sampled(a, [(1000, 9.0), (1040, 9.2), (980, 9.1)])
    fast_roomy = _sampled(b, [(990, 6.0), (1010, 6.1), (1000, 6.2)])
    slow_roomy = _sampled(c, [(700, 4.0), (710, 4.1), (690, 4.0)])
    scores = {a: (0.02, 3), b: (0.01, 3), c: (-0.35, 3)}
    assert pick_with_headroom([fast_tight, fast_roomy, slow_roomy], scores, 12.0, 1.0) is fast_roomy
    # a 9.15 ms budget: the leader's 9.1 ms is within it by less than its runs vary, the other one safely
    assert pick_with_headroom([fast_tight, slow_roomy], {a: (0.17, 3), c: (-0.17, 3)}, 9.15, 1.0) is slow_roomy
    assert pick_with_headroom([fast_tight, slow_roomy], {a: (0.17, 3), c: (-0.17, 3)}, 12.0, 1.0) is fast_tight


def test_with_no_finalist_within_budget_the_confirmation_races_those_just_over_it() -> None:
    """A busy spell during the search put every run over the budget; the confirmation runs re-measure the ones just
    over it instead of going unspent, and the pick is one that is within the budget when measured again."""
    rows = [(Candidate(64, "none", 0, 1), 6310, 8.3), (Candidate(32, "none", 0, 2), 7058, 8.6),
            (Candidate(16, "none", 0, 2), 6955, 9.1), (Candidate(8, "none", 0, 2), 7134, 12.0)]  # fmt: skip
    trials = _trials(rows)
    for t, again in zip(trials, (7.6, 7.8, 9.4, 11.0), strict=True):  # the host quieter once the search is over
        t.samples += [{"throughput": t.throughput, "p50_ms": again / 2, "p99_ms": again}] * 2
    s = _search(8.0, 10, trials)
    s.finalist_count = 3
    for c, _tp, _p in rows:
        s.evaluate(c)
    s.confirm(6)
    assert [t.candidate for t in s.finalists] == [c for c, _tp, _p in rows[:3]]  # within 15 % of 8 ms, lowest p99 first
    best = s.best()
    assert best is not None and best.candidate in {rows[0][0], rows[1][0]} and best.p99_ms <= 8.0
    s0 = _search(8.0, 10, _trials(rows))
    s0.near_budget = 0.0
    for c, _tp, _p in rows:
        s0.evaluate(c)
    s0.confirm(6)
    assert s0.best() is None and s0.runs == 4  # before: the confirmation runs were left unspent, no pick
