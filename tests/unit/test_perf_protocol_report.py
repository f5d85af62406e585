"""The protocol comparison's numbers and report, without servers: what a point makes of the requests' timings, and
how report.md lays the protocols side by side."""

from __future__ import annotations

import pytest

from repoforge.perf.protocols import Record, point_of, protocols_of
from repoforge.perf.report import MachineInfo, PerfReport, plot_names, render_markdown


def test_a_point_has_first_response_event_gaps_and_end_to_end_latency() -> None:
    records = [Record(True, 0.010, [0.010, 0.030, 0.050], 0.051), Record(True, 0.012, [0.012, 0.032, 0.052], 0.053),
               Record(False, total_s=0.2, error="boom")]  # fmt: skip
    p = point_of("sse", 2, records, elapsed=1.0)
    assert p.protocol == "sse" and p.concurrency == 2
    assert p.throughput == 2.0 and p.requests == 3 and p.errors == 1
    assert p.first_response_p50_ms == pytest.approx(11.0)
    assert p.event_gap_p50_ms == pytest.approx(20.0)
    assert p.events_per_request == 3.0
    assert p.p50_ms == pytest.approx(52.0)


def test_all_is_every_protocol_in_order() -> None:
    assert protocols_of("all") == ["http", "grpc", "sse", "ws", "async"]
    assert protocols_of("ws") == ["ws"]


def test_the_report_lays_the_protocols_side_by_side_without_perf_analyzer_sections() -> None:
    points = [point_of(proto, c, [Record(True, 0.001 * c, [0.001 * c], 0.002 * c)], 1.0)
              for c in (1, 16) for proto in ("ws", "http", "async")]  # fmt: skip
    report = PerfReport(model="m", urls={"http": "http://h:1", "ws": "http://g:2", "async": "http://g:2"},
                        points=points, machine=MachineInfo(cpu_count=2, platform="linux"),
                        settings={"mode": "protocols", "duration_s": 5, "warmup_s": 1})  # fmt: skip
    md = render_markdown(report, plot_names(report))
    assert "# Protocols compared: `m`" in md
    rows = [line for line in md.splitlines() if line.startswith("| 1 |") or line.startswith("| 16 |")]
    assert [r.split(" | ")[1] for r in rows] == ["HTTP", "WebSocket", "async"] * 2  # REST first, the queue last
    assert "server_breakdown.png" not in plot_names(report) and "perf_analyzer" not in md
    assert PerfReport.from_dict(report.to_dict()).points[0].first_response_p50_ms == points[0].first_response_p50_ms
