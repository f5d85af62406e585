"""Multi-model tune (issue 26.3): several models sharing one server, each under its own p99 budget, searched as
combinations measured together. The search runs here on a synthetic landscape where the models compete for the
CPU (one's instances take the cores from the other), so a model's best alone is not its best together; no server."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from repoforge.cli import main
from repoforge.perf import tune_multi
from repoforge.perf.analyzer import PerfError
from repoforge.perf.tune_multi import (
    Combo,
    ModelGoal,
    MultiJournal,
    MultiTuneResult,
    MultiTuneSearch,
    default_multi_runs,
)
from repoforge.perf.tune_search import Candidate, Entry, Sample, TuneSpace

ROOT = Path(__file__).resolve().parents[2]
SPACE = TuneSpace()  # the default grid: 120 configs a model, 14,400 combinations of two
GOALS = [ModelGoal("a", 6.0), ModelGoal("b", 9.0, weight=1.0)]
CAP = {"a": 6000.0, "b": 3000.0}
BASE_P99 = {"a": 1.5, "b": 2.5}


def truth(combo: dict[str, Candidate]) -> dict[str, tuple[float, float]]:
    """(throughput, p99 ms) per model. The server has 2 cores: a model gets a share of them by its instances, one
    instance alone cannot use both, more than 3 in all contend; batching (mbs, delay) raises a model's throughput per
    core and its p99; preferred sizes matter a little."""
    tot = sum(c.instances for c in combo.values())
    overlap = {1: 0.6, 2: 0.85, 3: 1.0, 4: 0.95}[tot]
    out = {}
    for m, c in combo.items():
        eff = {8: 0.8, 16: 0.95, 32: 1.0, 64: 0.97}[c.max_batch_size] * (
            1 + 0.3 * min(c.max_queue_delay_us, 1000) / 1000
        )
        eff *= {"max": 1.03, "half_max": 1.01, "none": 1.0}[c.preferred]
        share = c.instances / tot
        tp = CAP[m] * eff * share * overlap
        p99 = (BASE_P99[m] + c.max_queue_delay_us / 1000 * 1.6) / share * (1.1 if c.max_batch_size >= 32 else 1.0)
        out[m] = (tp, p99)
    return out


def true_total(combo: Combo, goals: list[ModelGoal] = GOALS) -> float:
    """Weighted total of a combination, 0 when a model is over its budget."""
    t = truth({g.name: c for g, c in zip(goals, combo, strict=True)})
    if any(t[g.name][1] > g.budget_ms for g in goals):
        return 0.0
    return sum(g.weight * t[g.name][0] for g in goals)


class Synthetic:
    """A :class:`MultiMeasurer` on :func:`truth`, with seeded log-normal noise per run (shared by the models of a
    run, as a busier host slows all of them, plus each model's own)."""

    def __init__(self, sigma: float = 0.0, seed: int = 0, stop_at: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.sigma, self.stop_at = sigma, stop_at
        self.loads: list[tuple[str, Candidate]] = []
        self.served: dict[str, Candidate] = {}
        self.runs = 0

    def load(self, model: str, cand: Candidate) -> str:
        self.loads.append((model, cand))
        self.served[model] = cand
        return cand.label()

    def measure(self, combo: dict[str, Candidate]) -> dict[str, Sample]:
        assert combo == {m: self.served[m] for m in combo}, "measured a combination that is not loaded"
        self.runs += 1
        if self.runs == self.stop_at:
            raise KeyboardInterrupt
        shared = self.rng.gauss(0.0, self.sigma)
        out = {}
        for m, (tp, p99) in truth(combo).items():
            off = shared + self.rng.gauss(0.0, self.sigma / 2)
            out[m] = {
                "throughput": tp * math.exp(off),
                "p50_ms": p99 / 2 * math.exp(-off),
                "p99_ms": p99 * math.exp(-off),
            }
        return out


def grid_best(goals: list[ModelGoal] = GOALS) -> tuple[float, Combo]:
    import itertools

    return max(
        ((true_total(tuple(c), goals), tuple(c)) for c in itertools.product(SPACE.candidates(), repeat=len(goals))),
        key=lambda x: x[0],
    )


START: Combo = (Candidate(32, "none", 500, 1), Candidate(32, "none", 500, 1))


def _search(measurer: Any, goals: list[ModelGoal] = GOALS) -> MultiTuneSearch:
    s_runs, c_runs = default_multi_runs(SPACE, len(goals))
    s = MultiTuneSearch(measurer, goals, s_runs + c_runs, lambda _m: None)
    s.search(SPACE, START, c_runs)
    return s


def test_the_budget_is_at_most_the_single_model_budget_times_the_models() -> None:
    single = max(4, SPACE.size // 10) + 12  # tune()'s default: 10 % of the grid, then 3 runs x 4 finalists
    s_runs, c_runs = default_multi_runs(SPACE, 2)
    assert (s_runs, c_runs) == (24, 12) and s_runs + c_runs <= 2 * single
    assert (s_runs + c_runs) / SPACE.size**2 < 0.003  # of the 14,400-combination cross product


def alone_best(goal: ModelGoal) -> Candidate:
    """A model's best config with the server to itself (what a single-model tune of it finds)."""
    ok = [(truth({goal.name: c})[goal.name][0], c) for c in SPACE.candidates()
          if truth({goal.name: c})[goal.name][1] <= goal.budget_ms]  # fmt: skip
    return max(ok, key=lambda x: x[0])[1]


def test_the_pick_is_within_every_budget_and_near_the_cross_products_best() -> None:
    best_value, best_combo = grid_best()
    m = Synthetic()
    s = _search(m)
    pick = s.best()
    assert pick is not None and pick.feasible and pick.runs >= 2  # confirmed, never one run
    assert s.runs <= s.max_runs
    assert true_total(pick.combo) >= 0.95 * best_value, (pick.combo, best_combo)
    assert all(t.feasible == all(x.p99_ms <= g.budget_ms for x, g in zip(t.models, GOALS, strict=True))
               for t in s.trials.values() if t.runs)  # fmt: skip
    # Each model's best alone, served together, is over a budget: the models had to be tuned together.
    assert true_total(tuple(alone_best(g) for g in GOALS)) == 0.0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_with_a_noisy_host_the_pick_stays_within_budget_and_near_the_best(seed: int) -> None:
    best_value, _combo = grid_best()
    s = _search(Synthetic(sigma=0.05, seed=seed))  # 5 % a run, about this host's
    pick = s.best()
    assert pick is not None
    assert true_total(pick.combo) >= 0.9 * best_value  # truly within every budget (0 otherwise) and near the best


def test_only_the_model_whose_config_changed_is_reloaded() -> None:
    m = Synthetic()
    s = _search(m)
    assert len(m.loads) == s.reloads
    first = m.loads[:2]
    assert [x for x, _c in first] == ["a", "b"]  # the start loads both
    # Every later move changes one model (coordinate) or two (pair): at most that many loads per new combination.
    assert s.reloads <= 2 + 2 * (len(s.trials) - 1) + 2 * s.runs


def test_rejected_combinations_name_the_model_over_its_budget() -> None:
    s = _search(Synthetic())
    rejected = s.rejected
    assert rejected
    for t in rejected:
        over = t.over_budget(GOALS)
        assert over and all(o.split(":")[0] in ("a", "b") and "> " in o for o in over)
    res = MultiTuneResult(GOALS, "coordinate", 16, list(s.trials.values()), s.best(), s.runs, (1, 1), SPACE.size**2,
                          s.reloads, 1, 1.0, current=s.current, finalists=s.finalists)  # fmt: skip
    text = res.summary()
    assert "rejected, over a budget" in text and "picks (total" in text
    d = json.loads(json.dumps(res.to_dict()))
    assert set(d["picks"]) == {"a", "b"} and d["rejected"][0]["over_budget"]


def test_weights_change_the_pick() -> None:
    heavy_b = [ModelGoal("a", 6.0), ModelGoal("b", 9.0, weight=4.0)]
    s = _search(Synthetic(), heavy_b)
    pick = s.best()
    plain = _search(Synthetic()).best()
    assert pick is not None and plain is not None
    assert pick.combo[1].instances >= plain.combo[1].instances  # b is worth more, it gets at least as much CPU
    assert true_total(pick.combo, heavy_b) >= 0.95 * grid_best(heavy_b)[0]


def test_nothing_within_budget_gives_no_pick_and_the_closest() -> None:
    tight = [ModelGoal("a", 0.5), ModelGoal("b", 0.5)]
    s = _search(Synthetic(), tight)
    assert s.best() is None
    res = MultiTuneResult(tight, "coordinate", 16, list(s.trials.values()), None, s.runs, (1, 1), 1, 0, 1, 1.0)
    assert "no combination met every model's p99 budget; the closest was" in res.shortfall()


def test_a_failed_combination_is_recorded_not_fatal() -> None:
    class Fails(Synthetic):
        def measure(self, combo: dict[str, Candidate]) -> dict[str, Sample]:
            if combo["b"].instances == 2:
                raise PerfError("b: perf_analyzer failed")
            return super().measure(combo)

    s = _search(Fails())
    assert any(t.error for t in s.trials.values())
    pick = s.best()
    assert pick is not None and pick.combo[1].instances != 2


@pytest.mark.parametrize("stop_at", [1, 9, 20])
def test_an_interrupted_search_resumes_from_its_journal(stop_at: int) -> None:
    whole = _search(MultiJournal(Synthetic()))
    saved: list[list[Entry]] = []
    with pytest.raises(KeyboardInterrupt):
        _search(MultiJournal(Synthetic(stop_at=stop_at), (), lambda e: saved.append(list(e))))
    journal = json.loads(json.dumps(saved[-1] if saved else []))
    assert sum(e["op"] == "measure" for e in journal) == stop_at - 1
    live = Synthetic()
    resumed = _search(MultiJournal(live, journal))
    assert live.runs == whole.runs - (stop_at - 1)  # nothing measured twice
    assert resumed.runs == whole.runs
    assert resumed.best() is not None and resumed.best().combo == whole.best().combo  # type: ignore[union-attr]
    assert list(resumed.trials) == list(whole.trials)


@pytest.mark.parametrize(
    ("text", "goal"),
    [
        ("a:p99<=20ms", ModelGoal("a", 20.0)),
        ("a:p99<=0.05s,concurrency=8", ModelGoal("a", 50.0, 8)),
        ("m.v2:p99 <= 7.5 ms, weight=2, c=4", ModelGoal("m.v2", 7.5, 4, 2.0)),
        ("a", ModelGoal("a", 11.0)),
    ],
)
def test_model_goals_parse(text: str, goal: ModelGoal) -> None:
    assert ModelGoal.parse(text, default_budget_ms=11.0) == goal


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("a", "has no latency budget"),
        ("a:p95<=3ms", "cannot read 'p95<=3ms'"),
        ("a:p99<=0ms", "must be > 0"),
        ("a:p99<=5ms,concurrency=0", "concurrency must be >= 1"),
        ("a:p99<=5ms,weight=-1", "weight must be > 0"),
        ("a:p99<=5ms,bogus=1", "cannot read 'bogus=1'"),
        (":p99<=5ms", "expected NAME:p99<=20ms"),
    ],
)
def test_bad_model_goals_say_what_is_expected(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=None) as err:
        ModelGoal.parse(text)
    assert says in str(err.value)


# --- the command line -------------------------------------------------------------------------------------------
@pytest.fixture
def spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from repoforge.servers.triton import TritonServer

    def no_server(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("a usage error must come before any server starts")

    monkeypatch.setattr(TritonServer, "start", no_server)
    shutil.copytree(ROOT / "examples" / "tabular", tmp_path / "tabular")
    return tmp_path / "tabular" / "spec.yaml"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["-m", "classifier:p99<=5ms", "-m", "classifier:p99<=9ms"], "named twice"),
        (["-m", "classifier:p99<=5ms", "-m", "nosuch:p99<=9ms"], "model 'nosuch' is not in"),
        (["-m", "classifier:p99<=5ms", "-m", "x:p99<5ms"], "cannot read"),
        (["-m", "classifier", "-m", "other"], "has no latency budget"),
        (["-m", "classifier"], "has no latency budget"),
    ],
)
def test_usage_errors_exit_2_before_any_server(spec: Path, tmp_path: Path, args: list[str], says: str) -> None:
    res = CliRunner().invoke(main, ["tune", str(spec), *args, "-o", str(tmp_path / "t")])
    assert res.exit_code == 2, res.output
    assert says in res.output
    if "nosuch" in says:
        assert "it has classifier" in res.output  # names the known models
    assert not (tmp_path / "t").exists()


def _synthetic_tune(spec: Any, goals: list[ModelGoal], **_: Any) -> MultiTuneResult:
    s = _search(Synthetic(), goals)
    best = s.best()
    patch = "models:\n- {name: a, max_batch_size: 16}\n" if best else ""
    return MultiTuneResult(goals, "coordinate", 16, list(s.trials.values()), best, s.runs, (1, 1), SPACE.size**2,
                           s.reloads, 1, 1.0, current=s.current, finalists=s.finalists, patch_yaml=patch)  # fmt: skip


def test_cli_multi_model_prints_json_and_exits_1_when_no_combination_fits(
    spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tune_multi, "tune_models", _synthetic_tune)
    res = CliRunner().invoke(main, ["tune", str(spec), "-m", "a:p99<=6ms", "-m", "b:p99<=9ms", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [m["name"] for m in data["models"]] == ["a", "b"] and set(data["picks"]) == {"a", "b"}
    assert data["best"]["feasible"] and data["rejected"]
    res = CliRunner().invoke(main, ["tune", str(spec), "-m", "a:p99<=0.5ms", "-m", "b:p99<=0.5ms"])
    assert res.exit_code == 1 and "no combination met every model's p99 budget" in res.output


def test_a_checkpoint_of_another_tune_is_refused_before_the_build(spec: Path, tmp_path: Path) -> None:
    from repoforge.errors import ArgumentError
    from repoforge.perf.tune import CHECKPOINT

    out = tmp_path / "t"
    out.mkdir()
    (out / CHECKPOINT).write_text(json.dumps({"identity": {"spec": "x", "model": "classifier", "settings": {}},
                                              "entries": []}))  # fmt: skip
    with pytest.raises(ArgumentError, match="pass --restart to discard it"):
        tune_multi.tune_models(spec, [ModelGoal("classifier", 5.0)], output=out)
