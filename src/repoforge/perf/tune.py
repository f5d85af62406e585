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
import hashlib
import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from tritonclient.grpc import model_config_pb2 as mc

if TYPE_CHECKING:
    from repoforge.servers.triton import TritonServer

from repoforge import lazy
from repoforge.build import build
from repoforge.errors import ArgumentError, Interrupted
from repoforge.output import write_file_atomic
from repoforge.perf.analyzer import (
    PerfError,
    PerfOptions,
    default_stability_percentage,
    run,
)
from repoforge.perf.tune_search import (
    _DIMS,
    PREFERRED_MODES,
    Candidate,
    Entry,
    Journal,
    Measurer,
    Sample,
    Trial,
    TuneError,
    TuneSearch,
    TuneSpace,
    _BudgetExhausted,
    confirmation_schedule,
    finalists,
    pick_confirmed,
    preferred_sizes,
    verdict,
    within_noise,
)
from repoforge.servers.triton import RUN_EXIT_TIMEOUT_S, TritonServer
from repoforge.triton.config import parse_config, to_text
from repoforge.triton.names import INTRA_OP_THREADS, THREAD_PARAMETERS, thread_parameter

__all__ = [
    "PREFERRED_MODES",
    "Candidate",
    "Search",
    "Trial",
    "TuneError",
    "TuneResult",
    "TuneSearch",
    "TuneSpace",
    "preferred_sizes",
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
    #: perf runs answered from the checkpoint of an interrupted run of the same tune (not measured again).
    resumed_runs: int = 0
    #: After a race of the finalists: each one's within-round score against the pick's (log throughput; 0 for the
    #: pick), what decided it rather than the medians, which also hold the search's run from another time.
    race: dict[str, float] = field(default_factory=dict)

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
        if self.resumed_runs:
            lines.append(
                f"resumed from a checkpoint: {self.resumed_runs} of the runs were measured before the interruption"
            )
        lines.append(f"perf runs: {self.runs_used} of a {self.grid_size}-config grid ({self.runs_used / max(self.grid_size, 1):.0%}); "
                     f"{len(self.trials)} candidates, {len(self.feasible)} within budget; {self.reloads} reloads, "
                     f"{self.server_starts} server start; {self.elapsed_s:.0f} s")  # fmt: skip
        if self.finalists:
            lines.append("re-measured in rounds of alternating order (medians, with the range of the runs):")
            lines += [
                f"  {t.candidate.label()}{' (current)' if t is self.current else ''}: {t.describe()}"
                + (
                    f"; in the race's rounds {math.exp(self.race[t.candidate.label()]) - 1:+.0%} vs the pick"
                    if t.candidate.label() in self.race and t is not self.best
                    else ""
                )  # fmt: skip
                for t in self.finalists
            ]
        if self.best is not None:
            b = self.best
            lines.append(
                f"best: {b.candidate.label()}: {b.describe()}"
                + (f", {b.rows_per_exec:.1f} rows/exec" if b.rows_per_exec else "")
            )
            ok = {t.candidate.label() for t in self.finalists if t.feasible and t is not b}
            ahead = [k for k, v in self.race.items() if v > 0 and k in ok]
            if ahead:
                lines.append(f"picked for its p99 headroom: {', '.join(ahead)} scored higher in the race's rounds, but "
                             "by less than the runs vary (or with p99 closer to the budget), and a pick that is over the "
                             "budget when the host gets busier is no pick")  # fmt: skip
            if self.verdict:
                lines.append(self.verdict)
        else:
            c = self.closest
            lines.append(
                "no candidate met the budget"
                + (f"; the lowest p99 was {c.p99_ms:.2f} ms ({c.candidate.label()})" if c else "")
            )
        return "\n".join(lines)

    def shortfall(self) -> str:
        """Why no config was picked, naming the constraint and the candidate that came closest to it."""
        c = self.closest
        if c is None:
            failed = [t for t in self.trials if t.error]
            why = f": {failed[0].candidate.label()}: {failed[0].error}" if failed else ""
            return f"no candidate could be measured ({len(failed)} failed){why}"
        over = c.p99_ms / self.latency_budget_ms - 1
        return (
            f"no configuration met the p99 budget of {self.latency_budget_ms:g} ms at concurrency {self.concurrency}; "
            f"the closest was {c.candidate.label()} with p99 {c.p99_ms:.2f} ms ({over:.0%} over): raise "
            "--latency-budget-ms, lower --concurrency, or give the model more instances or a faster variant"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "search": self.search, "latency_budget_ms": self.latency_budget_ms,
            "concurrency": self.concurrency, "runs_used": self.runs_used, "grid_size": self.grid_size,
            "reloads": self.reloads, "server_starts": self.server_starts, "elapsed_s": round(self.elapsed_s, 1),
            "best": self.best.to_dict() if self.best else None, "trials": [t.to_dict() for t in self.trials],
            "current": self.current.candidate.label() if self.current else None,
            "finalists": [t.candidate.label() for t in self.finalists], "verdict": self.verdict,
            "patch_yaml": self.patch_yaml, "settings": self.settings, "resumed_runs": self.resumed_runs,
            "race": self.race,
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
    Figure, FigureCanvasAgg = lazy.matplotlib_figure()

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
def _exec_counts(server: TritonServer, model: str) -> tuple[int, int] | None:
    with contextlib.suppress(Exception):
        stats = server.model_stats(model)
        return sum(int(s.get("inference_count", 0)) for s in stats), sum(
            int(s.get("execution_count", 0)) for s in stats
        )
    return None


class ServerMeasurer:
    """The measuring side: ``load`` rewrites the model's config.pbtxt for a candidate and reloads it in the running
    tritonserver (explicit model control); ``measure`` is one perf_analyzer run at the target concurrency."""

    def __init__(self, server: TritonServer, model: str, config_path: Path, base: mc.ModelConfig,
                 opts: PerfOptions) -> None:  # fmt: skip
        self.server, self.model, self.config_path, self.base, self.opts = server, model, config_path, base, opts

    def load(self, cand: Candidate) -> str:
        cfg = apply_candidate(self.base, cand)
        tmp = self.config_path.with_name(".config.pbtxt.tmp")
        tmp.write_text(to_text(cfg), encoding="utf-8")
        tmp.replace(self.config_path)
        self.server.load_model(self.model)  # explicit model control: Triton sees the new config and reloads
        return _served_key(self.server.model_config(self.model))

    def measure(self, cand: Candidate) -> Sample:
        """One perf_analyzer run of the loaded model, with the rows per execution it saw."""
        cfg = apply_candidate(self.base, cand)
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
        sample = {"throughput": point.throughput, "p50_ms": point.p50_ms, "p99_ms": point.p99_ms}
        if before and after and after[1] > before[1]:
            sample["rows_per_exec"] = (after[0] - before[0]) / (after[1] - before[1])
        return sample


class _Tuner(TuneSearch):
    """The search measuring on a running tritonserver."""

    def __init__(self, server: TritonServer, model: str, config_path: Path, base: mc.ModelConfig, opts: PerfOptions,
                 budget_ms: float, max_runs: int, say: Progress) -> None:  # fmt: skip
        super().__init__(ServerMeasurer(server, model, config_path, base, opts), budget_ms, max_runs, say)
        self.server, self.model = server, model


# --------------------------------------------------------------------------------------------
# Checkpoint: an interrupted tune goes on where it stopped
# --------------------------------------------------------------------------------------------
CHECKPOINT = "tune-checkpoint.json"


def _sha256_tree(root: Path) -> str:
    """Every file under ``root`` (relative path and bytes), so a retrained model is a different tune."""
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


class Checkpoint:
    """``<output>/tune-checkpoint.json``: every measurer answer of a tune (see :class:`Journal`), under what
    identifies the tune (the spec's bytes, the model, every setting, and after the build the model's built files).

    Written after every perf run, deleted when the tune completes. A rerun with the same identity replays it; a
    different identity is refused (:class:`ArgumentError`, exit 2) rather than mixing old measurements into a
    new tune, unless ``restart`` discards it.
    """

    def __init__(self, output: Path, identity: dict[str, Any], restart: bool) -> None:
        self.path = output / CHECKPOINT
        self.identity = identity
        self.entries: list[Entry] = []
        self._old: dict[str, Any] | None = None
        if not self.path.exists():
            return
        if restart:
            self.path.unlink()
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            old, entries = data["identity"], list(data["entries"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ArgumentError(
                "--output", f"{self.path} is not a readable tune checkpoint; pass --restart to discard it"
            ) from None
        self._check(old)
        self._old, self.entries = old, entries

    def _check(self, old: dict[str, Any]) -> None:
        changed = [k for k in self.identity if k != "settings" and old.get(k) != self.identity[k]]
        new_settings, old_settings = self.identity.get("settings", {}), old.get("settings", {})
        changed += [f"--{k.replace('_', '-')}" for k in sorted(set(new_settings) | set(old_settings))
                    if new_settings.get(k) != old_settings.get(k)]  # fmt: skip
        if changed:
            raise ArgumentError(
                "--output",
                f"{self.path} is the checkpoint of an interrupted tune with a different {', '.join(changed)}; "
                "rerun that tune to finish it, pass --restart to discard it and start over, or choose another --output",
            )

    @classmethod
    def of(cls, spec: str | Path, model: str, settings: dict[str, Any], output: str | Path | None,
           restart: bool) -> Checkpoint | None:  # fmt: skip
        """The checkpoint of this tune in ``output`` (None without one)."""
        if output is None:
            return None
        spec_sha = hashlib.sha256(Path(spec).read_bytes()).hexdigest() if Path(spec).is_file() else ""
        return cls(Path(output), {"spec": spec_sha, "model": model, "settings": settings}, restart)

    @staticmethod
    def journal(checkpoint: Checkpoint | None, inner: Measurer, say: Progress) -> Journal:
        """``inner`` journaled into the checkpoint, answering first from what it holds."""
        if checkpoint is None:
            return Journal(inner)
        measured = sum(1 for e in checkpoint.entries if e.get("op") == "measure")
        if checkpoint.entries:
            say(f"resuming from {checkpoint.path}: {measured} perf runs were measured before the interruption "
                "and are not measured again")  # fmt: skip
        return Journal(inner, checkpoint.entries, checkpoint.save)

    def built(self, *model_dirs: Path) -> None:
        """Add the built models' files to the identity; refuse a checkpoint whose models have changed since."""
        shas = [_sha256_tree(d) for d in model_dirs]
        self.identity["model_files_sha256"] = shas[0] if len(shas) == 1 else shas
        if self._old is not None:
            self._check(self._old)

    def save(self, entries: list[Entry]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomic(self.path, json.dumps({"identity": self.identity, "entries": entries}, indent=0) + "\n")

    def done(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


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
    finalist_count: int = 4,
    output: str | Path | None = None,
    plot: bool = True,
    tritonserver: str | Path | None = None,
    progress: Progress | None = None,
    restart: bool = False,
) -> TuneResult:
    """Search the batching/instance config of ``model`` in ``spec`` for the highest throughput at
    ``concurrency`` whose p99 is within ``latency_budget_ms``.

    Builds the spec once (CPU) into a temporary directory, starts one tritonserver with explicit
    model control, and reloads the model per candidate. ``search="coordinate"`` spends at most
    ``max_runs`` perf_analyzer runs (default 10 % of the grid plus ``confirm``); ``search="grid"``
    measures the whole space. Then ``confirm`` runs (default 3 per finalist, stated up front) race the
    ``finalist_count`` best candidates and the spec's own config in rounds of alternating order, dropping each
    once it is clearly slower; the pick is the race's leader or, among those it is within the noise of, the one with the
    most p99 headroom (:func:`~repoforge.perf.tune_search.pick_with_headroom`), and :attr:`TuneResult.verdict` says whether it beats the current config
    by more than the runs' spread. With ``output``, writes tune.json,
    spec-patch.yaml, config.pbtxt and pareto.png there, and keeps a checkpoint there while it runs: an
    interrupted tune (Ctrl-C) continues where it stopped when run again with the same spec, model and settings;
    other ones are refused (ArgumentError) unless ``restart`` discards the checkpoint. Raises :class:`TuneError` (one line) when
    tuning cannot start (e.g. the model does not batch) and PerfError/SpecError/ServerStartError as
    perf and build do.
    """
    say = progress or (lambda _m: None)
    if search not in ("coordinate", "grid"):
        raise TuneError(f"search must be coordinate or grid, not {search!r}")
    if latency_budget_ms <= 0:
        raise TuneError(f"the latency budget must be > 0 ms, not {latency_budget_ms:g}")
    space = space or TuneSpace()
    if finalist_count < 1:
        raise TuneError(f"finalist count must be >= 1, not {finalist_count}")
    if confirm is None:  # enough for two rounds of the race and a third of its leaders; at most half of max_runs
        confirm = 3 * finalist_count if max_runs is None else min(3 * finalist_count, max_runs // 2)
    if confirm < 0:
        raise TuneError(f"confirm runs must be >= 0, not {confirm}")
    runs_cap = max_runs if max_runs is not None else default_max_runs(search, space.size) + confirm
    if runs_cap < 1:
        raise TuneError(f"max runs must be >= 1, not {runs_cap}")
    confirm = max(0, min(confirm, runs_cap - 1))
    stability = stability_percentage or max(50.0, default_stability_percentage())
    settings: dict[str, Any] = {
        "search": search, "latency_budget_ms": latency_budget_ms, "concurrency": concurrency,
        "measurement_interval_ms": measurement_interval_ms, "stability_percentage": stability,
        "max_trials": max_trials, "max_runs": runs_cap, "confirm": confirm, "finalists": finalist_count,
        "space": {d: list(space.values(d)) for d in _DIMS},
    }  # fmt: skip
    # Before the build: a checkpoint of another spec, model or setting is refused before any work.
    checkpoint = Checkpoint.of(spec, model, settings, output, restart)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="repoforge-tune-") as tmp:
        built = build(spec, Path(tmp) / "repo", device="cpu", progress=None)
        if model not in built.model_names:
            raise TuneError(f"model '{model}' is not in {spec}; it has {', '.join(built.model_names)}")
        if checkpoint is not None:
            checkpoint.built(built.output / model)
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
                           stability_percentage=stability, max_trials=max_trials)  # fmt: skip
        say(f"tune {model}: {search} search over {space.size} configs, at most {runs_cap} perf runs "
            f"({runs_cap - confirm} to search, {confirm} to confirm), "
            f"p99 <= {latency_budget_ms:g} ms at concurrency {concurrency}")  # fmt: skip
        server = TritonServer(
            built.output,
            model_control="explicit",
            load_models=[model],
            binary=tritonserver,
            exit_timeout_s=RUN_EXIT_TIMEOUT_S,
        )
        say("starting tritonserver (explicit model control; the model is reloaded per candidate)")
        with server:
            opts.url = server.grpc_url
            tuner = _Tuner(server, model, config_path, base, opts, latency_budget_ms, runs_cap, say)
            tuner.finalist_count = finalist_count
            journal = tuner.measurer = Checkpoint.journal(checkpoint, tuner.measurer, say)
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
        settings={**settings, "start": start.to_dict()},
        resumed_runs=sum(1 for e in journal.entries[: journal.replayed] if e.get("op") == "measure"),
        race={c.label(): v - tuner.scores[best.candidate][0] for c, (v, _n) in tuner.scores.items()}
        if best is not None and best.candidate in tuner.scores else {},
    )  # fmt: skip
    if interrupted and not any(t.runs for t in trials):
        if checkpoint is not None and not any(e.get("op") == "measure" for e in journal.entries):
            checkpoint.done()
        raise Interrupted(f"no candidate was measured; nothing was written to {output}")
    if output is not None:
        result.files = write_outputs(result, Path(output), plot=plot)
    if interrupted:
        where = f"are in {Path(output) / 'tune.json'}" if output is not None else "were not written (no output)"
        again = f"; run the same command again to continue from {checkpoint.path}" if checkpoint else ""
        raise Interrupted(f"the {sum(1 for t in trials if t.runs)} candidate(s) measured so far {where}{again}")
    if checkpoint is not None:
        checkpoint.done()
    return result
