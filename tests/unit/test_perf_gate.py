"""The baseline gate names baseline points this run did not measure and fails on them unless --allow-missing
(issue 23, item 18)."""

from __future__ import annotations

from pathlib import Path

from repoforge.perf import MachineInfo, PerfPoint, PerfReport
from repoforge.perf.baseline import Baseline, compare, update_baseline


def _report(points: list[tuple[str, int, float, float]]) -> PerfReport:
    def pt(proto: str, c: int, tput: float, p99: float) -> PerfPoint:
        return PerfPoint(concurrency=c, throughput=tput, p50_ms=p99 / 2, p90_ms=p99 * 0.8, p95_ms=p99 * 0.9, p99_ms=p99,
                         protocol=proto)  # fmt: skip

    return PerfReport(model="m", urls={"grpc": "h:1"}, points=[pt(*p) for p in points],
                      machine=MachineInfo(cpu_count=2, platform="test"),
                      settings={"measurement_interval_ms": 500, "stability_percentage": 50})  # fmt: skip


def test_baseline_points_this_run_did_not_measure_are_named_and_fail_the_gate(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    update_baseline(path, _report([("grpc", 1, 1000, 2.0), ("grpc", 4, 3000, 3.0)]))
    baseline = Baseline.load(path)
    run = _report([("grpc", 1, 1000, 2.0)])  # c=4 not measured this time (e.g. --concurrency 1)

    gate = compare(run, baseline, 0.15)
    assert not gate.passed
    assert "grpc c=4" in gate.summary() and "--allow-missing" in gate.summary()
    table = gate.format_table()
    assert "MISSING" in table and "c=4" in table
    assert [r.status for r in gate.missing_rows if r.load == 4] == ["missing", "missing"]
    assert gate.to_dict()["missing"] == ["grpc c=4"]

    allowed = compare(run, baseline, 0.15, allow_missing=True)
    assert allowed.passed, allowed.format_table()
    assert "grpc c=4" in allowed.summary()  # still named, not silently dropped
