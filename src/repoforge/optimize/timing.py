"""In-process timing of the accepted variants side by side, and the selection it feeds.

Variants are timed in alternating rounds (the order rotates each round), so a burst of load on a shared host
lands on all of them rather than on whichever ran last. Each round gives a median per-call latency; the figure
is the median of the rounds and the spread is their range. Two variants whose ranges overlap are a tie, and a tie
goes to the simpler variant (fewer things that can differ in production).
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from repoforge.optimize.runners import open_runner, runtime_of
from repoforge.spec.models import VARIANTS, LatencyBudget

#: Each variant runs at least this long (and at least MIN_CALLS calls) per round and batch size.
ROUND_SECONDS = 0.03
MIN_CALLS = 3


@dataclass
class Timing:
    """One variant's latencies: batch size → (median, low, high) in ms over the rounds."""

    latency_ms: dict[int, tuple[float, float, float]]

    def throughput(self, batch: int) -> tuple[float, float, float]:
        """rows/s at `batch`: (median, low, high)."""
        med, lo, hi = self.latency_ms[batch]
        return batch * 1000.0 / med, batch * 1000.0 / hi, batch * 1000.0 / lo

    def as_dict(self) -> dict[str, Any]:
        return {str(b): {"median": m, "min": lo, "max": hi} for b, (m, lo, hi) in sorted(self.latency_ms.items())}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Timing:
        return cls({int(b): (v["median"], v["min"], v["max"]) for b, v in d.items()})


def _batch_of(arrays: dict[str, np.ndarray], b: int) -> dict[str, np.ndarray]:
    """`b` rows of the validation inputs (repeated when it has fewer), so every variant sees the same data."""
    out = {}
    for k, v in arrays.items():
        reps = -(-b // len(v))
        out[k] = np.ascontiguousarray(np.concatenate([v] * reps)[:b]) if reps > 1 else np.ascontiguousarray(v[:b])
    return out


def time_variants(
    files: dict[str, Path], inputs: dict[str, np.ndarray], sizes: list[int], rounds: int, threads: int,
    outputs: list[str],
) -> dict[str, Timing]:  # fmt: skip
    """Latency per variant and batch size, measured in alternating rounds in this process, each variant on the
    runtime that runs it (runners.runtime_of)."""
    sessions = {name: open_runner(path, runtime_of(name), outputs, threads) for name, path in files.items()}
    names = list(files)
    samples: dict[str, dict[int, list[float]]] = {n: {b: [] for b in sizes} for n in names}
    for b in sizes:
        feed = _batch_of(inputs, b)
        for s in sessions.values():  # warm up: first runs allocate and pick kernels
            for _ in range(2):
                s(feed)
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                sess, calls = sessions[name], list[float]()
                start = time.perf_counter()
                while len(calls) < MIN_CALLS or time.perf_counter() - start < ROUND_SECONDS:
                    t0 = time.perf_counter()
                    sess(feed)
                    calls.append((time.perf_counter() - t0) * 1000.0)
                samples[name][b].append(statistics.median(calls))
    return {
        n: Timing({b: (statistics.median(v), min(v), max(v)) for b, v in per.items()}) for n, per in samples.items()
    }


def host() -> dict[str, Any]:
    """What the timing ran on: the CPU (and whether it has VNNI, which INT8 speed depends on) and its load."""
    flags: set[str] = set()
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpu": model, "cpus": os.cpu_count(), "isa": isa, "vnni": any("vnni" in f for f in isa),
        "loadavg_1m": round(load[0], 2),
    }  # fmt: skip


def _simplicity(name: str) -> int:
    return VARIANTS.index(name) if name in VARIANTS else len(VARIANTS)


def select(timings: dict[str, Timing], select_: str | LatencyBudget) -> tuple[str, str]:
    """The selected variant among the timed (accepted) ones, and one line saying why."""
    sizes = sorted(next(iter(timings.values())).latency_ms)
    # figure: (median, low, high) where higher is better
    figures: dict[str, tuple[float, float, float]] = {}
    if select_ == "min_latency":
        b = sizes[0]
        for n, t in timings.items():
            m, lo, hi = t.latency_ms[b]
            figures[n] = (-m, -hi, -lo)
        what = f"lowest latency at batch {b}"
    elif select_ == "max_throughput":
        b = sizes[-1]
        figures = {n: t.throughput(b) for n, t in timings.items()}
        what = f"highest throughput at batch {b}"
    else:
        assert isinstance(select_, LatencyBudget)
        budget = select_.latency_budget_ms
        for n, t in timings.items():
            fitting = [x for x in sizes if t.latency_ms[x][0] <= budget]
            if fitting:
                figures[n] = t.throughput(fitting[-1])
        what = f"highest throughput within {budget:g} ms"
        if not figures:
            fastest = min(timings, key=lambda n: (timings[n].latency_ms[sizes[0]][0], _simplicity(n)))
            return fastest, (
                f"no variant meets the {budget:g} ms budget even at batch {sizes[0]}; {fastest} is the fastest there"
            )
    best = max(figures, key=lambda n: (figures[n][0], -_simplicity(n)))
    tied = [n for n in figures if figures[n][2] >= figures[best][1]]  # ranges overlap the best's
    chosen = min(tied, key=_simplicity)
    if chosen != best:
        return chosen, f"{what}: {best} is fastest but within noise of {chosen}, the simpler variant"
    return chosen, f"{what}" + (
        f" (ties within noise: {', '.join(sorted(set(tied) - {chosen}))})" if len(tied) > 1 else ""
    )
