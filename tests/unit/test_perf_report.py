"""What a perf report says: host load at start and end, plots labelled by concurrency, the latency floor a
batch delay sets, and a TorchServe report with TorchServe's own figures (the run on a real TorchServe is in
tests/integration/test_perf_torchserve.py)."""

from __future__ import annotations

import os
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from repoforge.metrics import parse_prometheus, torchserve_per_request
from repoforge.perf import MachineInfo, PerfPoint, PerfReport, render_markdown, write_report
from repoforge.perf.report import batch_delay_note, batching_of, latency_figure, throughput_figure


def _pt(c: int, tput: float, p50: float, queue_us: float = 0.0, proto: str = "grpc") -> PerfPoint:
    return PerfPoint(concurrency=c, throughput=tput, p50_ms=p50, p90_ms=p50 * 1.2, p95_ms=p50 * 1.3, p99_ms=p50 * 1.5,
                     server_queue_us=queue_us, protocol=proto)  # fmt: skip


def _report(points: list[PerfPoint], **settings: object) -> PerfReport:
    return PerfReport("m", {"grpc": "h:1"}, points, MachineInfo(2, "test"),
                      settings={"measurement_interval_ms": 500, "stability_percentage": 50, **settings})  # fmt: skip


# --------------------------------------------------------------------------------------------
# Batch delay
# --------------------------------------------------------------------------------------------
def test_batch_delay_note_explains_a_latency_floor_at_the_delay() -> None:
    """The README's TorchServe case: batch 8, 50 ms delay: 17 infer/s, p50 57 ms up to concurrency 7, 2,030 at 9."""
    batching = {"delay_ms": 50.0, "full_batch": 8, "source": "maxBatchDelay 50 ms"}
    points = [_pt(1, 17, 57), _pt(3, 52, 57.5), _pt(7, 120, 58), _pt(9, 2030, 4)]
    note = batch_delay_note(points, batching)
    assert note is not None
    assert "at concurrency 1–7" in note and "full batch (8)" in note and "maxBatchDelay 50 ms" in note
    assert "p50 57.0–58.0 ms against a 50 ms delay" in note and "From concurrency 9 a batch fills" in note
    # Measured queue time decides where the server reports it.
    queued = batch_delay_note([_pt(2, 35, 56, queue_us=50_200)], batching)
    assert queued is not None and "50.2 ms of it queued in the server" in queued
    assert batch_delay_note([_pt(2, 35, 56, queue_us=900)], batching) is None  # it did not wait the delay
    # No note where batches fill, where latency is far above the delay, or without a delay.
    assert batch_delay_note([_pt(8, 2000, 48)], batching) is None
    assert batch_delay_note([_pt(2, 5, 400)], batching) is None
    assert batch_delay_note([_pt(1, 17, 57)], {"delay_ms": 0, "full_batch": 8}) is None


def test_batching_read_from_a_triton_config() -> None:
    cfg = mc.ModelConfig(name="m", max_batch_size=64)
    assert batching_of(cfg) is None  # no dynamic batching
    cfg.dynamic_batching.max_queue_delay_microseconds = 20000
    assert batching_of(cfg) == {
        "delay_ms": 20.0,
        "full_batch": 64,
        "source": "max_queue_delay_microseconds 20000 in config.pbtxt",
    }
    cfg.dynamic_batching.preferred_batch_size.extend([16, 32])
    info = batching_of(cfg)
    assert info is not None and info["full_batch"] == 16  # the smallest preferred size dispatches at once
    report = PerfReport.from_runs(
        __import__("repoforge.perf", fromlist=["PerfOptions"]).PerfOptions("m", "h:1"),
        [_pt(1, 45, 21.5, queue_us=20_100)],
        cfg,
        machine=MachineInfo(2, "test"),
    )
    assert report.settings["batching"]["delay_ms"] == 20.0
    assert any("Latency floor = the batch delay" in n for n in report.notes)
    assert "Latency floor = the batch delay" in render_markdown(report)


# --------------------------------------------------------------------------------------------
# Host load, plots
# --------------------------------------------------------------------------------------------
def test_report_records_host_load_at_start_and_end() -> None:
    from repoforge.perf import PerfOptions
    from repoforge.perf.report import host_load

    start = host_load()
    report = PerfReport.from_runs(PerfOptions("m", "h:1", service_kind="torchserve", input_data=Path("d.json")),
                                  [_pt(1, 10, 1)], None, host_start=start)  # fmt: skip
    m = report.machine
    assert m.host_start == start and m.host_end is not None
    for h in (m.host_start, m.host_end):
        assert h["cpu_count"] == os.cpu_count() and len(h["load_avg"]) == 3
    md = render_markdown(report)
    assert "at start load " in md and "at end load " in md and f"on {os.cpu_count()} CPUs" in md
    data = report.to_dict()["machine"]
    assert data["host_start"]["cpu_count"] == os.cpu_count() and data["host_end"]["load_avg"] is not None


def test_latency_plot_is_points_labelled_by_concurrency_and_never_doubles_back() -> None:
    """Throughput drops from concurrency 4 to 8: sorted by throughput (or joined in load order) a line
    would run back left; the plot has markers only, each labelled with its concurrency."""
    report = _report([_pt(1, 100, 1.0), _pt(2, 180, 1.2), _pt(4, 300, 1.5), _pt(8, 250, 4.0)])
    ax = latency_figure(report).axes[0]
    assert ax.lines
    for line in ax.lines:
        assert line.get_linestyle() == "None" and line.get_marker() not in (None, "None", "")
    labels = [t.get_text() for t in ax.texts]
    assert {"c=1", "c=2", "c=4", "c=8"} <= set(labels)
    # Every label sits on its point: the x of "c=8" is c=8's throughput.
    c8 = next(t for t in ax.texts if t.get_text() == "c=8")
    assert c8.xy[0] == 250
    tax = throughput_figure(report).axes[0]
    assert {"c=1", "c=2", "c=4", "c=8"} <= {t.get_text() for t in tax.texts}


# --------------------------------------------------------------------------------------------
# TorchServe
# --------------------------------------------------------------------------------------------
SCRAPE = """\
# HELP ts_inference_latency_microseconds Cumulative inference duration in microseconds
ts_inference_latency_microseconds{model_name="feats",model_version="default",hostname="vm",} {lat}
ts_queue_latency_microseconds{model_name="feats",model_version="default",hostname="vm",} {queue}
ts_inference_requests_total{model_name="feats",model_version="default",hostname="vm",} {n}
ts_inference_requests_total{model_name="other",model_version="default",hostname="vm",} 99.0
"""


def test_torchserve_per_request_times_from_two_scrapes() -> None:
    def scrape(lat: float, queue: float, n: float) -> dict[str, float]:
        return parse_prometheus(SCRAPE.replace("{lat}", str(lat)).replace("{queue}", str(queue)).replace("{n}", str(n)))

    before, after = scrape(1000.0, 400.0, 2.0), scrape(601000.0, 500400.0, 12.0)
    assert torchserve_per_request(before, after, "feats") == (50000.0, 60000.0, 10)
    assert torchserve_per_request(after, after, "feats") is None  # no request in between
    assert torchserve_per_request(before, after, "nosuch") is None


def test_torchserve_report_without_metrics_shows_no_triton_content(tmp_path: Path) -> None:
    report = _report([_pt(1, 17, 57, proto="http")], service_kind="torchserve", input_data="x.json")
    report.machine = MachineInfo(2, "test", server="TorchServe", torchserve_version="0.12.0")
    files = write_report(report, tmp_path / "r")
    md = (tmp_path / "r" / "report.md").read_text()
    assert "tritonserver" not in md and "TorchServe 0.12.0" in md
    assert "Compute infer" not in md and "Queue (µs)" not in md and "TorchServe's metrics API gave none" in md
    assert "server_breakdown.png" not in md and not (tmp_path / "r" / "server_breakdown.png").exists()
    assert {p.name for p in files} == {"report.json", "report.md", "throughput.png", "latency.png"}
