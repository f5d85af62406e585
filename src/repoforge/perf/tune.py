"""`repoforge tune`: find the batching/instance config with the most throughput under a p99 budget.

What Model Analyzer sweeps (max_batch_size, preferred batch sizes, max_queue_delay, instance count,
and optionally the backend's intra-op threads), searched with coordinate descent instead of the
full grid. The spec is built once, ONE tritonserver is started with explicit model control, and for
each candidate ``<repo>/<model>/config.pbtxt`` is rewritten (parsed into the ModelConfig protobuf,
changed, written back with :func:`repoforge.triton.config.to_text`) and the model is reloaded with
``POST /v2/repository/models/<model>/load``. Each candidate is then measured by perf_analyzer at the
target concurrency (one run), and p99 at that concurrency decides feasibility.

Measurements are cached twice: by candidate, and by the config Triton actually serves (read back
from ``GET /v2/models/<model>/config``; e.g. Triton 2.51 fills an empty ``preferred_batch_size``
with ``[max_batch_size]``, so "none" and "[mbs]" are the same served config and measured once).

:func:`tune` returns a :class:`TuneResult`; with ``output`` it also writes ``tune.json``,
``spec-patch.yaml`` (a ``models: [...]`` patch for the spec), ``config.pbtxt`` (the best config)
and ``pareto.png`` (throughput vs p99, the feasible Pareto front highlighted).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from tritonclient.grpc import model_config_pb2 as mc

if TYPE_CHECKING:
    from repoforge.servers.triton import TritonServer

from repoforge.errors import Interrupted
from repoforge.perf.analyzer import (
    PerfError,
    PerfOptions,
    PerfPoint,
    default_stability_percentage,
    run,
)
from repoforge.triton.names import INTRA_OP_THREADS, THREAD_PARAMETERS, thread_parameter

__all__ = [
    "PREFERRED_MODES",
    "Candidate",
    "Search",
    "Trial",
    "TuneError",
    "TuneResult",
    "TuneSpace",
    "apply_candidate",
    "confirmation_schedule",
    "finalists",
    "pareto_figure",
    "pareto_front",
    "pick_confirmed",
    "tune",
    "verdict",
    "within_noise",
    "write_pareto_plot",
]

Search = Literal["coordinate", "grid"]
Progress = Callable[[str], None]

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
# Config rewriting (protobuf, never text)
# --------------------------------------------------------------------------------------------
def apply_candidate(base: mc.ModelConfig, cand: Candidate) -> mc.ModelConfig:
    """A copy of ``base`` with the candidate's batching, instances and threads.

    Warm-up entries larger than the new max_batch_size are dropped (Triton would reject them).
    """
    if base.max_batch_size <= 0:
        raise TuneError(f"model {base.name} has max_batch_size 0; tuning batching needs a model with a batch axis")
    if base.HasField("sequence_batching") or base.HasField("ensemble_scheduling"):
        raise TuneError(
            f"model {base.name} is a sequence or ensemble model; tune tunes dynamic batching of a plain model"
        )
    cfg = mc.ModelConfig()
    cfg.CopyFrom(base)
    cfg.max_batch_size = cand.max_batch_size
    cfg.dynamic_batching.SetInParent()
    del cfg.dynamic_batching.preferred_batch_size[:]
    cfg.dynamic_batching.preferred_batch_size.extend(cand.preferred_batch_sizes)
    cfg.dynamic_batching.max_queue_delay_microseconds = cand.max_queue_delay_us
    if not cfg.instance_group:
        cfg.instance_group.add(count=cand.instances, kind=mc.ModelInstanceGroup.KIND_CPU)
    else:  # keep the first group (its kind, name, devices), one group with the candidate's count
        first = mc.ModelInstanceGroup()
        first.CopyFrom(cfg.instance_group[0])
        first.count = cand.instances
        del cfg.instance_group[:]
        cfg.instance_group.append(first)
    if cand.intra_op_threads is not None:  # under the backend's own name (onnxruntime: intra_op_thread_count)
        cfg.parameters[thread_parameter(cfg) or INTRA_OP_THREADS].string_value = str(cand.intra_op_threads)
    kept = [w for w in cfg.model_warmup if w.batch_size <= cand.max_batch_size]
    if len(kept) != len(cfg.model_warmup):
        keep = [mc.ModelWarmup() for _ in kept]
        for dst, src in zip(keep, kept, strict=True):
            dst.CopyFrom(src)
        del cfg.model_warmup[:]
        cfg.model_warmup.extend(keep)
    return cfg


def _served_key(served: dict[str, Any]) -> str:
    """What decides performance in the config Triton serves (from GET /v2/models/<m>/config)."""
    db = served.get("dynamic_batching") or {}
    params = {k: (v or {}).get("string_value", "") for k, v in (served.get("parameters") or {}).items()}
    key = {
        "max_batch_size": int(served.get("max_batch_size", 0)),
        "preferred": sorted(int(b) for b in db.get("preferred_batch_size", [])),
        "delay": int(db.get("max_queue_delay_microseconds", 0) or 0),
        "instances": sorted((g.get("kind", ""), int(g.get("count", 1))) for g in served.get("instance_group", [])),
        "threads": params.get(THREAD_PARAMETERS.get(str(served.get("backend", "")), INTRA_OP_THREADS), ""),
    }
    return json.dumps(key, sort_keys=True)


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


def confirmation_schedule(trials: list[Trial], runs: int) -> list[Trial]:
    """``runs`` re-measurements in alternating order (A B C, C B A, A B C, ...): each round measures every
    finalist once and the reversed order cancels a host that gets steadily busier or quieter."""
    if not trials or runs <= 0:
        return []
    order: list[Trial] = []
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


@dataclass
class TuneResult:
    model: str
    search: str
    latency_budget_ms: float
    concurrency: int
    trials: list[Trial]
    best: Trial | None
    #: perf_analyzer runs used (re-measurements included).
    runs_used: int
    #: Configurations in the space (the full grid).
    grid_size: int
    #: Model loads through explicit model control (the server itself starts once).
    reloads: int
    server_starts: int
    elapsed_s: float
    base_config: str = ""
    best_config: str = ""
    patch_yaml: str = ""
    files: list[Path] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    #: The spec's own config (snapped to the grid), the re-measured finalists, and the pick compared with it.
    current: Trial | None = None
    finalists: list[Trial] = field(default_factory=list)
    verdict: str = ""

    @property
    def feasible(self) -> list[Trial]:
        return [t for t in self.trials if t.feasible]

    @property
    def closest(self) -> Trial | None:
        """The lowest-p99 trial (what to look at when nothing met the budget)."""
        ok = [t for t in self.trials if t.error is None and t.runs]
        return min(ok, key=lambda t: t.p99_ms) if ok else None

    def summary(self) -> str:
        lines = [
            f"tune {self.model}: {self.search} search, p99 budget {self.latency_budget_ms:g} ms at concurrency {self.concurrency}"
        ]
        lines.append(f"perf runs: {self.runs_used} of a {self.grid_size}-config grid ({self.runs_used / max(self.grid_size, 1):.0%}); "
                     f"{len(self.trials)} candidates, {len(self.feasible)} within budget; {self.reloads} reloads, "
                     f"{self.server_starts} server start; {self.elapsed_s:.0f} s")  # fmt: skip
        if self.finalists:
            lines.append("re-measured in alternating order (medians, with the range of the runs):")
            lines += [
                f"  {t.candidate.label()}{' (current)' if t is self.current else ''}: {t.describe()}"
                for t in self.finalists
            ]
        if self.best is not None:
            b = self.best
            lines.append(
                f"best: {b.candidate.label()}: {b.describe()}"
                + (f", {b.rows_per_exec:.1f} rows/exec" if b.rows_per_exec else "")
            )
            if self.verdict:
                lines.append(self.verdict)
        else:
            c = self.closest
            lines.append(
                "no candidate met the budget"
                + (f"; the lowest p99 was {c.p99_ms:.2f} ms ({c.candidate.label()})" if c else "")
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "search": self.search, "latency_budget_ms": self.latency_budget_ms,
            "concurrency": self.concurrency, "runs_used": self.runs_used, "grid_size": self.grid_size,
            "reloads": self.reloads, "server_starts": self.server_starts, "elapsed_s": round(self.elapsed_s, 1),
            "best": self.best.to_dict() if self.best else None, "trials": [t.to_dict() for t in self.trials],
            "current": self.current.candidate.label() if self.current else None,
            "finalists": [t.candidate.label() for t in self.finalists], "verdict": self.verdict,
            "patch_yaml": self.patch_yaml, "settings": self.settings,
        }  # fmt: skip


def pareto_front(trials: list[Trial]) -> list[Trial]:
    """Trials no other trial beats on both throughput (higher) and p99 (lower), by p99."""
    pts = sorted(
        (t for t in trials if t.error is None and t.runs and t.same_as is None), key=lambda t: (t.p99_ms, -t.throughput)
    )
    front: list[Trial] = []
    best = -1.0
    for t in pts:
        if t.throughput > best:
            front.append(t)
            best = t.throughput
    return front


def spec_patch(
    model: str, base: mc.ModelConfig, trial: Trial, budget_ms: float, concurrency: int, note: str = ""
) -> str:
    """The best config as a spec patch: ``models: [{name, max_batch_size, dynamic_batching, instance_groups}]``."""
    c = trial.candidate
    kind = {mc.ModelInstanceGroup.KIND_GPU: "gpu", mc.ModelInstanceGroup.KIND_AUTO: "auto",
            mc.ModelInstanceGroup.KIND_MODEL: "model"}.get(base.instance_group[0].kind if base.instance_group else 0, "cpu")  # fmt: skip
    entry: dict[str, Any] = {
        "name": model,
        "max_batch_size": c.max_batch_size,
        "dynamic_batching": {
            "preferred_batch_sizes": c.preferred_batch_sizes,
            "max_queue_delay_us": c.max_queue_delay_us,
        },
        "instance_groups": [{"kind": kind, "count": c.instances}],
    }
    if c.intra_op_threads is not None:
        entry["parameters"] = {"intra_op_threads": c.intra_op_threads}
    head = (f"# repoforge tune: best config for '{model}' with p99 <= {budget_ms:g} ms at concurrency {concurrency}\n"
            f"# measured {trial.describe()}\n" + (f"# {note}\n" if note else ""))  # fmt: skip
    body = yaml.safe_dump({"models": [entry]}, sort_keys=False, default_flow_style=None)
    return head + body


def pareto_figure(result: TuneResult) -> Any:
    """Throughput vs p99 of every trial, each point labelled with its config; feasible ones coloured, the
    feasible Pareto front drawn as a line, re-measured finalists with the range of their runs, the best starred."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ok = [t for t in result.trials if t.error is None and t.runs and t.same_as is None]
    fig = Figure(figsize=(7.5, 5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    infeasible = [t for t in ok if not t.feasible]
    feasible = [t for t in ok if t.feasible]
    if infeasible:
        ax.scatter([t.p99_ms for t in infeasible], [t.throughput for t in infeasible], c="#bbbbbb", s=22,
                   label=f"over budget ({len(infeasible)})")  # fmt: skip
    if feasible:
        ax.scatter([t.p99_ms for t in feasible], [t.throughput for t in feasible], c="#1f77b4", s=26,
                   label=f"within budget ({len(feasible)})")  # fmt: skip
    front = pareto_front(feasible)
    if front:
        ax.plot([t.p99_ms for t in front], [t.throughput for t in front], "-o", c="#d62728", lw=1.8, ms=5,
                label="feasible Pareto front")  # fmt: skip
    remeasured = [t for t in result.finalists if t.runs > 1]
    if remeasured:
        lo = [t.throughput - t.spread[0] for t in remeasured]
        hi = [t.spread[1] - t.throughput for t in remeasured]
        ax.errorbar([t.p99_ms for t in remeasured], [t.throughput for t in remeasured], yerr=[lo, hi], fmt="none",
                    ecolor="#2ca02c", capsize=3, label="re-measured: range of the runs")  # fmt: skip
    for t in ok:
        ax.annotate(t.candidate.short_label(), (t.p99_ms, t.throughput), textcoords="offset points", xytext=(3, 3),
                    fontsize=5.5, color="#333333")  # fmt: skip
    ax.axvline(
        result.latency_budget_ms, ls="--", c="#555555", lw=1, label=f"p99 budget {result.latency_budget_ms:g} ms"
    )
    if result.best is not None:
        b = result.best
        ax.scatter([b.p99_ms], [b.throughput], marker="*", s=260, c="#ff7f0e", edgecolors="black", zorder=5,
                   label=f"best: {b.candidate.label()}")  # fmt: skip
    ax.set_xlabel(f"p99 latency at concurrency {result.concurrency} (ms)")
    ax.set_ylabel("throughput (infer/s)")
    ax.set_title(f"repoforge tune {result.model}: {result.search}, {result.runs_used} runs / {result.grid_size}-config grid",
                 fontsize=10)  # fmt: skip
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def write_pareto_plot(result: TuneResult, path: Path) -> Path:
    """:func:`pareto_figure` as a PNG, written atomically."""
    fig = pareto_figure(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    tmp.replace(path)
    return path


def write_outputs(result: TuneResult, output: Path, plot: bool = True) -> list[Path]:
    output.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []

    def put(name: str, text: str) -> None:
        p = output / name
        tmp = p.with_name(f".{name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(p)
        files.append(p)

    put("tune.json", json.dumps(result.to_dict(), indent=2) + "\n")
    if result.best is not None:
        put("spec-patch.yaml", result.patch_yaml)
        put("config.pbtxt", result.best_config)
    if plot:
        files.append(write_pareto_plot(result, output / "pareto.png"))
    return files


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------
class _BudgetExhausted(Exception):
    pass


def _exec_counts(server: TritonServer, model: str) -> tuple[int, int] | None:
    with contextlib.suppress(Exception):
        stats = server.model_stats(model)
        return sum(int(s.get("inference_count", 0)) for s in stats), sum(
            int(s.get("execution_count", 0)) for s in stats
        )
    return None


def _score(t: Trial) -> tuple[int, float]:
    """Higher is better: feasible by throughput, then infeasible by (lower) p99, then failures."""
    if t.error is not None or not t.runs:
        return (0, 0.0)
    return (2, t.throughput) if t.feasible else (1, -t.p99_ms)


class _Tuner:
    def __init__(self, server: TritonServer, model: str, config_path: Path, base: mc.ModelConfig, opts: PerfOptions,
                 budget_ms: float, max_runs: int, say: Progress) -> None:  # fmt: skip
        self.server, self.model, self.config_path, self.base = server, model, config_path, base
        self.opts, self.budget_ms, self.max_runs, self.say = opts, budget_ms, max_runs, say
        self.trials: dict[Candidate, Trial] = {}
        self.by_served: dict[str, Trial] = {}
        self.runs = 0
        self.reloads = 0
        self.loaded: Candidate | None = None
        #: After the descent: "model" (additive surrogate picks the next candidate) or "pairs".
        self.strategy = "model"
        #: Rank the final pick by measured throughput shrunk towards the model (coordinate search only).
        self.smooth = True
        self.space: TuneSpace | None = None
        #: The spec's own config (where the search starts), how many top candidates are re-measured, and those.
        self.start: Candidate | None = None
        self.finalist_count = 3
        self.finalists: list[Trial] = []

    # -- one candidate ----------------------------------------------------------------------
    def _load(self, cand: Candidate) -> tuple[mc.ModelConfig, str]:
        """Write the candidate's config.pbtxt, reload the model, and return (config, served key)."""
        cfg = apply_candidate(self.base, cand)
        from repoforge.triton.config import to_text

        tmp = self.config_path.with_name(".config.pbtxt.tmp")
        tmp.write_text(to_text(cfg), encoding="utf-8")
        tmp.replace(self.config_path)
        self.server.load_model(self.model)  # explicit model control: Triton sees the new config and reloads
        self.reloads += 1
        self.loaded = cand
        served = self.server.model_config(self.model)
        return cfg, _served_key(served)

    def _measure_once(self, cfg: mc.ModelConfig, limit: int | None = None) -> tuple[PerfPoint, float | None]:
        if self.runs >= (self.max_runs if limit is None else min(limit, self.max_runs)):
            raise _BudgetExhausted
        self.runs += 1
        return self._perf(cfg)

    def _perf(self, cfg: mc.ModelConfig) -> tuple[PerfPoint, float | None]:
        """One perf_analyzer run of the loaded model, and the rows per execution it saw."""
        before = _exec_counts(self.server, self.model)
        try:
            try:
                point = run(self.opts, cfg)[0]
            except PerfError as exc:
                if "stable measurement" not in str(exc):
                    raise
                # A noisy host: measure again, accepting any 3 windows (still one perf run in the budget).
                point = run(replace(self.opts, stability_percentage=1000.0), cfg)[0]
        except PerfError:
            if not self.server.alive:
                raise TuneError(
                    f"tritonserver exited while measuring {self.model}; its log ends: "
                    + " | ".join(self.server.log_tail(5).splitlines())
                ) from None
            raise
        after = _exec_counts(self.server, self.model)
        rows = None
        if before and after and after[1] > before[1]:
            rows = (after[0] - before[0]) / (after[1] - before[1])
        return point, rows

    def _record(self, trial: Trial, point: PerfPoint, rows: float | None) -> None:
        trial.samples.append({"throughput": point.throughput, "p50_ms": point.p50_ms, "p99_ms": point.p99_ms,
                              **({"rows_per_exec": rows} if rows is not None else {})})  # fmt: skip
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
            cfg, key = self._load(cand)
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
            point, rows = self._measure_once(cfg, limit)
        except TuneError:
            raise
        except PerfError as exc:
            trial.error = str(exc)[:300]
        else:
            self._record(trial, point, rows)
        trial.order = self.runs
        self.trials[cand] = trial
        self.by_served[key] = trial
        self.say(f"[{self.runs}/{self.max_runs}] {self._describe(trial)}")
        return trial

    def remeasure(self, trial: Trial) -> None:
        """One more run of an already measured candidate (averaged in); its served twins follow."""
        if self.loaded != trial.candidate:
            cfg, _key = self._load(trial.candidate)
        else:
            cfg = apply_candidate(self.base, trial.candidate)
        point, rows = self._measure_once(cfg)
        self._record(trial, point, rows)
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
        """After :meth:`confirm`: the best re-measured finalist by median (never a single run); before it
        (or with no runs left to confirm), the best-ranked trial."""
        if any(_confirmed(t) for t in self.finalists):
            return pick_confirmed(self.finalists)
        ranked = self._ranked_feasible(self.space)
        return ranked[0] if ranked else None

    @property
    def current(self) -> Trial | None:
        return self.trials.get(self.start) if self.start is not None else None

    def confirm(self, runs: int) -> None:
        """Spend up to ``runs`` re-measuring the top candidates (and the current config) in alternating order."""
        self.finalists = finalists(self._ranked_feasible(self.space), self.current, self.finalist_count)
        if len(self.finalists) and runs > 0:
            self.say(f"re-measuring {len(self.finalists)} finalists in alternating order ({runs} runs)")
        for t in confirmation_schedule(self.finalists, min(runs, self.max_runs - self.runs)):
            try:
                self.remeasure(t)
            except TuneError:
                raise
            except (_BudgetExhausted, PerfError) as exc:
                self.say(f"could not measure {t.candidate.label()} again: {exc}")

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
        import numpy as np

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

    def coordinate(self, space: TuneSpace, start: Candidate, confirm: int) -> None:
        """Coordinate descent, then the leftover budget on pairs of moves, then restarts.

        1. Descent: per dimension, hill-climb ordered values one step at a time (stop at the first
           step that does not improve), try every value of unordered ones; repeat passes until a
           pass moves nothing.
        2. Converged with runs left: try the incumbent's two-dimension neighbours (interactions a
           one-at-a-time search cannot see), most promising first by the one-dimension moves
           already measured; an improvement restarts the descent from there.
        3. Still runs left: restart from the untried config farthest from everything measured.

        Infeasible candidates rank below every feasible one (and among themselves by p99), so with
        nothing feasible yet the search walks towards lower latency. Finally ``confirm`` runs re-measure
        the best feasible candidates and the start (the spec's own config) in alternating order
        (:meth:`confirm`), and the pick is the best median among those, so it is never one lucky run.
        """
        search_runs = self.max_runs - confirm
        self.space = space
        self.start = start
        try:
            incumbent = self._descend(space, self.evaluate(start, search_runs), search_runs)
            if self.strategy == "pairs":
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
            else:
                while True:
                    ranked = self._model_moves(space)
                    if not ranked:
                        break
                    self.evaluate(ranked[0], search_runs)
        except _BudgetExhausted:
            self.say(f"search budget used ({self.runs} runs); confirming the best candidates")
        self.confirm(self.max_runs - self.runs)


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------
def _base_threads(cfg: mc.ModelConfig) -> int | None:
    v = cfg.parameters.get(thread_parameter(cfg) or INTRA_OP_THREADS)
    with contextlib.suppress(ValueError, AttributeError):
        return int(v.string_value) if v is not None else None
    return None


def default_max_runs(search: Search, grid_size: int) -> int:
    """Coordinate search: 10 % of the grid (at least 4); grid: all of it."""
    return grid_size if search == "grid" else max(4, grid_size // 10)


def tune(
    spec: str | Path,
    model: str,
    *,
    latency_budget_ms: float,
    search: Search = "coordinate",
    space: TuneSpace | None = None,
    concurrency: int = 16,
    measurement_interval_ms: int = 3000,
    stability_percentage: float | None = None,
    max_trials: int | None = 5,
    max_runs: int | None = None,
    confirm: int | None = None,
    finalist_count: int = 3,
    output: str | Path | None = None,
    plot: bool = True,
    tritonserver: str | Path | None = None,
    progress: Progress | None = None,
) -> TuneResult:
    """Search the batching/instance config of ``model`` in ``spec`` for the highest throughput at
    ``concurrency`` whose p99 is within ``latency_budget_ms``.

    Builds the spec once (CPU) into a temporary directory, starts one tritonserver with explicit
    model control, and reloads the model per candidate. ``search="coordinate"`` spends at most
    ``max_runs`` perf_analyzer runs (default 10 % of the grid plus ``confirm``); ``search="grid"``
    measures the whole space. Then ``confirm`` runs (default 2 rounds of the finalists) re-measure the
    ``finalist_count`` best candidates and the spec's own config in alternating order; the pick is the
    best median among those, and :attr:`TuneResult.verdict` says whether it beats the current config
    by more than the runs' spread. With ``output``, writes tune.json,
    spec-patch.yaml, config.pbtxt and pareto.png there. Raises :class:`TuneError` (one line) when
    tuning cannot start (e.g. the model does not batch) and PerfError/SpecError/ServerStartError as
    perf and build do.
    """
    from repoforge.build import build
    from repoforge.servers.triton import TritonServer
    from repoforge.triton.config import parse_config, to_text

    say = progress or (lambda _m: None)
    if search not in ("coordinate", "grid"):
        raise TuneError(f"search must be coordinate or grid, not {search!r}")
    if latency_budget_ms <= 0:
        raise TuneError(f"the latency budget must be > 0 ms, not {latency_budget_ms:g}")
    space = space or TuneSpace()
    if finalist_count < 1:
        raise TuneError(f"finalist count must be >= 1, not {finalist_count}")
    if confirm is None:  # two rounds of the finalists, and at most half of a given run budget
        confirm = 2 * (finalist_count + 1) if max_runs is None else min(2 * (finalist_count + 1), max_runs // 2)
    if confirm < 0:
        raise TuneError(f"confirm runs must be >= 0, not {confirm}")
    runs_cap = max_runs if max_runs is not None else default_max_runs(search, space.size) + confirm
    if runs_cap < 1:
        raise TuneError(f"max runs must be >= 1, not {runs_cap}")
    confirm = max(0, min(confirm, runs_cap - 1))
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="repoforge-tune-") as tmp:
        built = build(spec, Path(tmp) / "repo", device="cpu", progress=None)
        if model not in built.model_names:
            raise TuneError(f"model '{model}' is not in {spec}; it has {', '.join(built.model_names)}")
        config_path = built.output / model / "config.pbtxt"
        base = parse_config(config_path.read_text(encoding="utf-8"))
        if base.max_batch_size <= 0:
            raise TuneError(
                f"model '{model}' has max_batch_size 0, so there is no batching to tune; give it a batch axis"
            )
        if space.intra_op_threads != (None,) and thread_parameter(base) is None:
            raise TuneError(
                f"model '{model}' is served by backend '{base.backend or base.platform}', which has no intra-op "
                "thread setting repoforge knows, so intra_op_threads cannot be tuned"
            )
        apply_candidate(base, space.candidates()[0])  # sequence/ensemble models fail here, before the server starts
        db = base.dynamic_batching
        start = space.snap(base.max_batch_size, list(db.preferred_batch_size), db.max_queue_delay_microseconds,
                           sum(g.count or 1 for g in base.instance_group) or 1, _base_threads(base))  # fmt: skip
        opts = PerfOptions(model=model, url="127.0.0.1:0", concurrency=[concurrency], measurement_interval_ms=measurement_interval_ms,
                           stability_percentage=stability_percentage or max(50.0, default_stability_percentage()),
                           max_trials=max_trials)  # fmt: skip
        say(f"tune {model}: {search} search over {space.size} configs, at most {runs_cap} perf runs, "
            f"p99 <= {latency_budget_ms:g} ms at concurrency {concurrency}")  # fmt: skip
        server = TritonServer(built.output, model_control="explicit", load_models=[model], binary=tritonserver)
        say("starting tritonserver (explicit model control; the model is reloaded per candidate)")
        with server:
            opts.url = server.grpc_url
            tuner = _Tuner(server, model, config_path, base, opts, latency_budget_ms, runs_cap, say)
            tuner.finalist_count = finalist_count
            interrupted = False
            try:
                if search == "grid":
                    tuner.start = start
                    tuner.grid(space)
                    tuner.confirm(confirm)
                else:
                    tuner.coordinate(space, start, confirm)
            except _BudgetExhausted:
                say(f"run budget used ({tuner.runs} runs)")
            except KeyboardInterrupt:  # Ctrl-C: the candidates measured so far still go to the report
                interrupted = True
        best = tuner.best()
        current = tuner.current
        note = verdict(best, current, latency_budget_ms) if best is not None else ""
    trials = sorted(tuner.trials.values(), key=lambda t: (t.order == 0, t.order))
    result = TuneResult(
        model=model, search=search, latency_budget_ms=latency_budget_ms, concurrency=concurrency, trials=trials,
        best=best, runs_used=tuner.runs, grid_size=space.size, reloads=tuner.reloads, server_starts=1,
        elapsed_s=time.monotonic() - t0, base_config=to_text(base),
        best_config=to_text(apply_candidate(base, best.candidate)) if best else "",
        patch_yaml=spec_patch(model, base, best, latency_budget_ms, concurrency, note) if best else "",
        current=current, finalists=list(tuner.finalists), verdict=note,
        settings={"measurement_interval_ms": measurement_interval_ms, "stability_percentage": opts.stability_percentage,
                  "max_trials": max_trials, "max_runs": runs_cap, "confirm": confirm, "finalists": finalist_count,
                  "start": start.to_dict(),
                  "space": {d: list(space.values(d)) for d in _DIMS}},
    )  # fmt: skip
    if interrupted and not any(t.runs for t in trials):
        raise Interrupted(f"no candidate was measured; nothing was written to {output}")
    if output is not None:
        result.files = write_outputs(result, Path(output), plot=plot)
    if interrupted:
        where = f"are in {Path(output) / 'tune.json'}" if output is not None else "were not written (no output)"
        raise Interrupted(f"the {sum(1 for t in trials if t.runs)} candidate(s) measured so far {where}")
    return result
