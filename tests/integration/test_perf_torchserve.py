"""A TorchServe perf report carries TorchServe's own figures: one short run on a REAL TorchServe + perf_analyzer
(concurrency 1 and 2, 500 ms windows)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FEATURES_SPEC = """\
version: 1
models:
  - name: feats
    format: python
    max_batch_size: 8
    dynamic_batching: {max_queue_delay_us: 50000}
    plugin:
      kind: features
      columns: [{name: age, dtype: FP32, fill: 35}]
      features: [{op: standardize, column: age, mean: 40, std: 12}]
"""


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_torchserve_report_has_torchserve_figures_and_keeps_the_request(tmp_path: Path) -> None:
    """Batch 8, 50 ms delay, concurrency 1 and 2: every batch waits the delay, TorchServe's metrics say so."""
    pytest.importorskip("ts")
    from repoforge.build import build
    from repoforge.perf.command import perf

    (tmp_path / "feats.yaml").write_text(FEATURES_SPEC)
    out = build(tmp_path / "feats.yaml", tmp_path / "ts", target="torchserve", device="cpu").output
    result = perf(out, "feats", protocol="http", concurrency="1:2", measurement_interval_ms=500,
                  stability_percentage=60, output=tmp_path / "report")  # fmt: skip
    report = result.report
    assert report.machine.server == "TorchServe" and report.machine.torchserve_version
    assert report.machine.host_start and report.machine.host_end
    for p in report.points:
        # TorchServe's own queue figure per request: about the 50 ms batch delay (a batch never fills).
        assert p.server_latency_us is not None and 35_000 < p.server_queue_us <= p.server_latency_us
    md = (tmp_path / "report" / "report.md").read_text()
    assert "tritonserver" not in md and f"TorchServe {report.machine.torchserve_version}" in md
    assert "| Server queue (µs) | Server total (µs) |" in md and "Compute infer" not in md
    assert "ts_queue_latency_microseconds" in md and "at start load" in md
    assert "Latency floor = the batch delay" in md and "maxBatchDelay 50 ms, batchSize 8" in md
    assert (tmp_path / "report" / "server_breakdown.png").exists()
    # The request perf_analyzer sent is kept beside the report, and the data file points at it.
    data_file = Path(report.settings["input_data"])
    assert data_file.parent == (tmp_path / "report").absolute() and data_file.is_file()
    body = json.loads(data_file.read_text())["data"][0]["TORCHSERVE_INPUT"][0]
    assert Path(body) == Path(report.settings["request_file"]) and "age" in json.loads(Path(body).read_text())
    assert json.loads((tmp_path / "report" / "report.json").read_text())["settings"]["input_data"] == str(data_file)


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_running_torchserve_is_found_from_the_server_not_taken_for_triton(tmp_path: Path) -> None:
    """`perf HOST:PORT` asks the server which target it is: a running TorchServe (token auth on) is told apart
    from Triton and refused as a usage error naming TARGET, instead of failing on Triton's config API."""
    pytest.importorskip("ts")
    from repoforge.build import build
    from repoforge.perf.command import PerfArgumentError, perf
    from repoforge.servers.torchserve import TorchServeServer
    from repoforge.targets import target_at

    (tmp_path / "feats.yaml").write_text(FEATURES_SPEC)
    out = build(tmp_path / "feats.yaml", tmp_path / "ts", target="torchserve", device="cpu").output
    with TorchServeServer(out, workdir=tmp_path / "work") as ts:
        url = ts.inference_url.removeprefix("http://").rstrip("/")
        assert target_at(url).name == "torchserve"
        with pytest.raises(PerfArgumentError, match="is a running TorchServe") as err:
            perf(url, "feats", protocol="http", concurrency=[1], output=tmp_path / "report")
        assert err.value.param == "TARGET" and not (tmp_path / "report").exists()
    assert target_at(url).name == "triton"  # nothing answers there now: Triton's, whose errors say so
