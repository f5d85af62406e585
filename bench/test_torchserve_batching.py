"""TorchServe batching benchmark: throughput and p50 of `tinynet` (examples/torchserve: batchSize 8,
maxBatchDelay 50 ms, one worker) against the number of requests in flight, through `repoforge perf`
(perf_analyzer --service-kind torchserve, HTTP, one row per request).

Below 8 requests in flight a batch never fills, so every batch waits the whole 50 ms delay: throughput is about
concurrency / (delay + compute), i.e. it grows with concurrency instead of staying flat. From 8 on, batches fill
and leave without waiting. Each round serves the build afresh and sweeps every concurrency; cells are medians with
the range over rounds, and the host load is recorded at start and end.

    .venv/bin/pytest bench/test_torchserve_batching.py --benchmark-enable -s     # about 10 minutes on 2 cores
    .venv/bin/python bench/test_torchserve_batching.py [--rounds 3]

Both print the table and rewrite bench/TORCHSERVE_RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "torchserve"
RESULTS = Path(__file__).resolve().parent / "TORCHSERVE_RESULTS.md"
CONCURRENCY = [1, 4, 7, 8, 9, 16]


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure(rounds: int = 3) -> str:
    from repoforge.build import build
    from repoforge.perf.command import perf

    if not (EXAMPLE / "models" / "tinynet.pt").exists():
        subprocess.run([sys.executable, str(EXAMPLE / "make_models.py")], check=True, timeout=300)
    by_c: dict[int, list[tuple[float, float]]] = {c: [] for c in CONCURRENCY}
    loads = [os.getloadavg()]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="repoforge-ts-bench-") as tmp:
        out = build(EXAMPLE / "spec.yaml", Path(tmp) / "ts", target="torchserve", device="cpu").output
        for r in range(rounds):
            result = perf(out, "tinynet", protocol="http", concurrency=CONCURRENCY, measurement_interval_ms=3000,
                          stability_percentage=50, output=Path(tmp) / f"report-{r}", plots=False)  # fmt: skip
            for p in result.report.points:
                by_c[int(p.load)].append((p.throughput, p.p50_ms))
            print(f"round {r + 1}/{rounds}: " + ", ".join(f"c={int(p.load)} {p.throughput:.0f}/s"
                                                         for p in result.report.points), flush=True)  # fmt: skip
    loads.append(os.getloadavg())
    import torch
    import ts

    lines = [
        "# TorchServe batching: tinynet (batchSize 8, maxBatchDelay 50 ms) against requests in flight",
        "",
        f"Measured {started} by `bench/test_torchserve_batching.py` on {os.cpu_count()} vCPU ({_cpu()}), no GPU, "
        f"TorchServe {getattr(ts, '__version__', '?')}, torch {torch.__version__}, {rounds} rounds "
        "(perf_analyzer HTTP, 1 row per request, 3 s windows). Host load average (1 min) "
        f"{loads[0][0]:.2f} at start, {loads[1][0]:.2f} at end; the machine is shared.",
        "",
        "| concurrency | infer/s (median, range) | p50 ms (median, range) | concurrency / p50 (infer/s) |",
        "|---|---|---|---|",
    ]
    for c, got in by_c.items():
        tput = [t for t, _ in got]
        p50 = [p for _, p in got]
        lines.append(
            f"| {c} | {statistics.median(tput):,.0f} ({min(tput):,.0f}–{max(tput):,.0f}) "
            f"| {statistics.median(p50):.1f} ({min(p50):.1f}–{max(p50):.1f}) "
            f"| {c / (statistics.median(p50) / 1000):,.0f} |"
        )
    lines += [
        "",
        "Below 8 in flight a batch never fills and waits the whole delay, so p50 stays near 50 ms and throughput "
        "grows about linearly with concurrency (concurrency / p50); from 8 on batches leave full, without waiting.",
        "",
    ]
    text = "\n".join(lines)
    RESULTS.write_text(text)
    return text


@pytest.mark.timeout(900)
def test_torchserve_batching(long_bench: None) -> None:
    pytest.importorskip("ts")
    print(measure())


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    print(measure(ap.parse_args().rounds))
