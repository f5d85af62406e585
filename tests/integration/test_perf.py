"""repoforge.perf against a REAL tritonserver and a REAL perf_analyzer (tritonclient 2.51).

One server for the module serves two python-backend models with a variable-size FP32 input (so the
automatic ``--shape`` is exercised): ``fast`` (x*2) and ``slow`` (the same plus a per-request sleep
of ``delay_ms`` = 20 ms from its config parameters). Windows are short (500 ms, stability 50 %,
concurrency 1 and 2), so the module takes well under a minute on 2 cores. No test asserts a
wall-clock time except through the gate's own ratio logic.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from repoforge.perf import (
    Baseline,
    MachineInfo,
    PerfAnalyzerNotFoundError,
    PerfError,
    PerfOptions,
    PerfPoint,
    PerfReport,
    analyzer,
    build_command,
    compare,
    find_perf_analyzer,
    load_report,
    parse_concurrency,
    parse_csv,
    perf_env,
    resolve_shapes,
    run,
    run_calibrated,
    update_baseline,
    write_report,
)
from repoforge.servers import TritonNotFoundError, TritonServer, find_tritonserver
from repoforge.triton.reader import RepoModel, read_repository

FAST = dict(measurement_interval_ms=500, stability_percentage=50)

MODEL_PY = """\
import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        self.delay_s = float(params.get("delay_ms", {}).get("string_value", "0")) / 1000.0

    def execute(self, requests):
        responses = []
        for request in requests:
            if self.delay_s:
                time.sleep(self.delay_s)
            if pb_utils.get_input_tensor_by_name(request, "WEIGHTS") is not None:
                raise pb_utils.TritonModelException("WEIGHTS was sent: random weights are not weights")
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            out = pb_utils.Tensor("OUTPUT0", (x * 2).astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
"""


def write_model(repo: Path, name: str, delay_ms: int, optional: str | None = None) -> None:
    """`optional`: an optional input the model refuses whenever it is sent (like the router's ROUTE_WEIGHTS, which
    random data would make nonsense of)."""
    cfg = mc.ModelConfig(name=name, backend="python", max_batch_size=8)
    cfg.input.add(name="INPUT0", data_type=mc.TYPE_FP32, dims=[-1])
    if optional:
        cfg.input.add(name=optional, data_type=mc.TYPE_FP32, dims=[2], optional=True)
    cfg.output.add(name="OUTPUT0", data_type=mc.TYPE_FP32, dims=[-1])
    cfg.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)
    cfg.parameters["delay_ms"].string_value = str(delay_ms)
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(text_format.MessageToString(cfg))
    (repo / name / "1" / "model.py").write_text(MODEL_PY)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text, text
    return text


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("perf-repo")
    write_model(root, "fast", 0)
    write_model(root, "slow", 20)
    write_model(root, "weighted", 0, optional="WEIGHTS")
    return root


@pytest.fixture(scope="module")
def models(repo: Path) -> dict[str, RepoModel]:
    return {m.name: m for m in read_repository(repo)}


@pytest.fixture(scope="module")
def triton(repo: Path, repoforge_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    try:
        find_tritonserver()
        find_perf_analyzer()
    except (TritonNotFoundError, PerfAnalyzerNotFoundError) as exc:
        pytest.skip(f"needs tritonserver and perf_analyzer: {exc}")
    server = TritonServer(repo, workdir=tmp_path_factory.mktemp("triton-work"))
    server.start(timeout=180)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def fast_report(triton: TritonServer, models: dict[str, RepoModel]) -> tuple[PerfReport, list[str]]:
    """fast over gRPC and HTTP at concurrency 1 and 2."""
    messages: list[str] = []
    cfg = models["fast"].config
    grpc_opts = PerfOptions("fast", triton.grpc_url, "grpc", concurrency="1:2", **FAST)
    http_opts = PerfOptions("fast", triton.http_url, "http", concurrency=[1, 2], **FAST)
    points = run(grpc_opts, cfg, messages.append) + run(http_opts, cfg, messages.append)
    return PerfReport.from_runs([grpc_opts, http_opts], points, cfg), messages


@pytest.fixture(scope="module")
def slow_run(triton: TritonServer, models: dict[str, RepoModel]) -> tuple[PerfReport, list[PerfPoint]]:
    """slow at concurrency 1, with fast measured alongside as the calibration model."""
    opts = PerfOptions("slow", triton.grpc_url, "grpc", concurrency=[1], **FAST)
    points, cal = run_calibrated(opts, models["slow"].config, "fast", models["fast"].config)
    report = PerfReport.from_runs(opts, points, models["slow"].config, calibration_model="fast", calibration_points=cal)
    return report, cal


@pytest.fixture(scope="module")
def fast_twice(triton: TritonServer, models: dict[str, RepoModel]) -> tuple[list[PerfPoint], list[PerfPoint]]:
    """fast at gRPC concurrency 1, measured twice side by side (interleaved as a calibration model is), so a gate
    between the two compares one machine state: two measurements minutes apart on a shared host can differ more
    than any tolerance a gate could keep (another job's load arrives or leaves between them)."""
    opts = PerfOptions("fast", triton.grpc_url, "grpc", concurrency=[1], **FAST)
    cfg = models["fast"].config
    return run_calibrated(opts, cfg, "fast", cfg)


# --------------------------------------------------------------------------------------------
# Pure functions (no server)
# --------------------------------------------------------------------------------------------
def test_parse_concurrency() -> None:
    assert parse_concurrency("1:16:2") == [1, 3, 5, 7, 9, 11, 13, 15]
    assert parse_concurrency("1:4") == [1, 2, 3, 4]
    assert parse_concurrency("1,2,4,8") == [1, 2, 4, 8]
    assert parse_concurrency("4") == [4] == parse_concurrency(4)
    for bad in ("0", "4:1", "1:8:0", "a:b", "", "1:2:3:4"):
        with pytest.raises(PerfError, match="concurrency"):
            parse_concurrency(bad)


def test_default_stability_on_small_hosts() -> None:
    assert analyzer.default_stability_percentage(2) == 30
    assert analyzer.default_stability_percentage(4) == 30
    assert analyzer.default_stability_percentage(64) == 10
    assert PerfOptions("m", "h:1").stability_percentage == analyzer.default_stability_percentage()


def test_build_command_adds_shapes_for_variable_dims(models: dict[str, RepoModel]) -> None:
    cfg = mc.ModelConfig(name="m", backend="python", max_batch_size=8)
    cfg.input.add(name="A", data_type=mc.TYPE_FP32, dims=[-1, 3])
    cfg.input.add(name="B", data_type=mc.TYPE_INT64, dims=[4])
    cfg.input.add(name="C", data_type=mc.TYPE_STRING, dims=[-1])
    opts = PerfOptions("m", "http://127.0.0.1:8001/", "grpc", concurrency="1:16:2", batch_size=4, shapes={"C": [7]})
    argv = build_command(opts, cfg, csv_path="/tmp/x.csv", binary=Path("/pa"))
    joined = " ".join(argv)
    assert argv[0] == "/pa"
    assert "-u 127.0.0.1:8001" in joined  # scheme stripped
    assert "--shape A:16,3" in joined and "--shape C:7" in joined and "B:" not in joined
    assert "--concurrency-range 1:15:2" in joined and "-b 4" in joined
    assert "--input-data random" in joined and "-f /tmp/x.csv" in joined
    assert "--stability-percentage" in joined and "--measurement-interval 3000" in joined
    assert resolve_shapes(opts, cfg) == {"C": [7], "A": [16, 3]}

    one = build_command(opts, cfg, load=5)
    assert one[one.index("--concurrency-range") + 1] == "5"
    uneven = PerfOptions("m", "h:1", concurrency="1,2,4")
    with pytest.raises(ValueError, match="evenly"):
        build_command(uneven, cfg)
    assert len(analyzer.commands(uneven, cfg)) == 3

    rate = build_command(PerfOptions("m", "h:1", request_rate=[100.0]), cfg)
    assert "--request-rate-range" in rate and "--concurrency-range" not in rate

    with pytest.raises(PerfError, match="max_batch_size"):
        build_command(PerfOptions("m", "h:1", batch_size=9), cfg)
    with pytest.raises(PerfError, match="unknown input"):
        build_command(PerfOptions("m", "h:1", shapes={"NOPE": [1]}), cfg)
    cfg.model_transaction_policy.decoupled = True
    assert "--streaming" in build_command(PerfOptions("m", "h:1"), cfg)
    with pytest.raises(PerfError, match="gRPC"):
        build_command(PerfOptions("m", "h:1", protocol="http"), cfg)
    # The real model from the repository: its -1 dim gets a shape automatically.
    assert "INPUT0:16" in build_command(PerfOptions("fast", "h:1"), models["fast"].config)


def test_parse_csv_with_cache_columns_and_request_rate() -> None:
    text = (
        "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,"
        "Server Compute Infer,Server Compute Output,Server Cache Hit,Server Cache Miss,Client Recv,p50 latency,"
        "p90 latency,p95 latency,p99 latency\n"
        "1,2554.45,2,130,30,11,114,98,5,0,1,367,454,485,568\n"
        "4,7312.5,3,200,40,12,120,90,6,0,1,500,600,700,900\n"
    )
    pts = parse_csv(text, protocol="http")
    assert [p.concurrency for p in pts] == [1, 4]
    p = pts[0]
    assert (
        p.throughput == pytest.approx(2554.45) and p.p99_ms == pytest.approx(0.568) and p.p50_ms == pytest.approx(0.367)
    )
    assert (p.server_queue_us, p.server_compute_input_us, p.server_compute_infer_us, p.server_compute_output_us) == (
        30,
        11,
        114,
        98,
    )
    assert p.client_send_us == 2 and p.client_recv_us == 1 and p.network_us == 130 and p.cache_hit_us == 5
    assert p.protocol == "http"
    rate = parse_csv("Request Rate,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,"
                     "Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency\n"
                     "100,99.66,12,352,30,26,249,130,1,747,1094,1224,1786\n")  # fmt: skip
    assert rate[0].request_rate == 100 and rate[0].concurrency == 0 and rate[0].load == 100
    with pytest.raises(PerfError):
        parse_csv("")
    with pytest.raises(PerfError, match="header"):
        parse_csv("Request concurrency: 1\nThroughput: 5\n")


def test_errors_are_one_line_and_say_what_to_do() -> None:
    opts = PerfOptions("m", "127.0.0.1:1", "grpc", max_trials=5)
    unstable = analyzer._explain(opts, 1, 2, "Request concurrency: 1\nFailed to obtain stable measurement within 5 "
                                             "measurement windows for concurrency 1. Please try to increase the "
                                             "--measurement-interval.\nFailed to obtain stable measurement.\n")  # fmt: skip
    assert "--stability-percentage" in one_line(unstable) and "Failed to obtain stable measurement" in str(unstable)
    down = analyzer._explain(opts, 1, 99, "error: failed to get model metadata: failed to connect to all addresses\n")
    assert "is the server running at 127.0.0.1:1" in one_line(down) and "failed to connect" in str(down)
    libs = analyzer._explain(
        opts, 1, 127, "perf_analyzer: error while loading shared libraries: libb64.so.0d: cannot open\n"
    )
    assert isinstance(libs, PerfAnalyzerNotFoundError) and "libb64-0d" in one_line(libs)
    other = analyzer._explain(opts, 1, 3, "some\nerror: something odd happened\n\n")
    assert one_line(other).endswith("perf_analyzer: error: something odd happened")


def _report(
    model: str,
    points: list[tuple[str, int, float, float]],
    cal: list[tuple[str, int, float, float]] = (),
    cal_model: str | None = None,
) -> PerfReport:
    def pt(proto: str, c: int, tput: float, p99: float) -> PerfPoint:
        return PerfPoint(concurrency=c, throughput=tput, p50_ms=p99 / 2, p90_ms=p99 * 0.8, p95_ms=p99 * 0.9, p99_ms=p99,
                         protocol=proto)  # fmt: skip

    return PerfReport(model=model, urls={"grpc": "h:1"}, points=[pt(*p) for p in points],
                      machine=MachineInfo(cpu_count=2, platform="test"),
                      settings={"measurement_interval_ms": 500, "stability_percentage": 50},
                      calibration_model=cal_model, calibration_points=[pt(*p) for p in cal])  # fmt: skip


def test_gate_ratio_logic_absolute_and_relative(tmp_path: Path) -> None:
    # Baseline machine: model 1000/s p99 2 ms, calibration 4000/s p99 0.5 ms.
    base = _report("m", [("grpc", 1, 1000, 2.0)], [("grpc", 1, 4000, 0.5)], "cal")
    path = tmp_path / "baseline.json"
    update_baseline(path, base)
    saved = json.loads(path.read_text())
    assert saved["models"]["m"]["points"]["grpc"]["1"]["throughput_ratio"] == pytest.approx(0.25)
    baseline = Baseline.load(path)

    # A CI host twice as slow for everything: absolute fails, relative passes.
    slow_host = _report("m", [("grpc", 1, 500, 4.0)], [("grpc", 1, 2000, 1.0)], "cal")
    absolute = compare(slow_host, baseline, 0.15, mode="absolute")
    assert not absolute.passed and {r.metric for r in absolute.regressions} == {"throughput", "p99"}
    relative = compare(slow_host, baseline, 0.15)  # auto: both have the calibration model
    assert relative.mode == "relative" and relative.passed, relative.format_table()

    # The model itself got 30 % slower on the same host: relative mode catches it.
    worse = _report("m", [("grpc", 1, 700, 2.0)], [("grpc", 1, 4000, 0.5)], "cal")
    gate = compare(worse, baseline, 0.15)
    assert not gate.passed and [r.metric for r in gate.regressions] == ["throughput"]
    assert gate.regressions[0].change == pytest.approx(-0.3)
    # Within tolerance (-10 %) passes; p99 is judged by its own tolerance.
    assert compare(_report("m", [("grpc", 1, 900, 2.0)], [("grpc", 1, 4000, 0.5)], "cal"), baseline, 0.15).passed
    assert not compare(_report("m", [("grpc", 1, 1000, 2.5)]), baseline, 0.15, p99_tolerance=0.2).passed
    assert compare(_report("m", [("grpc", 1, 1000, 2.5)]), baseline, 0.15, p99_tolerance=0.3).passed

    # New points are listed, not failed; relative mode without calibration is an error.
    extra = compare(_report("m", [("grpc", 1, 1000, 2.0), ("grpc", 8, 9, 9.0)]), baseline)
    assert extra.passed and any(r.status == "new" for r in extra.rows)
    with pytest.raises(PerfError, match="calibration"):
        compare(_report("m", [("grpc", 1, 1000, 2.0)]), baseline, mode="relative")
    with pytest.raises(PerfError, match="no entry for model other"):
        compare(_report("other", [("grpc", 1, 1.0, 1.0)]), baseline)
    # Other models in the file survive an update.
    update_baseline(path, _report("other", [("grpc", 1, 5.0, 5.0)]))
    assert set(Baseline.load(path).models) == {"m", "other"}


def test_write_report_is_atomic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from repoforge.perf import report as report_mod

    first = _report("m", [("grpc", 1, 1000, 2.0), ("grpc", 2, 1500, 3.0)])
    out = tmp_path / "out"
    write_report(first, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(*_a: object) -> None:
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(report_mod, "_plot_breakdown", boom)
    with pytest.raises(RuntimeError, match="plotting failed"):
        write_report(_report("m", [("grpc", 1, 1.0, 9.0)]), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old report, untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp dirs left
    with pytest.raises(PerfError, match="nothing to report"):
        write_report(_report("m", []), tmp_path / "empty")
    assert not (tmp_path / "empty").exists()


def test_missing_perf_analyzer_gives_install_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("REPOFORGE_PERF_ANALYZER", raising=False)
    monkeypatch.setattr(analyzer, "_default_candidates", lambda: [tmp_path / "bin" / "perf_analyzer"])
    with pytest.raises(PerfAnalyzerNotFoundError) as info:
        run(PerfOptions("fast", "127.0.0.1:1"), None)
    assert "tritonclient[all]==2.51.0" in one_line(info.value) and "repoforge[triton]" in str(info.value)
    monkeypatch.setenv("REPOFORGE_PERF_ANALYZER", str(tmp_path / "nope"))
    with pytest.raises(PerfAnalyzerNotFoundError, match="tritonclient"):
        find_perf_analyzer()


def test_perf_env_libb64_fallback_symlinks(monkeypatch: pytest.MonkeyPatch, repoforge_cache: Path) -> None:
    try:
        exe = find_perf_analyzer()
    except PerfAnalyzerNotFoundError as exc:
        pytest.skip(str(exc))
    monkeypatch.setattr(analyzer, "_ldconfig_libs", lambda: frozenset())  # pretend apt libb64-0d is missing
    env = perf_env()
    dirs = env["LD_LIBRARY_PATH"].split(os.pathsep)
    shim = next(Path(d) for d in dirs if (Path(d) / "libb64.so.0d").exists())
    assert shim.is_relative_to(repoforge_cache)
    assert (shim / "libb64.so.0d").resolve().parent.name == "nvidia_pytriton.libs"
    assert any((Path(d) / "libcudart.so.12").exists() for d in dirs)
    assert perf_env()["LD_LIBRARY_PATH"] == env["LD_LIBRARY_PATH"]  # reused, not rebuilt
    # perf_analyzer loads with this environment (it then fails only because nothing listens on port 1).
    proc = subprocess.run(
        [str(exe), "-m", "x", "-u", "127.0.0.1:1"], env=env, capture_output=True, text=True, timeout=60
    )
    assert "error while loading shared libraries" not in proc.stdout + proc.stderr
    assert proc.returncode == 99


# --------------------------------------------------------------------------------------------
# Against the real server
# --------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_points_parsed_with_positive_throughput(fast_report: tuple[PerfReport, list[str]]) -> None:
    report, messages = fast_report
    assert report.protocols == ["grpc", "http"]
    for proto in ("grpc", "http"):
        pts = report.points_for(proto)
        assert [p.concurrency for p in pts] == [1, 2]
        for p in pts:
            assert p.throughput > 0 and p.protocol == proto
            assert 0 < p.p50_ms <= p.p90_ms <= p.p95_ms <= p.p99_ms
            assert p.server_compute_infer_us > 0 and p.cache_hit_us is None
    assert report.settings["shapes"] == {"INPUT0": [16]}  # made from the config's -1 dim
    assert report.machine.tritonserver_version == "2.51.0"
    assert any("measuring concurrency 2" in m for m in messages)
    assert any("infer/s" in m for m in messages)


@pytest.mark.integration
def test_report_files_written(fast_report: tuple[PerfReport, list[str]], tmp_path: Path) -> None:
    report, _ = fast_report
    out = tmp_path / "reports" / "fast"
    paths = write_report(report, out)
    assert sorted(p.name for p in paths) == sorted(
        ["report.json", "report.md", "throughput.png", "latency.png", "server_breakdown.png"]
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)
    for png in (p for p in paths if p.suffix == ".png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    md = (out / "report.md").read_text()
    assert "| Concurrency | Throughput (infer/s) | p50 (ms)" in md
    assert "## HTTP vs gRPC" in md and "| Concurrency | HTTP infer/s | gRPC infer/s" in md
    assert "## Stability" in md and "50 %" in md and "![Throughput vs concurrency](throughput.png)" in md
    rows = [line for line in md.splitlines() if line.startswith("| 1 | ")]
    assert len(rows) == 3  # side by side, gRPC, HTTP
    assert [r.count("|") for r in rows] == [9, 14, 14]
    back = load_report(out)
    assert back.model == "fast" and len(back.points) == 4 and back.points[0].throughput == report.points[0].throughput
    data = json.loads((out / "report.json").read_text())
    assert data["machine"]["cpu_count"] == os.cpu_count() and "stability" in data

    # Rewriting replaces the report in one step and leaves no temp dirs behind.
    write_report(report, out, plots=False)
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md"]
    assert [p.name for p in out.parent.iterdir()] == ["fast"]
    # A directory that is not a report is never replaced.
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "keep.txt").write_text("x")
    with pytest.raises(PerfError, match="not empty"):
        write_report(report, tmp_path / "precious")
    assert (tmp_path / "precious" / "keep.txt").exists()


@pytest.mark.integration
def test_gate_passes_unchanged_model(
    fast_report: tuple[PerfReport, list[str]], fast_twice: tuple[list[PerfPoint], list[PerfPoint]], tmp_path: Path
) -> None:
    report, _ = fast_report
    path = tmp_path / "baseline.json"
    update_baseline(path, report)
    baseline = Baseline.load(path)
    # Identical numbers: exactly no change.
    same = compare(report, baseline, 0.15)
    assert same.passed and all(r.change == 0 for r in same.rows) and len(same.rows) == 8
    # A fresh measurement of the same model against a baseline whose grpc c=1 point was measured side by side with
    # it (the same load): generous tolerance.
    fresh_points, beside = fast_twice
    side_by_side = [*beside, *(p for p in report.points if (p.protocol, p.concurrency) != ("grpc", 1))]
    update_baseline(path, replace(report, points=side_by_side))
    fresh = PerfReport(
        model="fast", urls=report.urls, points=fresh_points, machine=report.machine, settings=report.settings
    )
    # fresh measured grpc c=1 only: the baseline's other points are allowed to be missing (issue 23.18)
    gate = compare(fresh, Baseline.load(path), tolerance=0.8, p99_tolerance=10.0, allow_missing=True)
    assert gate.passed, gate.format_table()
    assert [r.status for r in gate.rows] == ["ok", "ok"]


@pytest.mark.integration
def test_gate_fails_slow_model_against_fast_baseline(
    fast_report: tuple[PerfReport, list[str]], slow_run: tuple[PerfReport, list[PerfPoint]]
) -> None:
    slow, beside = slow_run  # fast measured side by side with slow (as its calibration): the same load
    fast = replace(fast_report[0], points=beside)
    assert slow.points[0].p50_ms > 15  # the 20 ms delay_ms parameter reached the model
    gate = compare(slow, Baseline.from_report(fast), tolerance=0.5, baseline_model="fast")
    assert not gate.passed
    assert {(r.model, r.protocol, r.load, r.metric) for r in gate.regressions} == {
        ("slow", "grpc", 1, "throughput"),
        ("slow", "grpc", 1, "p99"),
    }
    table = gate.format_table()
    assert "FAILED" in table and "REGRESSION" in table
    assert "slow (vs fast)" in table and "throughput" in table and "p99" in table
    assert gate.format_table(only_regressions=True).count("REGRESSION") == 2


@pytest.mark.integration
def test_relative_mode_with_calibration_model(slow_run: tuple[PerfReport, list[PerfPoint]], tmp_path: Path) -> None:
    report, cal = slow_run
    assert report.calibration_model == "fast" and len(cal) == 1 and cal[0].throughput > report.points[0].throughput
    path = tmp_path / "baseline.json"
    update_baseline(path, report)
    entry = Baseline.load(path).entry("slow", "grpc", 1)
    assert entry is not None and entry.throughput_ratio == pytest.approx(
        report.points[0].throughput / cal[0].throughput
    )
    gate = compare(report, Baseline.load(path))
    assert gate.mode == "relative" and gate.passed
    files = write_report(report, tmp_path / "rel", plots=False)
    md = files[1].read_text()
    assert "Relative to calibration model `fast`" in md and "Calibration model `fast` was measured" in md


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_unknown_model_lists_models_and_writes_nothing(triton: TritonServer, protocol: str, tmp_path: Path) -> None:
    url = triton.grpc_url if protocol == "grpc" else triton.http_url
    out = tmp_path / "report"
    with pytest.raises(PerfError) as info:
        points = run(PerfOptions("nosuch", url, protocol, concurrency=[1], **FAST), None)
        write_report(PerfReport.from_runs(PerfOptions("nosuch", url, protocol), points), out)
    msg = one_line(info.value)
    assert "'nosuch' is not on the server" in msg and "fast, slow" in msg and "unknown model" in msg
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_server_down_says_so_and_writes_nothing(repoforge_cache: Path, protocol: str, tmp_path: Path) -> None:
    try:
        find_perf_analyzer()
    except PerfAnalyzerNotFoundError as exc:
        pytest.skip(str(exc))
    url = f"127.0.0.1:{free_port()}"
    with pytest.raises(PerfError) as info:
        run(PerfOptions("fast", url, protocol, concurrency=[1], **FAST), None)
    msg = one_line(info.value)
    assert f"is the server running at {url}" in msg and "perf_analyzer: error" in msg
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
def test_unstable_measurement_suggests_stability_percentage(triton: TritonServer, models: dict[str, RepoModel]) -> None:
    opts = PerfOptions("fast", triton.grpc_url, concurrency=[1], measurement_interval_ms=100,
                       stability_percentage=0.001, max_trials=3)  # fmt: skip
    with pytest.raises(PerfError) as info:
        run(opts, models["fast"].config)
    msg = one_line(info.value)
    assert "--stability-percentage" in msg and "stable measurement" in msg


@pytest.mark.integration
def test_a_running_servers_grpc_port_is_read_from_it_not_guessed(triton: TritonServer, tmp_path: Path) -> None:
    """issue 23.10: the fixture's ports are free ones (gRPC is not HTTP + 1); perf of a URL TARGET reads the gRPC
    port from the tritonserver process, and a --grpc-url where nothing answers is named by its flag."""
    from repoforge.perf.command import PerfArgumentError
    from repoforge.perf.command import perf as perf_command

    http_port = int(triton.http_url.rsplit(":", 1)[1])
    assert not triton.grpc_url.endswith(f":{http_port + 1}")
    result = perf_command(triton.http_url, "fast", protocol="grpc", concurrency=[1], output=tmp_path / "r",
                          plots=False, **FAST)  # fmt: skip
    assert result.report.urls["grpc"] == triton.grpc_url and result.report.points[0].throughput > 0
    with pytest.raises(PerfArgumentError, match="--grpc-url") as err:
        perf_command(triton.http_url, "fast", grpc_url="127.0.0.1:1", concurrency=[1], output=tmp_path / "r2", **FAST)
    assert err.value.param == "--grpc-url"


@pytest.mark.integration
def test_optional_inputs_are_left_out_unless_the_user_maps_them(triton: TritonServer, tmp_path: Path) -> None:
    """issue 23.3: perf_analyzer's random data fills every input, the optional ones too (the router's
    ROUTE_WEIGHTS got [1.85e+31, -9.8e+26]); repoforge sends only the required ones."""
    from repoforge.perf.command import perf as perf_command

    result = perf_command(triton.http_url, "weighted", protocol="grpc", concurrency=[1], output=tmp_path / "r",
                          grpc_url=triton.grpc_url, plots=False, **FAST)  # fmt: skip
    assert result.report.points[0].throughput > 0
    data = json.loads(Path(result.report.settings["input_data"]).read_text())
    assert set(data["data"][0]) == {"INPUT0"}


@pytest.mark.integration
def test_tune_and_every_run_leave_optional_inputs_out_too(triton: TritonServer, models: dict[str, RepoModel]) -> None:
    """issue 23.3: `run` (what tune measures with) makes the required-inputs data itself when given none."""
    from repoforge.perf.analyzer import required_inputs_data

    opts = PerfOptions("weighted", triton.grpc_url, "grpc", concurrency=[1], **FAST)
    assert json.loads(required_inputs_data(opts, models["weighted"].config) or "{}")["data"][0].keys() == {"INPUT0"}
    assert required_inputs_data(opts, models["fast"].config) is None  # no optional input: random data as before
    (point,) = run(opts, models["weighted"].config)
    assert point.throughput > 0
