"""`repoforge tune` with several models: tune models that share one tritonserver, each under its own p99 budget.

Models served by one server compete for its CPU, so a config that is best for a model alone can starve its
neighbour (two instances of one leave the other less of the cores). As Model Analyzer's multi-model mode
(``--run-config-profile-models-concurrently-enable``) does, a candidate here is a *combination*: one config per
model, all loaded in the same server, measured at once by one perf_analyzer per model (each at its own
concurrency, started together, windows of the same length). A combination is feasible when every model's p99 is
within that model's budget; among feasible ones the objective is the weighted total throughput
(``sum(weight * infer/s)``, weight 1 by default).

The search (:class:`MultiTuneSearch`, driven by a :class:`MultiMeasurer`, so it is tested on synthetic
measurements without a server) searches every model's dimensions at once, as Model Analyzer's quick search does
for concurrent models, instead of the cross product of the models' grids: the spec's own configs and their one-step
neighbours (one model's one dimension moved), then an additive model of every model's throughput and p99 on every
model's config (ridge regression in logs, so one model's instances slowing the other is seen) proposes the next
combination, by turns over the whole space and among the best measured one's neighbours. The run budget is
stated up front and is at most the single-model budget times the number of models: each model's single-model
search runs, then the same confirmation budget as a single tune, in which the best combinations and the spec's own
race in rounds of alternating order (:func:`race_scores`), so the pick is never one lucky run.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import yaml

from repoforge.build import build
from repoforge.errors import ArgumentError, Interrupted
from repoforge.output import write_file_atomic
from repoforge.perf.analyzer import PerfError, PerfOptions
from repoforge.perf.tune import Checkpoint, ServerMeasurer, _base_threads, _served_key, apply_candidate, spec_patch
from repoforge.perf.tune_search import (
    _DIMS,
    _ORDINAL,
    Candidate,
    Entry,
    Sample,
    Trial,
    TuneError,
    TuneSpace,
    _BudgetExhausted,
    confirmation_schedule,
    race,
)
from repoforge.servers.triton import RUN_EXIT_TIMEOUT_S, TritonServer
from repoforge.spec.load import load_spec
from repoforge.triton.config import parse_config, to_text
from repoforge.triton.names import thread_parameter

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2 as mc

__all__ = [
    "ComboTrial",
    "ModelGoal",
    "MultiJournal",
    "MultiMeasurer",
    "MultiTuneResult",
    "MultiTuneSearch",
    "default_multi_runs",
    "single_pick",
    "tune_models",
]

Progress = Callable[[str], None]
#: One candidate config per model, in the order of the goals.
Combo = tuple[Candidate, ...]


# --------------------------------------------------------------------------------------------
# What each model must meet
# --------------------------------------------------------------------------------------------
_GOAL_FORM = "NAME:p99<=20ms (optionally ,concurrency=N ,weight=W; e.g. a:p99<=20ms,concurrency=8)"
_BUDGET = re.compile(r"^p99\s*<=\s*([0-9]*\.?[0-9]+)\s*(ms|s)?$")


@dataclass(frozen=True)
class ModelGoal:
    """A model to tune, the p99 budget it must meet, at which concurrency, and its weight in the total."""

    name: str
    budget_ms: float
    #: None = the command's --concurrency.
    concurrency: int | None = None
    weight: float = 1.0

    def describe(self, concurrency: int) -> str:
        w = f", weight {self.weight:g}" if self.weight != 1.0 else ""
        return f"{self.name}: p99 <= {self.budget_ms:g} ms at concurrency {self.concurrency or concurrency}{w}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "budget_ms": self.budget_ms, "concurrency": self.concurrency, "weight": self.weight}

    @classmethod
    def parse(cls, text: str, default_budget_ms: float | None = None) -> ModelGoal:
        """``NAME``, ``NAME:p99<=20ms`` (or ``20``, ``0.02s``), then ``,concurrency=N`` / ``,weight=W`` in any order.
        ValueError with a one-line message naming the expected form."""
        name, _, rest = text.strip().partition(":")
        name = name.strip()
        if not name or not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
            raise ValueError(f"{text!r}: expected {_GOAL_FORM}")
        budget, concurrency, weight = default_budget_ms, None, 1.0
        for item in (p.strip() for p in rest.split(",") if p.strip()) if rest.strip() else ():
            m = _BUDGET.match(item)
            key, eq, value = item.partition("=")
            try:
                if m:
                    budget = float(m.group(1)) * (1000.0 if m.group(2) == "s" else 1.0)
                elif eq and key.strip() in ("concurrency", "c"):
                    concurrency = int(value)
                elif eq and key.strip() in ("weight", "w"):
                    weight = float(value)
                else:
                    raise ValueError
            except ValueError:
                raise ValueError(f"{text!r}: cannot read {item!r}; expected {_GOAL_FORM}") from None
        if rest and not rest.strip():
            raise ValueError(f"{text!r}: nothing after ':'; expected {_GOAL_FORM}")
        if budget is None:
            raise ValueError(f"{text!r} has no latency budget: write {name}:p99<=20ms or pass --latency-budget-ms")
        if budget <= 0:
            raise ValueError(f"{text!r}: the p99 budget must be > 0 ms")
        if concurrency is not None and concurrency < 1:
            raise ValueError(f"{text!r}: concurrency must be >= 1")
        if not (weight > 0 and math.isfinite(weight)):
            raise ValueError(f"{text!r}: weight must be > 0")
        return cls(name, budget, concurrency, weight)


# --------------------------------------------------------------------------------------------
# A measured combination
# --------------------------------------------------------------------------------------------
def combo_label(goals: list[ModelGoal], combo: Combo) -> str:
    return "; ".join(f"{g.name}: {c.label()}" for g, c in zip(goals, combo, strict=True))


@dataclass
class ComboTrial:
    """One measured combination: per model a :class:`Trial` (medians of its runs, feasible by its own budget),
    all measured in the same runs."""

    combo: Combo
    models: list[Trial]
    #: Order in which the combination was first measured (1-based; 0 = served as one measured before).
    order: int = 0
    error: str | None = None
    served_key: str = ""
    same_as: str | None = None

    @property
    def runs(self) -> int:
        return min((t.runs for t in self.models), default=0)

    @property
    def feasible(self) -> bool:
        return self.error is None and self.runs > 0 and all(t.feasible for t in self.models)

    def total(self, goals: list[ModelGoal]) -> float:
        """Weighted total throughput (medians)."""
        return sum(g.weight * t.throughput for g, t in zip(goals, self.models, strict=True))

    def run_totals(self, goals: list[ModelGoal]) -> list[float]:
        """Weighted total of each run (the models' samples of the same run)."""
        n = self.runs
        return [sum(g.weight * t.samples[i]["throughput"] for g, t in zip(goals, self.models, strict=True))
                for i in range(n)]  # fmt: skip

    def over_budget(self, goals: list[ModelGoal]) -> list[str]:
        """Which models' median p99 is over their budget, e.g. ``b: p99 61.20 ms > 50 ms``."""
        return [f"{g.name}: p99 {t.p99_ms:.2f} ms > {g.budget_ms:g} ms"
                for g, t in zip(goals, self.models, strict=True) if t.runs and not t.feasible]  # fmt: skip

    def worst_ratio(self, goals: list[ModelGoal]) -> float:
        """The largest p99 ÷ budget over the models (<= 1: every model within budget)."""
        return max(t.p99_ms / g.budget_ms for g, t in zip(goals, self.models, strict=True))

    def describe(self, goals: list[ModelGoal]) -> str:
        if self.error:
            return f"failed: {self.error}"
        per = ", ".join(
            f"{g.name} {t.throughput:,.0f}/s p99 {t.p99_ms:.2f} ms" for g, t in zip(goals, self.models, strict=True)
        )
        tots = self.run_totals(goals)
        rng = f" ({min(tots):,.0f}–{max(tots):,.0f} over {self.runs} runs)" if self.runs > 1 else ""
        return f"total {self.total(goals):,.0f} infer/s{rng}: {per}"

    def to_dict(self, goals: list[ModelGoal]) -> dict[str, Any]:
        tots = self.run_totals(goals) if self.error is None else []
        return {
            "models": {g.name: t.to_dict() for g, t in zip(goals, self.models, strict=True)},
            "label": combo_label(goals, self.combo), "total_throughput": self.total(goals),
            "total_spread": [min(tots), max(tots)] if tots else None, "feasible": self.feasible,
            "over_budget": self.over_budget(goals), "runs": self.runs, "order": self.order, "error": self.error,
            "served_key": self.served_key, "same_as": self.same_as,
        }  # fmt: skip


def _record(trial: Trial, sample: Sample, budget_ms: float) -> None:
    """One more run of a model in a combination (its values are the medians of its runs)."""
    trial.samples.append(dict(sample))
    trial.runs = len(trial.samples)
    trial.throughput = statistics.median(s["throughput"] for s in trial.samples)
    trial.p50_ms = statistics.median(s["p50_ms"] for s in trial.samples)
    trial.p99_ms = statistics.median(s["p99_ms"] for s in trial.samples)
    rs = [s["rows_per_exec"] for s in trial.samples if "rows_per_exec" in s]
    trial.rows_per_exec = statistics.median(rs) if rs else None
    trial.feasible = trial.p99_ms <= budget_ms


# --------------------------------------------------------------------------------------------
# The search
# --------------------------------------------------------------------------------------------
class MultiMeasurer(Protocol):
    """The measuring side of the multi-model search."""

    def load(self, model: str, cand: Candidate) -> str:
        """Serve ``cand`` for ``model`` (the other models stay loaded); the served config's key."""
        ...

    def measure(self, combo: dict[str, Candidate]) -> dict[str, Sample]:
        """One run of every model at once (the loaded combination). PerfError: this combination failed;
        TuneError: stop the search."""
        ...


class MultiTuneSearch:
    """The multi-model search, driven by a :class:`MultiMeasurer`: which combination to measure next, when to stop,
    and which to pick. Nothing here starts a server."""

    def __init__(self, measurer: MultiMeasurer, goals: list[ModelGoal], max_runs: int, say: Progress) -> None:
        if len({g.name for g in goals}) != len(goals):
            raise TuneError("each model may be named once")
        self.measurer, self.goals, self.max_runs, self.say = measurer, goals, max_runs, say
        self.trials: dict[Combo, ComboTrial] = {}
        self.by_served: dict[str, ComboTrial] = {}
        self.runs = 0
        self.reloads = 0
        #: What each model serves now, and the served key of each (model, candidate) loaded so far.
        self.loaded: dict[str, Candidate | None] = {}
        self.keys: dict[tuple[str, Candidate], str] = {}
        self.start: Combo | None = None
        #: A move is taken only when it beats the incumbent's total by more than this (relative): a run's noise
        #: on this kind of host is a few per cent, and the race at the end decides between close ones.
        self.min_gain = 0.02
        #: The screen of the start's neighbours takes up to 1/screen_div of the search runs.
        self.screen_div = 2
        self.local = True
        self.finalist_count = 4
        self.finalists: list[ComboTrial] = []
        self.race_z = 1.0
        self.survivors: list[ComboTrial] = []
        self.scores: dict[Combo, tuple[float, int]] = {}

    # -- one combination ---------------------------------------------------------------------
    def _serve(self, combo: Combo) -> str:
        """Load what differs from what is served; the combination's served key."""
        keys = []
        for g, cand in zip(self.goals, combo, strict=True):
            if self.loaded.get(g.name) != cand:
                self.loaded[g.name] = None  # unknown until the load succeeds
                key = self.measurer.load(g.name, cand)
                self.reloads += 1
                self.loaded[g.name] = cand
                self.keys[(g.name, cand)] = key
            keys.append(self.keys.get((g.name, cand), cand.label()))
        return json.dumps(keys)

    def _run(self, trial: ComboTrial, limit: int | None = None) -> None:
        if self.runs >= (self.max_runs if limit is None else min(limit, self.max_runs)):
            raise _BudgetExhausted
        self.runs += 1
        samples = self.measurer.measure({g.name: c for g, c in zip(self.goals, trial.combo, strict=True)})
        for g, t in zip(self.goals, trial.models, strict=True):
            _record(t, samples[g.name], g.budget_ms)

    def _describe(self, ct: ComboTrial) -> str:
        what = ct.describe(self.goals)
        if ct.error is None:
            over = ct.over_budget(self.goals)
            what += f" (over budget: {', '.join(over)})" if over else " (every model within budget)"
        return f"{combo_label(self.goals, ct.combo)}: {what}"

    def evaluate(self, combo: Combo, limit: int | None = None) -> ComboTrial:
        """The combination's trial, measuring it (one run of every model at once) unless it or its served configs
        were measured; _BudgetExhausted when that run would go past ``limit`` (default: max_runs)."""
        if combo in self.trials:
            return self.trials[combo]
        if self.runs >= (self.max_runs if limit is None else min(limit, self.max_runs)):
            raise _BudgetExhausted
        ct = ComboTrial(combo, [Trial(candidate=c) for c in combo])
        try:
            key = self._serve(combo)
        except TuneError:
            raise
        except Exception as exc:  # noqa: BLE001 - a config Triton rejects is a failed combination, not a failed tune
            ct.error = " ".join(str(exc).split())[:300]
            self.trials[combo] = ct
            self.say(f"[{self.runs}/{self.max_runs}] {self._describe(ct)}")
            return ct
        ct.served_key = key
        twin = self.by_served.get(key)
        if twin is not None:
            ct.models, ct.error, ct.same_as = twin.models, twin.error, combo_label(self.goals, twin.combo)
            self.trials[combo] = ct
            self.say(f"[{self.runs}/{self.max_runs}] {combo_label(self.goals, combo)}: served as measured before")
            return ct
        try:
            self._run(ct, limit)
        except TuneError:
            raise
        except PerfError as exc:
            ct.error = " ".join(str(exc).split())[:300]
        ct.order = self.runs
        self.trials[combo] = ct
        self.by_served[key] = ct
        self.say(f"[{self.runs}/{self.max_runs}] {self._describe(ct)}")
        return ct

    def remeasure(self, ct: ComboTrial) -> None:
        self._serve(ct.combo)
        self._run(ct)
        self.say(f"[{self.runs}/{self.max_runs}] again: {self._describe(ct)}")

    # -- ranking ------------------------------------------------------------------------------
    def score(self, ct: ComboTrial) -> tuple[int, float]:
        """Higher is better: feasible by weighted total, then infeasible by the worst p99 ÷ budget, then failures."""
        if ct.error is not None or not ct.runs:
            return (0, 0.0)
        return (2, ct.total(self.goals)) if ct.feasible else (1, -ct.worst_ratio(self.goals))

    def better(self, a: ComboTrial, b: ComboTrial) -> bool:
        """Whether ``a`` is a move worth taking from ``b`` (feasible totals must differ by more than min_gain)."""
        sa, sb = self.score(a), self.score(b)
        if sa[0] == sb[0] == 2:
            return sa[1] > sb[1] * (1.0 + self.min_gain)
        return sa > sb

    def ranked(self) -> list[ComboTrial]:
        """Measured feasible combinations, best total first."""
        ok = [t for t in self.trials.values() if t.feasible and t.same_as is None]
        return sorted(ok, key=lambda t: -t.total(self.goals))

    @property
    def current(self) -> ComboTrial | None:
        return self.trials.get(self.start) if self.start is not None else None

    def best(self) -> ComboTrial | None:
        """After the race: its leader among those within every budget; after re-measuring without a race: the best
        re-measured one by median total; before that, the best measured."""
        raced = [t for t in self.survivors if t.feasible and t.runs >= 2 and t.combo in self.scores]
        if raced:
            return max(raced, key=lambda t: self.scores[t.combo][0])
        again = [t for t in self.finalists if t.feasible and t.runs >= 2]
        if again:
            return max(again, key=lambda t: t.total(self.goals))
        ranked = self.ranked()
        return ranked[0] if ranked else None

    @property
    def rejected(self) -> list[ComboTrial]:
        """Measured combinations over some model's budget, in the order they were measured."""
        return [t for t in self.trials.values() if t.error is None and t.runs and not t.feasible and t.same_as is None]

    # -- moves --------------------------------------------------------------------------------
    def _with(self, combo: Combo, i: int, dim: str, value: Any) -> Combo:
        return combo[:i] + (replace(combo[i], **{dim: value}),) + combo[i + 1 :]

    def single_moves(self, space: TuneSpace, combo: Combo) -> list[Combo]:
        """Every combination one step from ``combo``: one model's one dimension moved (ordered dimensions to the
        neighbouring values, the others to every other value); the biggest expected effect (instances) first, the
        models in turn, so a cut-short screen has still seen what matters most for every model."""
        out: list[Combo] = []
        for dim in _DIMS:
            values = space.values(dim)
            if len(values) < 2:
                continue
            for i in range(len(combo)):
                cur = values.index(getattr(combo[i], dim))
                alts = ([values[j] for j in (cur + 1, cur - 1) if 0 <= j < len(values)] if dim in _ORDINAL
                        else [v for v in values if v != values[cur]])  # fmt: skip
                out += [self._with(combo, i, dim, v) for v in alts]
        return out

    def _design(self, space: TuneSpace) -> tuple[list[Candidate], dict[Candidate, int], Any]:
        """The space's configs, each one's position, and their 0/1 rows: one column per dimension value (of the
        dimensions with a choice). A combination's features are its models' rows side by side and a constant, so
        every model's metrics are fitted on every model's config (one model's instances slowing another is seen)."""
        cands = space.candidates()
        levels = [(d, v) for d in _DIMS for v in space.values(d) if len(space.values(d)) > 1]
        B = np.zeros((len(cands), len(levels)))
        for r, c in enumerate(cands):
            for k, (d, v) in enumerate(levels):
                B[r, k] = 1.0 if getattr(c, d) == v else 0.0
        return cands, {c: r for r, c in enumerate(cands)}, B

    def _utility(self, space: TuneSpace, idx: Any) -> Any:
        """Predicted utility of the combinations given as rows of config positions (one column per model), from an
        additive model (ridge regression, per model, of log throughput and log p99 on every model's config) fitted
        to every measurement: the weighted total throughput, scaled down steeply by the worst predicted p99 ÷ budget
        when over 1. None before there are 3 measurements."""
        _cands, pos, B = self._design(space)
        rows = [t for t in self.trials.values() if t.error is None and t.runs and t.same_as is None]
        if len(rows) < 3 or len(idx) == 0:
            return None

        def feats(ix: Any) -> Any:
            return np.hstack([*(B[ix[:, i]] for i in range(ix.shape[1])), np.ones((len(ix), 1))])

        X = feats(np.array([[pos[c] for c in t.combo] for t in rows]))
        Z = feats(idx)
        w = np.sqrt([t.runs for t in rows])[:, None]
        lam = 0.3 * np.eye(X.shape[1])
        lam[-1, -1] = 0.0
        A = (X * w).T @ (X * w) + lam
        total = np.zeros(len(idx))
        worst = np.zeros(len(idx))
        for i, g in enumerate(self.goals):
            tp = np.log([max(t.models[i].throughput, 1e-9) for t in rows])
            p99 = np.log([max(t.models[i].p99_ms, 1e-9) for t in rows])
            b_tp = np.linalg.solve(A, (X * w).T @ (tp[:, None] * w)).ravel()
            b_p99 = np.linalg.solve(A, (X * w).T @ (p99[:, None] * w)).ravel()
            total += g.weight * np.exp(Z @ b_tp)
            worst = np.maximum(worst, np.exp(Z @ b_p99) / g.budget_ms)
        return total * np.where(worst <= 1.0, 1.0, worst**-3.0)

    def _best_untried(self, space: TuneSpace, idx: Any) -> list[Combo]:
        """The untried combinations among ``idx`` (rows of config positions), best predicted first."""
        cands, pos, _B = self._design(space)
        tried = {tuple(pos[c] for c in t) for t in self.trials}
        keep = np.array([tuple(r) not in tried for r in idx.tolist()], dtype=bool) if len(idx) else np.zeros(0, bool)
        idx = idx[keep]
        u = self._utility(space, idx)
        order = np.argsort(-u, kind="stable") if u is not None else np.arange(len(idx))
        return [tuple(cands[k] for k in idx[r]) for r in order[:50]]

    def model_moves(self, space: TuneSpace, limit: int = 50_000) -> list[Combo]:
        """Untried combinations, best predicted first: from the whole cross product when it has at most ``limit``,
        else from the product of each model's configs the model ranks best with the others at the best measured."""
        cands, pos, _B = self._design(space)
        n, size = len(self.goals), len(cands)
        if size**n <= limit:
            return self._best_untried(space, np.indices((size,) * n).reshape(n, -1).T)
        ranked = self.ranked()
        base = ranked[0].combo if ranked else (self.start or tuple(cands[0] for _ in range(n)))
        keep = max(2, int(limit ** (1.0 / n)))
        lists = []
        for i in range(n):
            own = np.array([[pos[c] for c in base] for _ in range(size)])
            own[:, i] = np.arange(size)
            u = self._utility(space, own)
            lists.append(np.argsort(-u, kind="stable")[:keep] if u is not None else np.arange(min(keep, size)))
        grid = np.array(np.meshgrid(*lists, indexing="ij")).reshape(n, -1).T
        return self._best_untried(space, grid)

    def local_moves(self, space: TuneSpace) -> list[Combo]:
        """Untried one-step neighbours of the best measured combination, best predicted first."""
        ranked = self.ranked()
        if not ranked:
            return []
        _cands, pos, _B = self._design(space)
        near = self.single_moves(space, ranked[0].combo)
        return self._best_untried(
            space, np.array([[pos[c] for c in combo] for combo in near], dtype=int).reshape(-1, len(self.goals))
        )

    def search(self, space: TuneSpace, start: Combo, confirm: int) -> None:
        """With ``max_runs - confirm`` runs: the start, then its one-step neighbours (every model's every dimension,
        up to half the search runs and at least 3: a screen that shows the additive model each model's effects and
        the models' effect on each other), then by turns the model's best guess over the whole space and its best
        guess among the best measured combination's neighbours (a jump the model got wrong costs one run; the
        neighbours refine what was measured), refitted after each run. Then race the best combinations and the start
        with the rest of the runs (:meth:`confirm`)."""
        search_runs = self.max_runs - confirm
        self.start = start
        try:
            self.evaluate(start, search_runs)
            screen = max(3, search_runs // self.screen_div)  # the model is fitted from 3 measurements on
            for combo in self.single_moves(space, start):
                if self.runs >= screen:
                    break
                self.evaluate(combo, search_runs)
            turn = 0
            while True:
                moves = self.model_moves(space) if turn % 2 == 0 or not self.local else self.local_moves(space)
                if not moves:
                    moves = self.model_moves(space)
                    if not moves:
                        break
                self.evaluate(moves[0], search_runs)
                turn += 1
        except _BudgetExhausted:
            self.say(f"search budget used ({self.runs} runs); racing the best combinations")
        self.confirm(self.max_runs - self.runs)

    def grid(self, spaces: list[TuneSpace], start: Combo | None = None, confirm: int = 0) -> None:
        """Every combination once (the cross product of the models' spaces; a bench's reference), then confirm."""
        self.start = start
        try:
            for combo in itertools.product(*(s.candidates() for s in spaces)):
                self.evaluate(tuple(combo), self.max_runs - confirm)
        except _BudgetExhausted:
            self.say(f"grid stopped at its run budget ({self.runs} runs)")
        self.confirm(self.max_runs - self.runs)

    # -- confirming ---------------------------------------------------------------------------
    def confirm(self, runs: int) -> None:
        """Race the ``finalist_count`` best combinations and the start (when within budget) in rounds of
        alternating order, each scored against the others of the same rounds (log total throughput), dropping one
        once it is clearly behind the leader or over a budget by its median; with too few runs for two rounds,
        re-measure them in alternating order."""
        top = self.ranked()[: self.finalist_count]
        cur = self.current
        if cur is not None and cur.feasible and cur.same_as is None and all(t is not cur for t in top):
            top.append(cur)
        self.finalists = top
        runs = min(runs, self.max_runs - self.runs)
        if len(top) >= 2 and runs >= 2 * len(top):
            self._race(runs)
            return
        for t in confirmation_schedule(top, runs):
            try:
                self.remeasure(t)
            except TuneError:
                raise
            except (_BudgetExhausted, PerfError) as exc:
                self.say(f"could not measure {combo_label(self.goals, t.combo)} again: {exc}")

    def _race(self, runs: int) -> None:
        self.say(f"racing {len(self.finalists)} combinations in rounds ({runs} runs at most)")

        def run_once(t: ComboTrial) -> float:
            self.remeasure(t)
            return math.log(max(t.run_totals(self.goals)[-1], 1e-9))

        self.survivors = race(
            self.finalists, runs, key=lambda t: t.combo, run_once=run_once, feasible=lambda t: t.feasible,
            label=lambda t: combo_label(self.goals, t.combo),
            over_budget=lambda t: f": {', '.join(t.over_budget(self.goals))}", z=self.race_z, say=self.say,
            scores=self.scores,
        )  # fmt: skip


def default_multi_runs(space: TuneSpace, models: int, finalist_count: int = 4) -> tuple[int, int]:
    """(search runs, confirmation runs): each model's single-model search budget (10 % of its grid, at least 4),
    and one single tune's confirmation budget; so at most the single-model budget times the models."""
    return models * max(4, space.size // 10), 3 * finalist_count


def run_budget(search: str, space: TuneSpace, models: int, max_runs: int | None, confirm: int | None,
               finalist_count: int) -> tuple[int, int]:  # fmt: skip
    """(all runs, confirmation runs), from the given ones or the defaults (:func:`default_multi_runs`; grid: every
    combination, then the confirmation)."""
    if search not in ("coordinate", "grid"):
        raise TuneError(f"search must be coordinate or grid, not {search!r}")
    if finalist_count < 1:
        raise TuneError(f"finalist count must be >= 1, not {finalist_count}")
    d_search, d_confirm = default_multi_runs(space, models, finalist_count)
    if search == "grid":
        d_search = space.size**models
    if confirm is None:
        confirm = d_confirm if max_runs is None else min(d_confirm, max_runs // 2)
    runs_cap = max_runs if max_runs is not None else d_search + confirm
    if runs_cap < 1 or confirm < 0:
        raise TuneError(f"max runs must be >= 1 and confirm runs >= 0, not {runs_cap} and {confirm}")
    return runs_cap, max(0, min(confirm, runs_cap - 1))


# --------------------------------------------------------------------------------------------
# Checkpoint journal
# --------------------------------------------------------------------------------------------
class MultiJournal:
    """A :class:`MultiMeasurer` that writes down every answer of the one it wraps and first answers from those of an
    interrupted run (as :class:`repoforge.perf.tune_search.Journal` does for one model): the search is deterministic
    given its answers, so replaying them rebuilds its state and it goes on measuring live."""

    def __init__(self, inner: MultiMeasurer, replay: Iterable[Entry] = (),
                 save: Callable[[list[Entry]], None] | None = None) -> None:  # fmt: skip
        self.inner, self.save = inner, save
        self.pending: list[Entry] = list(replay)
        self.entries: list[Entry] = []
        self.replayed = 0
        #: What the wrapped measurer really serves per model (a replayed load served nothing).
        self.live: dict[str, Candidate | None] = {}

    def _next(self, want: Entry) -> Entry | None:
        if self.pending and all(self.pending[0].get(k) == v for k, v in want.items()):
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

    def load(self, model: str, cand: Candidate) -> str:
        entry = self._next({"op": "load", "model": model, "candidate": cand.label()})
        if entry is not None:
            if "error" in entry:
                raise PerfError(entry["error"])
            return str(entry["key"])
        try:
            key = self.inner.load(model, cand)
        except TuneError:
            raise
        except Exception as exc:
            self.live[model] = None
            self._keep(
                {"op": "load", "model": model, "candidate": cand.label(), "error": " ".join(str(exc).split())[:300]}
            )
            raise
        self.live[model] = cand
        self._keep({"op": "load", "model": model, "candidate": cand.label(), "key": key})
        return key

    def measure(self, combo: dict[str, Candidate]) -> dict[str, Sample]:
        labels = {m: c.label() for m, c in combo.items()}
        entry = self._next({"op": "measure", "combo": labels})
        if entry is not None:
            if "error" in entry:
                raise PerfError(entry["error"])
            return {m: {k: float(v) for k, v in s.items()} for m, s in entry["samples"].items()}
        for m, c in combo.items():  # loaded during the replay: serve it for real first
            if self.live.get(m) != c:
                self.inner.load(m, c)
                self.live[m] = c
        try:
            samples = self.inner.measure(combo)
        except TuneError:
            raise
        except PerfError as exc:
            self._keep({"op": "measure", "combo": labels, "error": str(exc)[:300]})
            raise
        self._keep({"op": "measure", "combo": labels, "samples": {m: dict(s) for m, s in samples.items()}})
        return samples


# --------------------------------------------------------------------------------------------
# Measuring on a running tritonserver
# --------------------------------------------------------------------------------------------
class ConcurrentMeasurer:
    """Loads through each model's :class:`~repoforge.perf.tune.ServerMeasurer`; ``measure`` starts one perf_analyzer
    per model at the same time (threads waiting on the subprocesses), so each model is measured under the others'
    load, as they will be served."""

    def __init__(self, measurers: dict[str, ServerMeasurer]) -> None:
        self.measurers = measurers
        #: The config each model is served with now (at first: as built), so a candidate that is exactly that
        #: config (the spec's own, on the grid) is not reloaded.
        self.serving: dict[str, mc.ModelConfig | None] = {m: x.base for m, x in measurers.items()}

    def load(self, model: str, cand: Candidate) -> str:
        x = self.measurers[model]
        cfg = apply_candidate(x.base, cand)
        if self.serving.get(model) == cfg:
            return _served_key(x.server.model_config(model))
        self.serving[model] = None
        key = x.load(cand)
        self.serving[model] = cfg
        return key

    def measure(self, combo: dict[str, Candidate]) -> dict[str, Sample]:
        with ThreadPoolExecutor(max_workers=len(combo), thread_name_prefix="repoforge-tune") as pool:
            futures = {m: pool.submit(self.measurers[m].measure, c) for m, c in combo.items()}
            out: dict[str, Sample] = {}
            errors: list[str] = []
            for m, f in futures.items():
                try:
                    out[m] = f.result()
                except TuneError:
                    raise
                except PerfError as exc:
                    errors.append(f"{m}: {exc}")
        if errors:
            raise PerfError("; ".join(errors))
        return out


# --------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------
@dataclass
class MultiTuneResult:
    goals: list[ModelGoal]
    search: str
    concurrency: int
    trials: list[ComboTrial]
    best: ComboTrial | None
    runs_used: int
    #: The run budget stated up front: (search runs, confirmation runs).
    budget: tuple[int, int]
    #: Combinations in the space (the product of the models' grids).
    space_size: int
    reloads: int
    server_starts: int
    elapsed_s: float
    current: ComboTrial | None = None
    finalists: list[ComboTrial] = field(default_factory=list)
    race: dict[str, float] = field(default_factory=dict)
    #: Per model: its spec patch (as a single-model tune writes it) and its best config.pbtxt.
    patches: dict[str, str] = field(default_factory=dict)
    configs: dict[str, str] = field(default_factory=dict)
    #: Every model's entry in one patch (what --apply writes into the spec).
    patch_yaml: str = ""
    resumed_runs: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    @property
    def model(self) -> str:
        return ",".join(g.name for g in self.goals)

    @property
    def rejected(self) -> list[ComboTrial]:
        return [t for t in self.trials if t.error is None and t.runs and not t.feasible and t.same_as is None]

    @property
    def closest(self) -> ComboTrial | None:
        ok = [t for t in self.trials if t.error is None and t.runs]
        return min(ok, key=lambda t: t.worst_ratio(self.goals)) if ok else None

    def _conc(self, g: ModelGoal) -> int:
        return g.concurrency or self.concurrency

    def summary(self) -> str:
        lines = [f"tune {', '.join(g.name for g in self.goals)} together in one tritonserver, each measured by its own "
                 f"perf_analyzer at the same time ({self.search} search):"]  # fmt: skip
        lines += [f"  {g.describe(self.concurrency)}" for g in self.goals]
        if self.resumed_runs:
            lines.append(
                f"resumed from a checkpoint: {self.resumed_runs} of the runs were measured before the interruption"
            )
        s, c = self.budget
        lines.append(f"runs: {self.runs_used} of a budget of {s + c} ({s} to search, {c} to confirm) over a "
                     f"{self.space_size:,}-combination space; {len(self.trials)} combinations, "
                     f"{sum(1 for t in self.trials if t.feasible)} within every budget; {self.reloads} reloads, "
                     f"{self.server_starts} server start; {self.elapsed_s:.0f} s")  # fmt: skip
        if self.finalists:
            lines.append("raced in rounds of alternating order (medians, with the range of the runs' totals):")
            for t in self.finalists:
                tag = " (current)" if t is self.current else ""
                vs = self.race.get(combo_label(self.goals, t.combo))
                rel = (
                    f"; in the race's rounds {math.exp(vs) - 1:+.0%} vs the pick"
                    if vs is not None and t is not self.best
                    else ""
                )
                lines.append(f"  {combo_label(self.goals, t.combo)}{tag}: {t.describe(self.goals)}{rel}")
        rej = self.rejected
        if rej:
            lines.append(f"rejected, over a budget ({len(rej)}):")
            lines += [f"  {combo_label(self.goals, t.combo)}: {', '.join(t.over_budget(self.goals))}" for t in rej[:10]]
            if len(rej) > 10:
                lines.append(f"  ... and {len(rej) - 10} more (tune.json lists them all)")
        if self.best is not None:
            b = self.best
            lines.append(f"picks (total {b.total(self.goals):,.0f} infer/s):")
            for g, m in zip(self.goals, b.models, strict=True):
                lines.append(f"  {g.name}: {m.candidate.label()}: {m.describe()} (budget {g.budget_ms:g} ms)")
        else:
            c_ = self.closest
            lines.append("no combination met every budget"
                         + (f"; the closest: {combo_label(self.goals, c_.combo)}: {', '.join(c_.over_budget(self.goals))}" if c_ else ""))  # fmt: skip
        return "\n".join(lines)

    def shortfall(self) -> str:
        c = self.closest
        if c is None:
            failed = [t for t in self.trials if t.error]
            why = f": {failed[0].error}" if failed else ""
            return f"no combination could be measured ({len(failed)} failed){why}"
        return (f"no combination met every model's p99 budget; the closest was {combo_label(self.goals, c.combo)} "
                f"with {', '.join(c.over_budget(self.goals))}: raise those budgets, lower their concurrency, or serve "
                "fewer models on this server")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        g = self.goals
        return {
            "models": [x.to_dict() for x in g], "search": self.search, "concurrency": self.concurrency,
            "runs_used": self.runs_used, "budget": {"search": self.budget[0], "confirm": self.budget[1]},
            "space_size": self.space_size, "reloads": self.reloads, "server_starts": self.server_starts,
            "elapsed_s": round(self.elapsed_s, 1),
            "best": self.best.to_dict(g) if self.best else None,
            "picks": {x.name: t.candidate.to_dict() for x, t in zip(g, self.best.models, strict=True)} if self.best else {},
            "trials": [t.to_dict(g) for t in self.trials],
            "rejected": [{"label": combo_label(g, t.combo), "over_budget": t.over_budget(g)} for t in self.rejected],
            "current": combo_label(g, self.current.combo) if self.current else None,
            "finalists": [combo_label(g, t.combo) for t in self.finalists], "race": self.race,
            "patch_yaml": self.patch_yaml, "resumed_runs": self.resumed_runs, "settings": self.settings,
        }  # fmt: skip


def write_multi_outputs(result: MultiTuneResult, output: Path) -> list[Path]:
    """tune.json and spec-patch.yaml (every model) in ``output``, and per model ``<model>/spec-patch.yaml`` and
    ``<model>/config.pbtxt``, each written atomically."""
    output.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []

    def put(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomic(path, text)
        files.append(path)

    put(output / "tune.json", json.dumps(result.to_dict(), indent=2) + "\n")
    if result.best is not None:
        put(output / "spec-patch.yaml", result.patch_yaml)
        for name, patch in result.patches.items():
            put(output / name / "spec-patch.yaml", patch)
            put(output / name / "config.pbtxt", result.configs[name])
    return files


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------
def _check_names(spec: str | Path, goals: list[ModelGoal]) -> None:
    """Unknown or repeated model names are usage errors, found before the build and any server."""
    known = [m.name for m in load_spec(spec).spec.models]
    seen: set[str] = set()
    for g in goals:
        if g.name in seen:
            raise ArgumentError("--model", f"model '{g.name}' is named twice; name each model once")
        seen.add(g.name)
        if g.name not in known:
            raise ArgumentError("--model", f"model '{g.name}' is not in {spec}; it has {', '.join(known)}")


def single_pick(path: str | Path) -> Candidate:
    """The pick of a finished single-model ``repoforge tune`` (its OUTPUT folder, or the tune.json in it), where a
    multi-model climb can start: tune each model alone first, then together from those picks. ValueError saying
    what is wrong (the CLI turns it into a usage error before any server starts)."""
    p = Path(path)
    f = p / "tune.json" if p.is_dir() else p
    if not f.is_file():
        raise ValueError(f"{p} has no tune.json: give the -o folder of a finished single-model `repoforge tune`")
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{f} is not a tune.json: {exc}") from None
    if not isinstance(data, dict) or "picks" in data:
        raise ValueError(f"{f} is a multi-model tune's result; give a single-model tune's -o folder")
    best = data.get("best")
    if not isinstance(best, dict) or not isinstance(best.get("candidate"), dict):
        raise ValueError(f"{f} has no pick (that tune found no config within its budget)")
    try:
        return Candidate.from_dict(best["candidate"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{f}: its pick is not a tune candidate ({exc})") from None


def _bases_and_starts(
    repo: Path, goals: list[ModelGoal], space: TuneSpace, start: dict[str, Candidate]
) -> tuple[dict[str, mc.ModelConfig], list[Candidate]]:
    """Each model's built config, checked to be tunable before the server starts, and where its climb starts (the
    given start, else the spec's own config, snapped to the grid)."""
    bases: dict[str, mc.ModelConfig] = {}
    starts: list[Candidate] = []
    for g in goals:
        base = parse_config((repo / g.name / "config.pbtxt").read_text(encoding="utf-8"))
        if base.max_batch_size <= 0:
            raise TuneError(
                f"model '{g.name}' has max_batch_size 0, so there is no batching to tune; give it a batch axis"
            )
        if space.intra_op_threads != (None,) and thread_parameter(base) is None:
            raise TuneError(
                f"model '{g.name}' has no intra-op thread setting repoforge knows, so intra_op_threads cannot be tuned"
            )
        apply_candidate(base, space.candidates()[0])  # sequence/ensemble models fail here, before the server
        db = base.dynamic_batching
        own = space.snap(base.max_batch_size, list(db.preferred_batch_size), db.max_queue_delay_microseconds,
                         sum(gr.count or 1 for gr in base.instance_group) or 1, _base_threads(base))  # fmt: skip
        s = start.get(g.name)
        starts.append(space.snap(s.max_batch_size, s.preferred_batch_sizes, s.max_queue_delay_us, s.instances,
                                 s.intra_op_threads) if s is not None else own)  # fmt: skip
        bases[g.name] = base
    return bases, starts


def _patches(goals: list[ModelGoal], bases: dict[str, mc.ModelConfig], best: ComboTrial | None,
             concurrency: int) -> tuple[dict[str, str], dict[str, str], str]:  # fmt: skip
    """Per model its spec patch (as a single-model tune writes it) and config.pbtxt, and one patch of every model."""
    if best is None:
        return {}, {}, ""
    patches: dict[str, str] = {}
    configs: dict[str, str] = {}
    entries: list[Any] = []
    names = [g.name for g in goals]
    for g, t in zip(goals, best.models, strict=True):
        note = f"tuned together with {', '.join(x for x in names if x != g.name)} in one server (multi-model tune)"
        patches[g.name] = spec_patch(g.name, bases[g.name], t, g.budget_ms, g.concurrency or concurrency, note)
        configs[g.name] = to_text(apply_candidate(bases[g.name], t.candidate))
        entries += yaml.safe_load(patches[g.name])["models"]
    head = (f"# repoforge tune, multi-model: {'; '.join(g.describe(concurrency) for g in goals)}\n"
            f"# measured together: {best.describe(goals)}\n")  # fmt: skip
    return patches, configs, head + yaml.safe_dump({"models": entries}, sort_keys=False, default_flow_style=None)


def tune_models(
    spec: str | Path,
    goals: list[ModelGoal],
    *,
    search: str = "coordinate",
    space: TuneSpace | None = None,
    concurrency: int = 16,
    measurement_interval_ms: int = 3000,
    stability_percentage: float | None = None,
    max_trials: int | None = 5,
    max_runs: int | None = None,
    confirm: int | None = None,
    finalist_count: int = 4,
    start: dict[str, Candidate] | None = None,
    output: str | Path | None = None,
    tritonserver: str | Path | None = None,
    progress: Progress | None = None,
    restart: bool = False,
) -> MultiTuneResult:
    """Tune every model of ``goals`` together in one tritonserver: the combination of configs with the highest
    weighted total throughput whose every model's p99 is within that model's budget.

    Builds the spec once (CPU), starts one tritonserver with explicit model control and those models loaded,
    reloads only the model whose config a move changes, and measures each combination with one perf_analyzer per
    model at once (each at its goal's concurrency, or ``concurrency``). Runs: by default each model's single-model
    search budget plus one confirmation budget (:func:`default_multi_runs`), stated up front. ``start`` (per model)
    replaces the spec's own config as where the climb starts (e.g. each model's single-model pick). With
    ``output``: tune.json, spec-patch.yaml (every model) and per model ``<model>/spec-patch.yaml`` and
    ``<model>/config.pbtxt``; a checkpoint is kept there while it runs, so an interrupted tune continues when run
    again with the same arguments (``restart`` discards it).

    ``stability_percentage`` defaults to 1000: every perf_analyzer then stops after the same number of windows, so
    the models' runs overlap in time and each is measured under the others' load.
    """
    say = progress or (lambda _m: None)
    if not goals:
        raise ArgumentError("--model", "name at least one model to tune")
    _check_names(spec, goals)
    space = space or TuneSpace()
    n = len(goals)
    space_size = space.size**n
    runs_cap, confirm = run_budget(search, space, n, max_runs, confirm, finalist_count)
    stability = stability_percentage or 1000.0
    settings: dict[str, Any] = {
        "search": search, "models": [g.to_dict() for g in goals], "concurrency": concurrency,
        "measurement_interval_ms": measurement_interval_ms, "stability_percentage": stability,
        "max_trials": max_trials, "max_runs": runs_cap, "confirm": confirm, "finalists": finalist_count,
        "space": {d: list(space.values(d)) for d in _DIMS},
        "start": {m: c.to_dict() for m, c in (start or {}).items()},
    }  # fmt: skip
    names = [g.name for g in goals]
    checkpoint = Checkpoint.of(spec, ",".join(names), settings, output, restart)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="repoforge-tune-") as tmp:
        built = build(spec, Path(tmp) / "repo", device="cpu", progress=None)
        missing = [m for m in names if m not in built.model_names]
        if missing:
            raise TuneError(
                f"model '{missing[0]}' is not in the built repository; it has {', '.join(built.model_names)}"
            )
        if checkpoint is not None:
            checkpoint.built(*(built.output / m for m in names))
        bases, starts = _bases_and_starts(built.output, goals, space, start or {})
        say(f"tune {', '.join(names)} together: {search} search over {space_size:,} combinations, at most {runs_cap} "
            f"runs ({runs_cap - confirm} to search, {confirm} to confirm; each run measures every model at once)")  # fmt: skip
        for g in goals:
            say(f"  {g.describe(concurrency)}")
        server = TritonServer(
            built.output,
            model_control="explicit",
            load_models=names,
            binary=tritonserver,
            exit_timeout_s=RUN_EXIT_TIMEOUT_S,
        )
        say("starting tritonserver (explicit model control; a model is reloaded when its config changes)")
        with server:
            measurers = {}
            for g in goals:
                opts = PerfOptions(model=g.name, url=server.grpc_url, concurrency=[g.concurrency or concurrency],
                                   measurement_interval_ms=measurement_interval_ms, stability_percentage=stability,
                                   max_trials=max_trials)  # fmt: skip
                measurers[g.name] = ServerMeasurer(server, g.name, built.output / g.name / "config.pbtxt",
                                                   bases[g.name], opts)  # fmt: skip
            journal = MultiJournal(ConcurrentMeasurer(measurers))
            if checkpoint is not None:
                measured = sum(1 for e in checkpoint.entries if e.get("op") == "measure")
                if checkpoint.entries:
                    say(f"resuming from {checkpoint.path}: {measured} runs were measured before the interruption "
                        "and are not measured again")  # fmt: skip
                journal = MultiJournal(journal.inner, checkpoint.entries, checkpoint.save)
            tuner = MultiTuneSearch(journal, goals, runs_cap, say)
            tuner.finalist_count = finalist_count
            interrupted = False
            try:
                if search == "grid":
                    tuner.grid([space] * n, tuple(starts), confirm)
                else:
                    tuner.search(space, tuple(starts), confirm)
            except _BudgetExhausted:
                say(f"run budget used ({tuner.runs} runs)")
            except KeyboardInterrupt:
                interrupted = True
        best = tuner.best()
    trials = sorted(tuner.trials.values(), key=lambda t: (t.order == 0, t.order))
    patches, configs, patch_yaml = _patches(goals, bases, best, concurrency)
    lead = best.combo if best is not None else None
    result = MultiTuneResult(
        goals=goals, search=search, concurrency=concurrency, trials=trials, best=best, runs_used=tuner.runs,
        budget=(runs_cap - confirm, confirm), space_size=space_size, reloads=tuner.reloads, server_starts=1,
        elapsed_s=time.monotonic() - t0, current=tuner.current, finalists=list(tuner.finalists),
        race={combo_label(goals, c): v - tuner.scores[lead][0] for c, (v, _n) in tuner.scores.items()}
        if lead is not None and lead in tuner.scores else {},
        patches=patches, configs=configs,
        patch_yaml=patch_yaml,
        resumed_runs=sum(1 for e in journal.entries[: journal.replayed] if e.get("op") == "measure"),
        settings={**settings, "start": {g.name: c.to_dict() for g, c in zip(goals, starts, strict=True)}},
    )  # fmt: skip
    if interrupted and not any(t.runs for t in trials):
        if checkpoint is not None and not any(e.get("op") == "measure" for e in journal.entries):
            checkpoint.done()
        raise Interrupted(f"no combination was measured; nothing was written to {output}")
    if output is not None:
        result.files = write_multi_outputs(result, Path(output))
    if interrupted:
        where = f"are in {Path(output) / 'tune.json'}" if output is not None else "were not written (no output)"
        again = f"; run the same command again to continue from {checkpoint.path}" if checkpoint else ""
        raise Interrupted(f"the {sum(1 for t in trials if t.runs)} combination(s) measured so far {where}{again}")
    if checkpoint is not None:
        checkpoint.done()
    return result
