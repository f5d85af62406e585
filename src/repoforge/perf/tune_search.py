"""The tune search: given a way to measure a candidate config, which to measure next and which to pick.

Coordinate descent (with pairs of moves or an additive model of the measurements after it), the full grid, and
the confirmation of the pick by re-measuring the finalists in alternating order. Everything here is driven by a
:class:`Measurer`, so the search is tested on recorded measurements (:class:`Recorded`) without a server; the
measuring side (a tritonserver reloading each candidate, perf_analyzer runs) is :mod:`repoforge.perf.tune`.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Callable, Hashable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol, TypeVar

import numpy as np

from repoforge.perf.analyzer import PerfError

Progress = Callable[[str], None]
#: What a race is run between: a candidate, or a multi-model tune's combination of them.
K = TypeVar("K", bound=Hashable)
#: One perf run of a candidate: throughput (infer/s), p50_ms, p99_ms and, when known, rows_per_exec.
Sample = dict[str, float]


class Measurer(Protocol):
    """The measuring side of the search."""

    def load(self, cand: Candidate) -> str:
        """Serve ``cand``; return the served config's performance key. Raises for a config the server refuses."""
        ...

    def measure(self, cand: Candidate) -> Sample:
        """One run of the loaded ``cand``. PerfError: this candidate failed; TuneError: stop the search."""
        ...


#: Preferred-batch-size options, as names (the sizes depend on max_batch_size).
#: ``none`` = no preferred sizes, ``half_max`` = [mbs/2, mbs], ``max`` = [mbs].
PREFERRED_MODES = ("none", "half_max", "max")


class TuneError(PerfError):
    """Tuning cannot start or cannot go on; the message is one line that says what to do."""


# --------------------------------------------------------------------------------------------
# Search space
# --------------------------------------------------------------------------------------------
def preferred_sizes(mode: str, max_batch_size: int) -> list[int]:
    if mode == "none":
        return []
    if mode == "max":
        return [max_batch_size]
    if mode == "half_max":
        half = max_batch_size // 2
        return [half, max_batch_size] if half >= 1 and half != max_batch_size else [max_batch_size]
    raise ValueError(f"preferred batch size mode must be one of {', '.join(PREFERRED_MODES)}, not {mode!r}")


@dataclass(frozen=True)
class Candidate:
    """One point of the search space. ``intra_op_threads`` None = leave the config's value."""

    max_batch_size: int
    preferred: str
    max_queue_delay_us: int
    instances: int
    intra_op_threads: int | None = None

    @property
    def preferred_batch_sizes(self) -> list[int]:
        return preferred_sizes(self.preferred, self.max_batch_size)

    def label(self) -> str:
        pref = f"[{','.join(map(str, self.preferred_batch_sizes))}]" if self.preferred_batch_sizes else "none"
        threads = f" t{self.intra_op_threads}" if self.intra_op_threads is not None else ""
        return f"mbs {self.max_batch_size} pref {pref} delay {self.max_queue_delay_us}us x{self.instances}{threads}"

    def short_label(self) -> str:
        """mbs/preferred/delay/instances[/threads], for labelling points in a plot."""
        pref = ",".join(map(str, self.preferred_batch_sizes)) or "-"
        threads = f"/t{self.intra_op_threads}" if self.intra_op_threads is not None else ""
        return f"{self.max_batch_size}/[{pref}]/{self.max_queue_delay_us}us/x{self.instances}{threads}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["preferred_batch_sizes"] = self.preferred_batch_sizes
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candidate:
        return cls(int(d["max_batch_size"]), str(d["preferred"]), int(d["max_queue_delay_us"]), int(d["instances"]),
                   None if d.get("intra_op_threads") is None else int(d["intra_op_threads"]))  # fmt: skip


#: The dimensions, in the order coordinate descent visits them (biggest expected effect first).
_DIMS = ("instances", "max_queue_delay_us", "max_batch_size", "preferred", "intra_op_threads")
#: Dimensions whose values are ordered (hill-climbed one step at a time); the others are tried in full.
_ORDINAL = {"max_queue_delay_us", "max_batch_size", "intra_op_threads"}


@dataclass
class TuneSpace:
    """The grid: 4 x 3 x 5 x 2 = 120 configs by default (intra_op_threads (None,) = not tuned)."""

    max_batch_sizes: tuple[int, ...] = (8, 16, 32, 64)
    preferred: tuple[str, ...] = PREFERRED_MODES
    max_queue_delays_us: tuple[int, ...] = (0, 100, 500, 1000, 2000)
    instance_counts: tuple[int, ...] = (1, 2)
    intra_op_threads: tuple[int | None, ...] = (None,)

    def __post_init__(self) -> None:
        self.max_batch_sizes = tuple(sorted({int(v) for v in self.max_batch_sizes}))
        self.max_queue_delays_us = tuple(sorted({int(v) for v in self.max_queue_delays_us}))
        self.instance_counts = tuple(sorted({int(v) for v in self.instance_counts}))
        self.preferred = tuple(dict.fromkeys(self.preferred))
        threads = list(dict.fromkeys(self.intra_op_threads))
        self.intra_op_threads = (
            tuple(sorted(t for t in threads if t is not None)) if any(t is not None for t in threads) else (None,)
        )
        for name in _DIMS:
            if not self.values(name):
                raise TuneError(f"tune space: {name} has no values")
        if any(v < 1 for v in self.max_batch_sizes):
            raise TuneError("tune space: max_batch_size values must be >= 1 (tuning needs a batching model)")
        if any(v < 0 for v in self.max_queue_delays_us):
            raise TuneError("tune space: max_queue_delay_us values must be >= 0")
        if any(v < 1 for v in self.instance_counts):
            raise TuneError("tune space: instance counts must be >= 1")
        if any(t is not None and t < 1 for t in self.intra_op_threads):
            raise TuneError("tune space: intra_op_threads values must be >= 1")
        bad = [p for p in self.preferred if p not in PREFERRED_MODES]
        if bad:
            raise TuneError(
                f"tune space: preferred modes must be among {', '.join(PREFERRED_MODES)}, not {', '.join(bad)}"
            )

    def values(self, dim: str) -> tuple[Any, ...]:
        return {
            "max_batch_size": self.max_batch_sizes,
            "preferred": self.preferred,
            "max_queue_delay_us": self.max_queue_delays_us,
            "instances": self.instance_counts,
            "intra_op_threads": self.intra_op_threads,
        }[dim]

    @property
    def size(self) -> int:
        return math.prod(len(self.values(d)) for d in _DIMS)

    def candidates(self) -> list[Candidate]:
        """Every grid point (max_batch_size outermost)."""
        return [Candidate(m, p, d, i, t) for m, p, d, i, t in itertools.product(
            self.max_batch_sizes, self.preferred, self.max_queue_delays_us, self.instance_counts, self.intra_op_threads)]  # fmt: skip

    def snap(self, mbs: int, preferred: list[int], delay_us: int, instances: int, threads: int | None) -> Candidate:
        """The grid point nearest to a config (e.g. the spec's own, where the search starts)."""

        def near(values: tuple[Any, ...], v: Any) -> Any:
            if v is None or values == (None,):
                return values[0]
            return min(values, key=lambda x: (abs(math.log((x or 1) + 1) - math.log(v + 1)), x))

        m = near(self.max_batch_sizes, mbs)
        mode = next((p for p in self.preferred if preferred_sizes(p, m) == sorted(preferred)), None)
        if mode is None:
            mode = "none" if "none" in self.preferred and not preferred else self.preferred[0]
        return Candidate(m, mode, near(self.max_queue_delays_us, delay_us), near(self.instance_counts, instances),
                         near(self.intra_op_threads, threads))  # fmt: skip


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
@dataclass
class Trial:
    """One measured candidate (``runs`` perf_analyzer runs; the values are their medians, so one
    lucky or unlucky run does not decide)."""

    candidate: Candidate
    throughput: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    feasible: bool = False
    runs: int = 0
    #: Order in which the candidate was first measured (1-based; 0 = served config already measured).
    order: int = 0
    #: Average rows per model execution (the batch Triton formed), from the model statistics.
    rows_per_exec: float | None = None
    error: str | None = None
    #: The served config's performance key (see module doc); candidates sharing it share one measurement.
    served_key: str = ""
    same_as: str | None = None
    samples: list[dict[str, float]] = field(default_factory=list)

    @property
    def spread(self) -> tuple[float, float]:
        """(lowest, highest) throughput over the runs."""
        tps = [s["throughput"] for s in self.samples] or [self.throughput]
        return min(tps), max(tps)

    def describe(self) -> str:
        """Median throughput with the spread of the runs, and the median p99."""
        lo, hi = self.spread
        runs = f" ({lo:,.0f}–{hi:,.0f} over {self.runs} runs)" if self.runs > 1 else " (1 run)"
        return f"{self.throughput:,.0f} infer/s{runs}, p50 {self.p50_ms:.2f} ms, p99 {self.p99_ms:.2f} ms"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["candidate"] = self.candidate.to_dict()
        d["label"] = self.candidate.label()
        d["spread"] = list(self.spread)
        return d


# --------------------------------------------------------------------------------------------
# Confirming the pick (pure functions: given measurements in, decisions out)
# --------------------------------------------------------------------------------------------
def finalists(ranked: list[Trial], current: Trial | None, k: int) -> list[Trial]:
    """The ``k`` best-ranked trials within budget, plus the current spec's config when it was measured
    within budget: the winner is then also judged against what the user already has."""
    top = list(ranked[: max(0, k)])
    if (
        current is not None
        and current.feasible
        and current.error is None
        and current.same_as is None
        and all(t is not current for t in top)
    ):
        top.append(current)
    return top


R = TypeVar("R")


def confirmation_schedule(trials: list[R], runs: int) -> list[R]:
    """``runs`` re-measurements in alternating order (A B C, C B A, A B C, ...): each round measures every
    finalist once and the reversed order cancels a host that gets steadily busier or quieter."""
    if not trials or runs <= 0:
        return []
    order: list[R] = []
    forward = True
    while len(order) < runs:
        order += trials if forward else trials[::-1]
        forward = not forward
    return order[:runs]


def _confirmed(t: Trial) -> bool:
    return t.error is None and t.runs >= 2


def pick_confirmed(trials: list[Trial]) -> Trial | None:
    """The highest median throughput among re-measured (>= 2 runs) trials whose median p99 is within budget;
    a candidate measured once never wins over re-measured ones."""
    ok = [t for t in trials if _confirmed(t) and t.feasible]
    return max(ok, key=lambda t: t.throughput) if ok else None


def within_noise(a: Trial, b: Trial) -> bool:
    """Whether two re-measured trials' throughput runs overlap: their difference is not more than the
    runs of either one vary by themselves."""
    (alo, ahi), (blo, bhi) = a.spread, b.spread
    return alo <= bhi and blo <= ahi


def verdict(best: Trial | None, current: Trial | None, budget_ms: float) -> str:
    """One line comparing the pick with the current spec's config."""
    if current is None or current.error is not None or not current.runs:
        return "the current config was not measured"
    if not current.feasible:
        return f"the current config ({current.candidate.label()}) is over the {budget_ms:g} ms budget: p99 {current.p99_ms:.2f} ms"
    if best is None:
        return "no re-measured candidate stayed within the budget"
    if best is current or best.candidate == current.candidate:
        return "the current config is already as good as any found"
    if _confirmed(best) and _confirmed(current) and within_noise(best, current):
        return (
            f"the current config is already as good as any found: the best, {best.describe()}, is within the runs' "
            f"spread of the current one, {current.describe()}"
        )
    gain = best.throughput / current.throughput - 1 if current.throughput else 0.0
    return f"the best beats the current config by {gain:+.0%} (medians; their runs do not overlap): current {current.describe()}"


def race_scores(rounds: list[dict[K, float]]) -> dict[K, tuple[float, int]]:
    """Per candidate: the mean over the rounds it ran in of its log throughput less that round's mean, and how
    many rounds. Everything a round shares (the host's load at the time) cancels out of the score."""
    rel: dict[K, list[float]] = {}
    for r in rounds:
        if len(r) < 2:
            continue
        mid = statistics.fmean(r.values())
        for c, v in r.items():
            rel.setdefault(c, []).append(v - mid)
    return {c: (statistics.fmean(v), len(v)) for c, v in rel.items()}


def race_noise(rounds: list[dict[K, float]], scores: dict[K, tuple[float, int]]) -> float:
    """One run's noise (standard deviation of log throughput) once the rounds' shared part is taken out, from how
    far each run is from its candidate's score; at least 2 % (fewer runs than that can tell apart)."""
    dev: list[float] = []
    for r in rounds:
        if len(r) < 2:
            continue
        mid = statistics.fmean(r.values())
        dev += [v - mid - scores[c][0] for c, v in r.items() if c in scores and scores[c][1] >= 2]
    return max(0.02, math.sqrt(sum(d * d for d in dev) / max(1, len(dev) - len(scores))) if dev else 0.02)


def race(
    finalists: list[R],
    runs: int,
    *,
    key: Callable[[R], Hashable],
    run_once: Callable[[R], float],
    feasible: Callable[[R], bool],
    label: Callable[[R], str],
    over_budget: Callable[[R], str],
    z: float,
    say: Callable[[str], None],
    scores: dict[Any, tuple[float, int]],
) -> list[R]:
    """Re-measure the finalists in rounds, each round every finalist still in the race once, in alternating order;
    from the second round on, drop those clearly slower than the leader (or over budget), so the runs left go to
    the ones that could still win. A finalist is scored only against the others of the same rounds
    (:func:`race_scores`), so the host getting busier between rounds moves no one's score. One race for a single
    model's candidates and for multi-model combinations: `run_once` measures one more run and returns its log
    throughput (a PerfError or an exhausted budget takes that finalist out); `scores` is rewritten after every
    round. Returns the survivors."""
    alive, rounds, forward = list(finalists), [], True
    while len(alive) >= 2 and runs >= len(alive):
        got: dict[Hashable, float] = {}
        for t in alive if forward else alive[::-1]:
            runs -= 1
            try:
                got[key(t)] = run_once(t)
            except TuneError:
                raise
            except (_BudgetExhausted, PerfError) as exc:
                say(f"could not measure {label(t)} again, out of the race: {exc}")
        forward = not forward
        rounds.append(got)
        alive = [t for t in alive if key(t) in got]
        scores.clear()
        scores.update(race_scores(rounds))
        if len(rounds) < 2 or len(alive) < 2:
            continue
        within = [t for t in alive if feasible(t)] or alive
        for t in alive:
            if t not in within:
                say(f"out of the race: {label(t)}{over_budget(t)}")
        noise = race_noise(rounds, scores)
        lead = max(scores[key(t)][0] for t in within)
        keep = []
        for t in within:
            score, n = scores[key(t)]
            if score >= lead - z * noise * math.sqrt(2.0 / n):
                keep.append(t)
            else:
                say(f"out of the race: {label(t)}, {math.exp(score - lead) - 1:+.0%} vs the leader over {n} rounds "
                    f"(noise {noise:.0%} a run)")  # fmt: skip
        alive = keep
    return alive


def _log_spread(values: Iterable[Iterable[float]]) -> float:
    """Pooled standard deviation of the logs of each group's values about the group's own mean (one run's noise)."""
    dev: list[float] = []
    groups = 0
    for vs in values:
        logs = [math.log(max(v, 1e-9)) for v in vs]
        if len(logs) >= 2:
            mid = statistics.fmean(logs)
            dev += [x - mid for x in logs]
            groups += 1
    return math.sqrt(sum(d * d for d in dev) / (len(dev) - groups)) if len(dev) > groups else 0.0


def pick_with_headroom(raced: list[Trial], scores: dict[Any, tuple[float, int]], budget_ms: float, z: float) -> Trial:
    """The final choice among a race's survivors within budget. A pick whose p99 is over the budget when measured
    again is a failed tune, and the runs near the budget are as noisy as the throughput, so:

    1. those whose p99 is clearly within the budget (median p99 times ``z`` noise standard errors under it) go first,
       when there are any;
    2. among those, every one whose race score (:func:`race_scores`) is within ``z`` standard errors of the leader's
       is as fast as far as the runs can tell, and of those the one with the lowest median p99 wins (the most
       headroom: it stays within budget when the host gets busier).

    Noise: one run's spread of log throughput and of log p99 within each finalist's runs, pooled (at least 2 %)."""
    tp_noise = max(0.02, _log_spread([s["throughput"] for s in t.samples] for t in raced))
    p99_noise = max(0.02, _log_spread([s["p99_ms"] for s in t.samples] for t in raced))
    safe = [t for t in raced if t.p99_ms * math.exp(z * p99_noise / math.sqrt(t.runs)) <= budget_ms] or raced
    lead = max(scores[t.candidate][0] for t in safe)
    close = [t for t in safe if scores[t.candidate][0] >= lead - z * tp_noise * math.sqrt(2.0 / scores[t.candidate][1])]
    return min(close, key=lambda t: (t.p99_ms, -scores[t.candidate][0]))


class _BudgetExhausted(Exception):
    pass


def _score(t: Trial) -> tuple[int, float]:
    """Higher is better: feasible by throughput, then infeasible by (lower) p99, then failures."""
    if t.error is not None or not t.runs:
        return (0, 0.0)
    return (2, t.throughput) if t.feasible else (1, -t.p99_ms)


class TuneSearch:
    """The search, driven by a measurer: which candidate to measure next, when to stop, and which to pick.

    ``measurer.load(candidate)`` serves a candidate and returns the served config's key (candidates with the
    same key share one measurement); ``measurer.measure(candidate)`` is one run of the loaded candidate.
    Nothing here starts a server: tests and the bench replay recorded measurements (:class:`Recorded`).
    """

    def __init__(self, measurer: Measurer, budget_ms: float, max_runs: int, say: Progress) -> None:
        self.measurer, self.budget_ms, self.max_runs, self.say = measurer, budget_ms, max_runs, say
        self.trials: dict[Candidate, Trial] = {}
        self.by_served: dict[str, Trial] = {}
        self.runs = 0
        self.reloads = 0
        self.loaded: Candidate | None = None
        #: "screen" (a spread-out design, then the additive model), or a descent first, then "model" (the
        #: additive model picks the next candidate) or "pairs".
        self.strategy = "screen"
        #: With strategy "screen": runs (the start's included) on the spread-out design before following the
        #: model; None = half the search runs.
        self.screen_runs: int | None = None
        #: Rank the final pick by measured throughput shrunk towards the model (coordinate search only).
        self.smooth = True
        self.space: TuneSpace | None = None
        #: The spec's own config (where the search starts), how many top candidates are re-measured, and those.
        self.start: Candidate | None = None
        self.finalist_count = 4
        self.finalists: list[Trial] = []
        #: Race the finalists (drop one once it is clearly slower, in rounds that cancel the host's drift).
        self.race = True
        #: How clearly: dropped when its score is below the leader's by more than race_z noise standard errors.
        self.race_z = 1.0
        #: After a race: the finalists still in it, and each one's score (see :func:`race_scores`).
        self.survivors: list[Trial] = []
        self.scores: dict[Candidate, tuple[float, int]] = {}
        #: The final choice among the race's survivors within budget (:func:`pick_with_headroom`): prefer p99 headroom
        #: among those whose throughput the leader's is within the noise of, and those clearly within the budget.
        self.headroom = True
        self.headroom_z = 1.0
        #: With fewer finalists within budget than ``finalist_count``, also race those measured over the budget by
        #: less than this (relative; 0 = never), lowest p99 first (:meth:`_near_budget`).
        self.near_budget = 0.15

    # -- one candidate ----------------------------------------------------------------------
    def _load(self, cand: Candidate) -> str:
        """Serve the candidate; the served config's key."""
        key = self.measurer.load(cand)
        self.reloads += 1
        self.loaded = cand
        return key

    def _measure_once(self, cand: Candidate, limit: int | None = None) -> Sample:
        if self.runs >= (self.max_runs if limit is None else min(limit, self.max_runs)):
            raise _BudgetExhausted
        self.runs += 1
        return self.measurer.measure(cand)

    def _record(self, trial: Trial, sample: Sample) -> None:
        trial.samples.append(dict(sample))
        trial.runs = len(trial.samples)
        trial.throughput = statistics.median(s["throughput"] for s in trial.samples)
        trial.p50_ms = statistics.median(s["p50_ms"] for s in trial.samples)
        trial.p99_ms = statistics.median(s["p99_ms"] for s in trial.samples)
        rs = [s["rows_per_exec"] for s in trial.samples if "rows_per_exec" in s]
        trial.rows_per_exec = statistics.median(rs) if rs else None
        trial.feasible = trial.p99_ms <= self.budget_ms

    def _describe(self, t: Trial) -> str:
        if t.error:
            return f"{t.candidate.label()}: failed: {t.error}"
        ok = "within budget" if t.feasible else f"over the {self.budget_ms:g} ms budget"
        rows = f", {t.rows_per_exec:.1f} rows/exec" if t.rows_per_exec else ""
        return f"{t.candidate.label()}: {t.throughput:,.0f} infer/s, p99 {t.p99_ms:.2f} ms{rows} ({ok})"

    def evaluate(self, cand: Candidate, limit: int | None = None) -> Trial:
        """The candidate's trial, measuring it (one perf run) unless it or its served config was
        measured; _BudgetExhausted when that run would go past ``limit`` (default: max_runs)."""
        if cand in self.trials:
            return self.trials[cand]
        if self.runs >= (self.max_runs if limit is None else min(limit, self.max_runs)):
            raise _BudgetExhausted
        trial = Trial(candidate=cand)
        try:
            key = self._load(cand)
        except Exception as exc:  # noqa: BLE001 - a config Triton rejects is a failed candidate, not a failed tune
            trial.error = " ".join(str(exc).split())[:300]
            self.trials[cand] = trial
            self.say(f"[{self.runs}/{self.max_runs}] {self._describe(trial)}")
            return trial
        trial.served_key = key
        twin = self.by_served.get(key)
        if twin is not None:  # Triton serves exactly what was already measured
            trial.throughput, trial.p50_ms, trial.p99_ms = twin.throughput, twin.p50_ms, twin.p99_ms
            trial.feasible, trial.runs, trial.rows_per_exec = twin.feasible, twin.runs, twin.rows_per_exec
            trial.error, trial.same_as = twin.error, twin.candidate.label()
            self.trials[cand] = trial
            self.say(
                f"[{self.runs}/{self.max_runs}] {cand.label()}: served as {twin.candidate.label()}, not measured again"
            )
            return trial
        try:
            sample = self._measure_once(cand, limit)
        except TuneError:
            raise
        except PerfError as exc:
            trial.error = str(exc)[:300]
        else:
            self._record(trial, sample)
        trial.order = self.runs
        self.trials[cand] = trial
        self.by_served[key] = trial
        self.say(f"[{self.runs}/{self.max_runs}] {self._describe(trial)}")
        return trial

    def remeasure(self, trial: Trial) -> None:
        """One more run of an already measured candidate (averaged in); its served twins follow."""
        if self.loaded != trial.candidate:
            self._load(trial.candidate)
        self._record(trial, self._measure_once(trial.candidate))
        for t in self.trials.values():
            if t.same_as == trial.candidate.label():
                t.throughput, t.p50_ms, t.p99_ms, t.feasible, t.runs = (
                    trial.throughput,
                    trial.p50_ms,
                    trial.p99_ms,
                    trial.feasible,
                    trial.runs,
                )
                t.samples = list(trial.samples)
        self.say(f"[{self.runs}/{self.max_runs}] again: {self._describe(trial)}")

    def _ranked_feasible(self, space: TuneSpace | None = None) -> list[Trial]:
        """Measured candidates within budget, best first. With a space (the coordinate search), the
        throughput each is ranked by is shrunk towards the additive model's prediction (geometric
        mean), so one lucky run does not decide between configs the model says are equal."""
        ok = [t for t in self.trials.values() if t.feasible and t.error is None and t.same_as is None]
        fit = self._fit(space) if space is not None and self.smooth else None
        if fit is None:
            return sorted(ok, key=lambda t: -t.throughput)
        predict = fit[0]
        return sorted(ok, key=lambda t: -math.sqrt(t.throughput * predict(t.candidate)[0]))

    def best(self) -> Trial | None:
        """After :meth:`confirm`: the race's leader within budget, or the best re-measured finalist by median
        (never a single run); before it (or with no runs left to confirm), the best-ranked trial."""
        raced = [t for t in self.survivors if _confirmed(t) and t.feasible and t.candidate in self.scores]
        if raced and self.headroom:
            return pick_with_headroom(raced, self.scores, self.budget_ms, self.headroom_z)
        if raced:
            return max(raced, key=lambda t: self.scores[t.candidate][0])
        if any(_confirmed(t) for t in self.finalists):
            return pick_confirmed(self.finalists)
        ranked = self._ranked_feasible(self.space)
        return ranked[0] if ranked else None

    @property
    def current(self) -> Trial | None:
        return self.trials.get(self.start) if self.start is not None else None

    def confirm(self, runs: int) -> None:
        """Spend up to ``runs`` re-measuring the top candidates (and the current config) in alternating order:
        a race (:meth:`race_finalists`) when the runs allow two whole rounds, else as many as there are runs."""
        self.finalists = finalists(self._ranked_feasible(self.space), self.current, self.finalist_count)
        if self.near_budget and len(self.finalists) < self.finalist_count:
            self.finalists += self._near_budget()[: self.finalist_count - len(self.finalists)]
        runs = min(runs, self.max_runs - self.runs)
        if self.race and len(self.finalists) >= 2 and runs >= 2 * len(self.finalists):
            self.race_finalists(runs)
            return
        if len(self.finalists) and runs > 0:
            self.say(f"re-measuring {len(self.finalists)} finalists in alternating order ({runs} runs)")
        for t in confirmation_schedule(self.finalists, min(runs, self.max_runs - self.runs)):
            try:
                self.remeasure(t)
            except TuneError:
                raise
            except (_BudgetExhausted, PerfError) as exc:
                self.say(f"could not measure {t.candidate.label()} again: {exc}")

    def _near_budget(self) -> list[Trial]:
        """Measured candidates over the budget by less than ``near_budget`` (relative), lowest p99 first: one run
        of a config near the budget lands on either side of it, so with fewer finalists within budget than
        asked for, these are re-measured too rather than leaving the confirmation runs unspent (or the tune with
        no pick because the host was busy during the search)."""
        near = [t for t in self.trials.values() if t.error is None and t.runs and t.same_as is None
                and not t.feasible and t.p99_ms <= self.budget_ms * (1 + self.near_budget)]  # fmt: skip
        return sorted(near, key=lambda t: t.p99_ms)

    def race_finalists(self, runs: int) -> None:
        """Re-measure the finalists in rounds (:func:`race`)."""
        self.say(f"racing {len(self.finalists)} finalists in rounds ({runs} runs at most)")

        def run_once(t: Trial) -> float:
            self.remeasure(t)
            return math.log(max(t.samples[-1]["throughput"], 1e-9))

        self.survivors = race(
            self.finalists, runs, key=lambda t: t.candidate, run_once=run_once, feasible=lambda t: t.feasible,
            label=lambda t: t.candidate.label(), over_budget=lambda t: f", p99 {t.p99_ms:.2f} ms over budget",
            z=self.race_z, say=self.say, scores=self.scores,
        )  # fmt: skip

    # -- searches ---------------------------------------------------------------------------
    def grid(self, space: TuneSpace, seed: int = 0) -> None:
        """Every candidate once, in a shuffled (seeded) order, so a machine that gets busier or
        quieter during the sweep does not masquerade as the effect of whichever knob the grid
        order happens to vary slowest."""
        order = space.candidates()
        random.Random(seed).shuffle(order)
        for cand in order:
            self.evaluate(cand)

    def _descend(self, space: TuneSpace, incumbent: Trial, limit: int) -> Trial:
        """Coordinate passes from ``incumbent`` until one moves nothing; returns the new incumbent."""
        moved = True
        while moved:
            moved = False
            for dim in _DIMS:
                values = space.values(dim)
                if len(values) < 2:
                    continue
                cur = getattr(incumbent.candidate, dim)
                if dim in _ORDINAL:
                    i = values.index(cur)
                    for step in (-1, +1):
                        j = i + step
                        improved = False
                        while 0 <= j < len(values):
                            t = self.evaluate(replace(incumbent.candidate, **{dim: values[j]}), limit)
                            if _score(t) <= _score(incumbent):
                                break
                            incumbent, improved, moved = t, True, True
                            j += step
                        if improved:
                            break  # climbed one way; the other way was worse already
                else:
                    for v in values:
                        if v != cur:
                            t = self.evaluate(replace(incumbent.candidate, **{dim: v}), limit)
                            if _score(t) > _score(incumbent):
                                incumbent, moved = t, True
        return incumbent

    def _utility(self, t: Trial | None) -> float:
        """One number per trial for ordering guesses: throughput, scaled down steeply over budget."""
        if t is None or t.error is not None or not t.runs:
            return 0.0
        return t.throughput if t.feasible else t.throughput * (self.budget_ms / t.p99_ms) ** 3

    def _pair_moves(self, space: TuneSpace, incumbent: Trial) -> list[Candidate]:
        """Untried candidates two one-step moves away from the incumbent, best guess first: the sum
        of what each single move did when measured (unmeasured single moves count as neutral)."""
        c = incumbent.candidate
        base = self._utility(incumbent)
        moves: list[tuple[str, Any]] = []
        for dim in _DIMS:
            values = space.values(dim)
            if len(values) < 2:
                continue
            i = values.index(getattr(c, dim))
            alts = (
                [values[j] for j in (i - 1, i + 1) if 0 <= j < len(values)]
                if dim in _ORDINAL
                else [v for v in values if v != values[i]]
            )
            moves += [(dim, v) for v in alts]

        def gain(dim: str, v: Any) -> float:
            t = self.trials.get(replace(c, **{dim: v}))
            return self._utility(t) - base if t is not None else 0.0

        pairs = []
        for (d1, v1), (d2, v2) in itertools.combinations(moves, 2):
            if d1 == d2:
                continue
            cand = replace(c, **{d1: v1, d2: v2})
            if cand not in self.trials:
                pairs.append((gain(d1, v1) + gain(d2, v2), cand))
        pairs.sort(key=lambda x: -x[0])
        return [cand for _g, cand in pairs]

    def _farthest_untried(self, space: TuneSpace) -> Candidate | None:
        """The untried grid point with the most dimensions differing from its nearest measured one."""
        tried = list(self.trials)
        best, best_d = None, -1
        for cand in space.candidates():
            if cand in self.trials:
                continue
            d = min((sum(getattr(cand, k) != getattr(t, k) for k in _DIMS) for t in tried), default=len(_DIMS))
            if d > best_d:
                best, best_d = cand, d
        return best

    def _fit(self, space: TuneSpace) -> tuple[Callable[[Candidate], tuple[float, float]], int] | None:
        """An additive model of log throughput and log p99 (one effect per dimension value, ridge
        regression) fitted to every measurement; None before there are enough of them."""
        features = self._features_of(space)
        rows = [t for t in self.trials.values() if t.error is None and t.runs and t.same_as is None]
        if len(rows) < 4:
            return None
        X = np.array([features(t.candidate) for t in rows])
        w = np.sqrt([t.runs for t in rows])[:, None]
        lam = 0.3 * np.eye(X.shape[1])
        lam[-1, -1] = 0.0
        ys = [np.log([t.throughput for t in rows]), np.log([t.p99_ms for t in rows])]
        coefs = [np.linalg.solve((X * w).T @ (X * w) + lam, (X * w).T @ (y[:, None] * w)).ravel() for y in ys]

        def predict(c: Candidate) -> tuple[float, float]:
            x = features(c)
            return float(np.exp(x @ coefs[0])), float(np.exp(x @ coefs[1]))

        return predict, len(rows)

    def _model_moves(self, space: TuneSpace) -> list[Candidate]:
        """Untried candidates, best predicted first (throughput, scaled down steeply when the
        predicted p99 is over budget)."""
        fit = self._fit(space)
        untried = [c for c in space.candidates() if c not in self.trials]
        if fit is None or not untried:
            return untried
        predict, _n = fit

        def utility(c: Candidate) -> float:
            tp, p99 = predict(c)
            return tp if p99 <= self.budget_ms else tp * (self.budget_ms / p99) ** 3

        return sorted(untried, key=lambda c: -utility(c))

    def _features(self, space: TuneSpace) -> Callable[[Candidate], Any]:
        return self._features_of(space)

    @staticmethod
    def _features_of(space: TuneSpace) -> Callable[[Candidate], Any]:
        """One 0/1 column per dimension value (of dimensions with a choice), and a constant."""
        levels = [(d, v) for d in _DIMS for v in space.values(d) if len(space.values(d)) > 1]
        index = {lv: i for i, lv in enumerate(levels)}

        def features(c: Candidate) -> Any:
            x = np.zeros(len(levels) + 1)
            x[-1] = 1.0
            for d in _DIMS:
                i = index.get((d, getattr(c, d)))
                if i is not None:
                    x[i] = 1.0
            return x

        return features

    def _screen_moves(self, space: TuneSpace) -> list[Candidate]:
        """Untried candidates, the one that adds most to what the measurements so far can tell apart first
        (greedy D-optimal: the largest x' M^-1 x for the additive model's features x and the information M of
        the measured ones), ties to the model's best guess."""
        feat = self._features(space)
        rows = [t.candidate for t in self.trials.values() if t.error is None and t.runs and t.same_as is None]
        n = len(feat(space.candidates()[0]))
        m = np.eye(n) * 0.3 + sum((np.outer(feat(c), feat(c)) for c in rows), np.zeros((n, n)))
        inv = np.linalg.inv(m)
        guess = {c: i for i, c in enumerate(self._model_moves(space))}
        untried = [c for c in space.candidates() if c not in self.trials]
        return sorted(untried, key=lambda c: (-round(float(feat(c) @ inv @ feat(c)), 6), guess.get(c, 0)))

    def _follow_model(self, space: TuneSpace, search_runs: int) -> None:
        """Measure the additive model's best guess, refit, again, until the runs are spent."""
        while True:
            ranked = self._model_moves(space)
            if not ranked:
                break
            self.evaluate(ranked[0], search_runs)

    def _screen(self, space: TuneSpace, start: Candidate, search_runs: int) -> None:
        """The start, then a spread-out design (:meth:`_screen_moves`) for ``screen_runs`` (default half the search
        runs), then the model's best guesses: every dimension's values are seen in several runs before the model
        is trusted, so no single noisy run steers the search (a descent takes one noisy comparison per step)."""
        self.evaluate(start, search_runs)
        screen = self.screen_runs if self.screen_runs is not None else max(2, search_runs // 2)
        while self.runs < min(screen, search_runs):
            moves = self._screen_moves(space)
            if not moves:
                break
            self.evaluate(moves[0], search_runs)
        self._follow_model(space, search_runs)

    def _descend_then(self, space: TuneSpace, start: Candidate, search_runs: int) -> None:
        incumbent = self._descend(space, self.evaluate(start, search_runs), search_runs)
        if self.strategy != "pairs":
            self._follow_model(space, search_runs)
            return
        while True:
            moved = False
            for cand in self._pair_moves(space, incumbent):
                t = self.evaluate(cand, search_runs)
                if _score(t) > _score(incumbent):
                    incumbent, moved = t, True
                    break
            if moved:
                incumbent = self._descend(space, incumbent, search_runs)
                continue
            fresh = self._farthest_untried(space)
            if fresh is None:
                break
            t = self.evaluate(fresh, search_runs)
            incumbent = max(self._descend(space, t, search_runs), incumbent, key=_score)

    def coordinate(self, space: TuneSpace, start: Candidate, confirm: int) -> None:
        """Search with ``max_runs - confirm`` runs, then confirm the best with ``confirm`` runs.

        Strategy "screen" (the default, robust to a noisy host): the start (the spec's own config), a spread-out
        design over the space, then the additive model's best guesses (:meth:`_screen`). Strategies "model" and
        "pairs" descend from the start first:

        1. Descent: per dimension, hill-climb ordered values one step at a time (stop at the first
           step that does not improve), try every value of unordered ones; repeat passes until a
           pass moves nothing.
        2. Converged with runs left: "model" measures the additive model's best guesses; "pairs" tries the
           incumbent's two-dimension neighbours (interactions a one-at-a-time search cannot see), most promising
           first, an improvement restarting the descent, then restarts from the untried config farthest from
           everything measured.

        Infeasible candidates rank below every feasible one (and among themselves by p99), so with
        nothing feasible yet the search walks towards lower latency. Finally ``confirm`` runs re-measure
        the best feasible candidates and the start in rounds, racing them (:meth:`confirm`), and the pick is
        the race's leader, so it is never one lucky run.
        """
        search_runs = self.max_runs - confirm
        self.space = space
        self.start = start
        try:
            if self.strategy == "screen":
                self._screen(space, start, search_runs)
            else:
                self._descend_then(space, start, search_runs)
        except _BudgetExhausted:
            self.say(f"search budget used ({self.runs} runs); confirming the best candidates")
        self.confirm(self.max_runs - self.runs)


class Recorded:
    """A :class:`Measurer` replaying recorded trials (e.g. a grid run's ``tune.json``): each measure of a candidate
    returns its next recorded sample (cycling); a candidate not recorded, or recorded as failed, fails."""

    def __init__(self, trials: Iterable[Trial]) -> None:
        self.table = {t.candidate: t for t in trials}
        self.measured: dict[Candidate, int] = {}

    def load(self, cand: Candidate) -> str:
        t = self.table.get(cand)
        return t.served_key if t is not None and t.served_key else cand.label()

    def measure(self, cand: Candidate) -> Sample:
        t = self.table.get(cand)
        if t is None or t.error:
            raise PerfError(t.error if t is not None and t.error else f"{cand.label()} was not recorded")
        samples = t.samples or [{"throughput": t.throughput, "p50_ms": t.p50_ms, "p99_ms": t.p99_ms}]
        n = self.measured.get(cand, 0)
        self.measured[cand] = n + 1
        return dict(samples[n % len(samples)])


#: One answer of a measurer, as a checkpoint stores it: {"op": "load"|"measure", "candidate": label, then
#: "key" (load), "sample" (measure) or "error" (either)}.
Entry = dict[str, Any]


class Journal:
    """A :class:`Measurer` that writes down every answer of the measurer it wraps, and first answers from the
    answers of an interrupted run (``replay``), so a rerun of the same tune continues where it stopped.

    The search is deterministic given the answers it gets (the grid's order is seeded), so replaying them in order
    rebuilds its exact state, runs spent included, and it then goes on measuring live. A call that is not the next
    recorded one ends the replay (nothing after it is trusted). ``save`` gets the whole journal after each live answer.
    """

    def __init__(self, inner: Measurer, replay: Iterable[Entry] = (), save: Callable[[list[Entry]], None] | None = None) -> None:  # fmt: skip
        self.inner, self.save = inner, save
        self.pending: list[Entry] = list(replay)
        self.entries: list[Entry] = []
        self.replayed = 0
        #: What the wrapped measurer actually serves (a replayed load served nothing).
        self.live_loaded: Candidate | None = None

    def _next(self, op: str, cand: Candidate) -> Entry | None:
        if self.pending and self.pending[0].get("op") == op and self.pending[0].get("candidate") == cand.label():
            entry = self.pending.pop(0)
            self.entries.append(entry)
            self.replayed += 1
            return entry
        self.pending.clear()
        return None

    def _keep(self, entry: Entry) -> None:
        self.entries.append(entry)
        if self.save is not None:
            self.save(self.entries)

    def load(self, cand: Candidate) -> str:
        entry = self._next("load", cand)
        if entry is not None:
            if "error" in entry:
                raise PerfError(entry["error"])
            return str(entry["key"])
        try:
            key = self.inner.load(cand)
        except TuneError:
            raise
        except Exception as exc:  # a refused config is an answer too; the search records it as a failed candidate
            self.live_loaded = None
            self._keep({"op": "load", "candidate": cand.label(), "error": " ".join(str(exc).split())[:300]})
            raise
        self.live_loaded = cand
        self._keep({"op": "load", "candidate": cand.label(), "key": key})
        return key

    def measure(self, cand: Candidate) -> Sample:
        entry = self._next("measure", cand)
        if entry is not None:
            if "error" in entry:
                raise PerfError(entry["error"])
            return {k: float(v) for k, v in entry["sample"].items()}
        if self.live_loaded != cand:  # the search loaded it during the replay: serve it for real first
            self.inner.load(cand)
            self.live_loaded = cand
        try:
            sample = self.inner.measure(cand)
        except TuneError:
            raise
        except PerfError as exc:
            self._keep({"op": "measure", "candidate": cand.label(), "error": str(exc)[:300]})
            raise
        self._keep({"op": "measure", "candidate": cand.label(), "sample": dict(sample)})
        return sample


class Noisy:
    """A :class:`Measurer` drawing each run from a known landscape with this host's kind of noise, so a search can be
    scored against the truth over many seeded replays: ``truth`` maps a candidate to its (throughput, p99_ms) and
    candidates absent from it fail. Each run's log throughput is off by ``drift`` (the host getting busier or
    quieter: an AR(1) walk over the sequence of runs, correlation ``rho`` from one run to the next) plus ``sigma``
    (independent per run); p99 moves the other way (a busier host serves the same concurrency slower)."""

    def __init__(self, truth: dict[Candidate, tuple[float, float]], sigma: float, drift: float = 0.0,
                 rho: float = 0.9, seed: int = 0, served: Callable[[Candidate], str] | None = None) -> None:  # fmt: skip
        self.truth, self.sigma, self.drift, self.rho = truth, sigma, drift, rho
        self.rng = random.Random(seed)
        self.served = served or (lambda c: c.label())
        self.level = self.rng.gauss(0.0, drift) if drift else 0.0
        self.runs = 0

    def load(self, cand: Candidate) -> str:
        return self.served(cand)

    def measure(self, cand: Candidate) -> Sample:
        if cand not in self.truth:
            raise PerfError(f"{cand.label()} is not in the landscape")
        self.runs += 1
        if self.drift:
            self.level = self.rho * self.level + math.sqrt(1 - self.rho**2) * self.rng.gauss(0.0, self.drift)
        off = self.level + self.rng.gauss(0.0, self.sigma)
        tp, p99 = self.truth[cand]
        return {"throughput": tp * math.exp(off), "p50_ms": p99 / 2 * math.exp(-off), "p99_ms": p99 * math.exp(-off)}


@dataclass
class Landscape:
    """What a grid recording says each config truly does, for :class:`Noisy` replays: ``truth`` maps a candidate to
    its (throughput, p99_ms), ``served`` to its served config's key (twins share one truth), and ``sigma`` is one run's
    noise in the recording (log throughput, once the additive model and the config's own mean are taken out)."""

    truth: dict[Candidate, tuple[float, float]]
    served: dict[Candidate, str]
    sigma: float

    def best(self, budget_ms: float) -> float:
        return max((tp for tp, p99 in self.truth.values() if p99 <= budget_ms), default=0.0)

    def value(self, cand: Candidate | None, budget_ms: float) -> float:
        """True throughput of a pick, 0 when it is truly over the budget (or no pick)."""
        if cand is None or cand not in self.truth:
            return 0.0
        tp, p99 = self.truth[cand]
        return tp if p99 <= budget_ms else 0.0


def recorded_landscape(rows: Iterable[tuple[Candidate, str, list[Sample]]], space: TuneSpace) -> Landscape:
    """A landscape from a grid recording (candidate, served key, its runs): per served config, the additive model's
    fit (ridge, over every run) plus the config's own mean deviation from it, shrunk by how much of that deviation
    the noise explains (empirical Bayes), so one lucky run does not make a config the truth's best."""
    rows = list(rows)
    feat = TuneSearch._features_of(space)
    first: dict[str, Candidate] = {}
    runs: dict[str, list[Sample]] = {}
    for cand, key, samples in rows:
        first.setdefault(key, cand)
        runs.setdefault(key, []).extend(samples)
    keys = [k for k in first if runs[k]]
    X = np.array([feat(first[k]) for k in keys for _ in runs[k]])
    lam = 0.3 * np.eye(X.shape[1])
    lam[-1, -1] = 0.0
    fits, devs = [], []
    for name in ("throughput", "p99_ms"):
        y = np.log([s[name] for k in keys for s in runs[k]])
        coef = np.linalg.solve(X.T @ X + lam, X.T @ y)
        fit = {k: float(feat(first[k]) @ coef) for k in keys}
        dev = {k: statistics.fmean(math.log(s[name]) for s in runs[k]) - fit[k] for k in keys}
        fits.append(fit)
        devs.append(dev)
    within = [math.log(s["throughput"]) - fits[0][k] - devs[0][k] for k in keys for s in runs[k] if len(runs[k]) > 1]
    dof = len(within) - sum(1 for k in keys if len(runs[k]) > 1)
    sigma = math.sqrt(sum(w * w for w in within) / dof) if dof > 0 else 0.2
    n_mean = statistics.fmean(len(runs[k]) for k in keys)
    tau2 = max(0.0, statistics.pvariance(devs[0].values()) - sigma**2 / n_mean)
    truth: dict[Candidate, tuple[float, float]] = {}
    served: dict[Candidate, str] = {}
    for cand, key, _samples in rows:
        if key not in fits[0]:
            continue
        w = tau2 / (tau2 + sigma**2 / len(runs[key])) if tau2 > 0 else 0.0
        truth[cand] = tuple(math.exp(fits[i][key] + w * devs[i][key]) for i in (0, 1))  # type: ignore[assignment]
        served[cand] = key
    return Landscape(truth, served, sigma)


def noisy_replays(land: Landscape, budget_ms: float, sigma: float, drift: float, seeds: Iterable[int],
                  search: Callable[[Measurer], TuneSearch]) -> list[tuple[Candidate | None, int]]:  # fmt: skip
    """``search(measurer)`` (which runs a search and returns it) replayed on the landscape once per seed, each with
    its own noise: the pick and the runs it spent."""
    out: list[tuple[Candidate | None, int]] = []
    for seed in seeds:
        m = Noisy(land.truth, sigma, drift, seed=seed, served=lambda c: land.served.get(c, c.label()))
        s = search(m)
        b = s.best()
        out.append((b.candidate if b is not None else None, s.runs))
    return out
