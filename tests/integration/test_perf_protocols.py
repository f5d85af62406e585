"""`repoforge perf --protocol sse|ws|async|all` end to end: a real tritonserver (served from a build folder for the
run), a real `repoforge gateway` in front of it and a real redis-server for the queue, measured by the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from test_gateway import make_repo

from repoforge.cli import main
from repoforge.servers.redis import RedisServer
from repoforge.servers.triton import TritonServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("perf-protocols")
    log_file = root / "streamer.log"
    log_file.touch()
    return make_repo(root, log_file)


def _perf(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "repoforge", "perf", *args], capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def test_all_protocols_side_by_side_on_an_ordinary_model_with_the_users_redis(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    with RedisServer() as server:
        done = _perf(str(repo), "-m", "double", "--protocol", "all", "--concurrency", "1,4", "--duration", "1",
                     "--redis", server.url, "-o", str(out), "--json")  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        client = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            assert (
                list(client.scan_iter(match="repoforge-perf:*")) == []
            )  # the run's queue is gone from the user's Redis
        finally:
            client.close()
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["mode"] == "protocols"
    assert report["protocols"] == ["http", "grpc", "sse", "ws", "async"]  # rotated per level: level 1 starts at http
    points = {(p["protocol"], p["concurrency"]): p for p in report["points"]}
    assert set(points) == {(p, c) for p in ("http", "grpc", "sse", "ws", "async") for c in (1, 4)}
    for (protocol, _c), p in points.items():
        assert p["errors"] == 0, (protocol, report["notes"])
        assert p["requests"] > 0 and p["throughput"] > 0, p
        assert p["events_per_request"] == 1.0, p  # an ordinary model answers once, over every protocol
        assert p["event_gap_p50_ms"] is None
        assert 0 < p["first_response_p50_ms"] <= p["p50_ms"] + 1e-6, p
    # async: the 202 comes before the answer (end to end through the queue and the callback)
    assert points[("async", 1)]["first_response_p50_ms"] < points[("async", 1)]["p50_ms"]
    md = (out / "report.md").read_text()
    assert "# Protocols compared: `double`" in md and "| 4 | WebSocket |" in md and "| 1 | async |" in md
    assert {p.name for p in out.iterdir()} >= {"report.json", "report.md", "throughput.png", "latency.png",
                                               "request.json"}  # fmt: skip


def test_a_decoupled_model_streams_its_events_and_skips_what_cannot_stream(repo: Path, tmp_path: Path) -> None:
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"inputs": [
        {"name": "COUNT", "datatype": "INT32", "shape": [1], "data": [4]},
        {"name": "DELAY_MS", "datatype": "INT32", "shape": [1], "data": [40]},
    ]}))  # fmt: skip
    out = tmp_path / "report"
    # measured on a running server (its gRPC port found from the process; the test above covers a build folder
    # served for the run): Triton 2.51 keeps a decoupled model that served gRPC streams live at shutdown until
    # --exit-timeout-secs, which a server started for the run would wait out (30 s) at its end
    with TritonServer(repo, workdir=tmp_path / "triton", extra_args=("--exit-timeout-secs", "3")) as server:
        done = _perf(server.http_url, "-m", "streamer", "--protocol", "all", "--concurrency", "2", "--duration", "2",
                     "--request", str(request), "-o", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "http not measured" in done.stdout and "async not measured" in done.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["protocols"] == ["grpc", "sse", "ws"]
    for p in report["points"]:
        assert p["errors"] == 0 and p["events_per_request"] == 4.0, p
        assert 30 <= p["event_gap_p50_ms"] <= 150, p  # the model's 40 ms between responses, seen by each protocol
        assert p["first_response_p50_ms"] < p["p50_ms"] - 60, p  # the first event long before the last


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--protocol", "sse", "--baseline", "b.json"], "--baseline"),
        (["--protocol", "ws", "--request-rate", "10"], "--request-rate"),
        (["--protocol", "sse", "--redis", "redis://127.0.0.1:1"], "--redis"),
        (["--protocol", "async", "--redis", "http://x"], "--redis"),
        (["--protocol", "all", "--duration", "0"], "--duration"),
        (["--protocol", "all", "-b", "4"], "--batch-size"),
        (["--protocol", "http", "--redis", "redis://127.0.0.1:1"], "--redis"),
    ],
)
def test_bad_combinations_are_usage_errors_before_anything_starts(repo: Path, args: list[str], flag: str) -> None:
    result = CliRunner().invoke(main, ["perf", str(repo), "-m", "double", *args])
    assert result.exit_code == 2, result.output
    assert flag in result.output


def test_a_decoupled_model_asked_over_a_protocol_it_cannot_use_is_a_usage_error(repo: Path) -> None:
    result = CliRunner().invoke(main, ["perf", str(repo), "-m", "streamer", "--protocol", "async"])
    assert result.exit_code == 2 and "decoupled" in result.output, result.output
    result = CliRunner().invoke(main, ["perf", str(repo), "-m", "nosuch", "--protocol", "sse"])
    assert result.exit_code == 2 and "double, streamer" in result.output, result.output
