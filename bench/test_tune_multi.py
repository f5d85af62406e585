"""Multi-model `repoforge tune` against each model's single-model pick, served together (issue 26.3).

Two models share one tritonserver on this 2-core host: ``a`` (SMALL_MLP) and ``b`` (COMPUTE_MLP), each with its
own p99 budget at its own concurrency. One run:

1. ``tune`` of each model alone (single-model mode, one server each, the other model not loaded);
2. ``tune`` of both together (multi-model mode: combinations measured by one perf_analyzer per model at once),
   starting from the single picks;
3. the two picks side by side on one server with both models: the single picks served together, then the
   multi-model pick, alternating (S M M S S M ...), every model measured at the same time as in production.
   Reported per model: median throughput and p99 with their ranges, whether the median p99 meets the budget, and
   the total; with the host's load average before and after.

    .venv/bin/python -m pytest bench/test_tune_multi.py --benchmark-enable -s      # about 3 minutes (4 on a busy host)
    .venv/bin/python bench/test_tune_multi.py [--budget-a 40] [--budget-b 150] [--no-write]

It rewrites the "tune-multi" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _serving_helpers as h

from repoforge.perf.tune import Candidate, TuneSpace, tune
from repoforge.perf.tune_multi import ModelGoal, tune_models

SPEC = """version: 1
repository: shared
models:
  - name: a
    format: onnx
    path: {small}
    max_batch_size: 64
    instance_groups: [{{kind: cpu, count: 1}}]
    response_cache: false
  - name: b
    format: onnx
    path: {compute}
    max_batch_size: 64
    instance_groups: [{{kind: cpu, count: 1}}]
    response_cache: false
"""
#: 8 configs a model (64 combinations): what matters most when two models share 2 cores.
SPACE = TuneSpace(max_batch_sizes=(8, 64), preferred=("none",), max_queue_delays_us=(0, 2000), instance_counts=(1, 2))


def side_by_side(spec: Path, goals: list[ModelGoal], combos: dict[str, dict[str, Candidate]], rounds: int,
                 interval_ms: int, concurrency: int, say: Callable[[str], None]) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
    """Each combination ``rounds`` times on one server with both models, alternating (ABBA...), every model measured
    by its own perf_analyzer at the same time; per run: each model's sample and the load average."""
    from repoforge.build import build
    from repoforge.perf.analyzer import PerfError, PerfOptions
    from repoforge.perf.tune import ServerMeasurer
    from repoforge.perf.tune_multi import ConcurrentMeasurer
    from repoforge.servers.triton import TritonServer
    from repoforge.triton.config import parse_config

    out: dict[str, list[dict[str, Any]]] = {k: [] for k in combos}
    names = [g.name for g in goals]
    with h.workdir("repoforge-bench-tune-multi-") as wd:
        built = build(spec, wd / "repo", device="cpu")
        with TritonServer(built.output, model_control="explicit", load_models=names) as server:
            ms = {}
            for g in goals:
                cfg_path = built.output / g.name / "config.pbtxt"
                opts = PerfOptions(model=g.name, url=server.grpc_url, concurrency=[g.concurrency or concurrency],
                                   measurement_interval_ms=interval_ms, stability_percentage=1000.0, max_trials=3)  # fmt: skip
                ms[g.name] = ServerMeasurer(server, g.name, cfg_path, parse_config(cfg_path.read_text()), opts)
            m = ConcurrentMeasurer(ms)
            keys = list(combos)
            for r in range(rounds):
                for k in keys if r % 2 == 0 else keys[::-1]:
                    for g in goals:
                        m.load(g.name, combos[k][g.name])
                    try:
                        s = m.measure(combos[k])
                    except PerfError as exc:  # a run with no request back in a window: counted, not a crash
                        out[k].append({"error": str(exc)[:200], "load": os.getloadavg()[0]})
                        say(f"[side by side {r + 1}/{rounds}] {k}: failed: {exc}")
                        continue
                    out[k].append({"samples": s, "load": os.getloadavg()[0]})
                    say(f"[side by side {r + 1}/{rounds}] {k}: " + ", ".join(
                        f"{n} {s[n]['throughput']:,.0f}/s p99 {s[n]['p99_ms']:.1f} ms" for n in names))  # fmt: skip
    return out


def run_bench(budget_a: float = 40.0, budget_b: float = 150.0, concurrency: int = 4, interval_ms: int = 1000,
              rounds: int = 3, write: bool = True, say: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    t0 = time.monotonic()
    load_start = h.load_average()
    goals = [ModelGoal("a", budget_a), ModelGoal("b", budget_b)]
    with h.workdir("repoforge-bench-tune-multi-spec-") as wd:
        paths = h.make_models(wd / "models")
        spec = wd / "spec.yaml"
        spec.write_text(SPEC.format(small=paths["small"], compute=paths["compute"]))
        kw: dict[str, Any] = dict(
            space=SPACE, concurrency=concurrency, measurement_interval_ms=interval_ms, max_trials=3
        )
        singles = {}
        for g in goals:
            r = tune(spec, g.name, latency_budget_ms=g.budget_ms, max_runs=4, confirm=2, plot=False, **kw,
                     progress=lambda m, n=g.name: say(f"single {n}: {m}"))  # fmt: skip
            singles[g.name] = r
        # The climb starts from the single picks (the workflow: tune each model, then tune them together), so they
        # are in the race and the multi-model pick has beaten them in the same rounds.
        start = {n: r.best.candidate for n, r in singles.items() if r.best is not None}
        multi = tune_models(spec, goals, max_runs=8, confirm=4, stability_percentage=1000.0, start=start, **kw,
                            progress=lambda m: say(f"multi: {m}"))  # fmt: skip
        combos: dict[str, dict[str, Candidate]] = {}
        if all(singles[g.name].best is not None for g in goals):
            combos["single picks together"] = {g.name: singles[g.name].best.candidate for g in goals}
        if multi.best is not None:
            combos["multi-model pick"] = {g.name: t.candidate for g, t in zip(goals, multi.best.models, strict=True)}
        sbs = side_by_side(spec, goals, combos, rounds, interval_ms, concurrency, say) if combos else {}
    result = {"goals": [g.to_dict() for g in goals], "concurrency": concurrency, "interval_ms": interval_ms,
              "rounds": rounds, "singles": {n: {"pick": r.best.candidate.label() if r.best else None, "runs": r.runs_used,
                                                "elapsed_s": r.elapsed_s} for n, r in singles.items()},
              "multi": {"runs": multi.runs_used, "budget": multi.budget, "elapsed_s": multi.elapsed_s,
                        "rejected": len(multi.rejected), "combinations": len(multi.trials)},
              "combos": {k: {n: c.label() for n, c in v.items()} for k, v in combos.items()}, "sbs": sbs,
              "elapsed_s": time.monotonic() - t0, "machine": h.machine_text(None, load_start)}  # fmt: skip
    md = render(result)
    say(md)
    if write:
        h.update_results("tune-multi", md)
        say(f"wrote {h.RESULTS}")
    return result


def render(r: dict[str, Any]) -> str:
    goals = [ModelGoal(**g) for g in r["goals"]]
    lines = ["## Tune: multi-model mode vs each model's single pick, served together (`bench/test_tune_multi.py`)", ""]
    lines.append(f"Two models in one tritonserver: a = SMALL_MLP, b = COMPUTE_MLP, concurrency {r['concurrency']} each, "
                 f"{r['interval_ms']} ms windows; budgets: " + ", ".join(f"{g.name} p99 ≤ {g.budget_ms:g} ms" for g in goals)
                 + f". Space: {SPACE.size} configs a model ({SPACE.size ** 2} combinations). Single tunes: 4 runs each "
                 f"(model alone in the server); multi-model tune from the single picks: {r['multi']['runs']} runs of a budget of "
                 f"{sum(r['multi']['budget'])} ({r['multi']['combinations']} combinations measured, "
                 f"{r['multi']['rejected']} rejected over a budget).")  # fmt: skip
    lines.append("")
    for k, v in r["combos"].items():
        lines.append(f"- {k}: " + "; ".join(f"{n}: {lab}" for n, lab in v.items()))
    if "multi-model pick" not in r["combos"]:
        lines.append("- multi-model pick: none; no measured combination kept every model within its budget")
    for n, x in r["singles"].items():
        if x["pick"] is None:
            lines.append(f"- single pick of {n}: none within its budget alone")
    lines += [
        "",
        f"Side by side, both models measured at once, {r['rounds']} alternating rounds (medians, ranges):",
        "",
    ]
    t = h.Table(["combination", *[f"{g.name} infer/s" for g in goals], *[f"{g.name} p99 ms" for g in goals],
                 "total infer/s", "all within budget", "load (1 min)"])  # fmt: skip
    for k, every in r["sbs"].items():
        runs = [x for x in every if "samples" in x]
        if not runs:
            t.add(k, *["-"] * (2 * len(goals) + 1), f"no run measured ({len(every)} failed)", "-")
            continue
        tp = {g.name: [x["samples"][g.name]["throughput"] for x in runs] for g in goals}
        p99 = {g.name: [x["samples"][g.name]["p99_ms"] for x in runs] for g in goals}
        tot = [sum(x["samples"][g.name]["throughput"] * g.weight for g in goals) for x in runs]
        ok = all(statistics.median(p99[g.name]) <= g.budget_ms for g in goals)
        t.add(k, *[f"{h.med(tp[g.name]):,.0f} ({h.rng(tp[g.name])})" for g in goals],
              *[f"{h.med(p99[g.name]):.1f} ({h.rng(p99[g.name], '{:.1f}')})" for g in goals],
              f"{h.med(tot):,.0f} ({h.rng(tot)})",
              ("yes" if ok else "no") + (f" ({len(every) - len(runs)} runs failed)" if len(runs) < len(every) else ""),
              h.rng([x["load"] for x in runs], "{:.1f}"))  # fmt: skip
    lines += [t.markdown(), "", f"Machine: {r['machine']}. Whole run {r['elapsed_s'] / 60:.1f} min."]
    return "\n".join(lines)


def test_tune_multi_vs_single_picks(long_bench: None) -> None:
    r = run_bench(write=True)
    assert r["combos"], "neither tune found a config within budget"


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-a", type=float, default=40.0)
    p.add_argument("--budget-b", type=float, default=150.0)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--interval-ms", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-write", action="store_true", help="do not rewrite bench/RESULTS.md")
    a = p.parse_args(argv)
    run_bench(a.budget_a, a.budget_b, a.concurrency, a.interval_ms, a.rounds, write=not a.no_write)


if __name__ == "__main__":
    main()
