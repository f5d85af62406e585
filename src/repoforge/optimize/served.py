"""`repoforge optimize --served`: the accepted variants served side by side by a real tritonserver, each as a version
of its model, and measured through the perf path (perf_analyzer, concurrency 1, the version pinned) in alternating
rounds, so the report shows what the in-process ratios become once Triton's per-request costs are added."""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from repoforge.optimize.build_step import shipped_spec
from repoforge.optimize.cache import Cache
from repoforge.optimize.run import OptimizeRun
from repoforge.perf.analyzer import PerfError, PerfOptions, run
from repoforge.plan import make_plan
from repoforge.servers.triton import RUN_EXIT_TIMEOUT_S, TritonServer
from repoforge.triton.reader import read_repository
from repoforge.triton.repository import write_repository

#: perf_analyzer window per point; short, since several variants and rounds share one run.
WINDOW_MS = 1000


def _point(opts: Any, config: Any) -> float:
    try:
        return float(run(opts, config)[0].p50_ms)
    except PerfError as exc:
        if "stable measurement" not in str(exc):
            raise
        opts.stability_percentage = 1000.0  # a shared host: take any three windows rather than none
        return float(run(opts, config)[0].p50_ms)


def measure_served(
    run: OptimizeRun, cache: Cache, say: Callable[[str], None], rounds: int = 3
) -> dict[str, dict[str, dict[int, tuple[float, float, float]]]]:
    """model → variant → batch → (median, low, high) of perf_analyzer's p50 ms over `rounds` alternating rounds,
    at the smallest and largest batch size the config forms."""
    loaded, shipped = shipped_spec(run, cache, lambda _m: None, ship_all=True, only=True)
    out: dict[str, dict[str, dict[int, tuple[float, float, float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="repoforge-served-") as tmp:
        repo = Path(tmp) / "repo"
        write_repository(make_plan(loaded, "cpu"), repo)
        configs = {m.name: m.config for m in read_repository(repo)}
        say("served: starting tritonserver with every accepted variant as a version")
        with TritonServer(repo, exit_timeout_s=RUN_EXIT_TIMEOUT_S) as server:
            for t in run.targets:
                versions: dict[str, str] = shipped.lock[t.name]["versions"]  # version → variant
                sizes = sorted({run.results[t.name].batch_sizes[0], run.results[t.name].batch_sizes[-1]})
                samples: dict[str, dict[int, list[float]]] = {n: {b: [] for b in sizes} for n in versions.values()}
                order = list(versions)
                rounds_t = min(rounds, t.options.rounds)
                for b in sizes:
                    say(f"served: {t.name} at batch {b}: {', '.join(versions.values())}, {rounds_t} alternating rounds")
                    for r in range(rounds_t):
                        for v in order[r % len(order) :] + order[: r % len(order)]:
                            opts = PerfOptions(model=t.name, url=server.grpc_url, concurrency=[1], batch_size=b,
                                               model_version=v, measurement_interval_ms=WINDOW_MS, max_trials=5)  # fmt: skip
                            samples[versions[v]][b].append(_point(opts, configs[t.name]))
                out[t.name] = {
                    n: {b: (statistics.median(x), min(x), max(x)) for b, x in per.items()} for n, per in samples.items()
                }
    return out
