"""The gateway end to end: a real tritonserver (a decoupled and an ordinary Python test model), a real
redis-server, the gateway and its workers as real `repoforge` processes, real HTTP/SSE/WebSocket clients.
Every wait is bounded."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from google.protobuf import text_format
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import model_config_pb2 as mc
from websockets.sync.client import connect as ws_connect

from repoforge.servers.ports import free_port
from repoforge.servers.process import ManagedProcess
from repoforge.servers.redis import RedisServer
from repoforge.servers.triton import TritonServer

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data" / "gateway"
T = mc.DataType


def _input(name: str, dtype: int, dims: list[int], optional: bool = False) -> mc.ModelInput:
    return mc.ModelInput(name=name, data_type=dtype, dims=dims, optional=optional)


def make_repo(root: Path, log_file: Path) -> Path:
    """`streamer` (decoupled: COUNT responses DELAY_MS apart, an error after FAIL_AFTER) and `double` (Y = 2X)."""
    cpu2 = [mc.ModelInstanceGroup(count=2, kind=mc.ModelInstanceGroup.KIND_CPU)]
    streamer = mc.ModelConfig(
        name="streamer", backend="python", max_batch_size=0, instance_group=cpu2,
        input=[_input("COUNT", T.TYPE_INT32, [1]), _input("DELAY_MS", T.TYPE_INT32, [1], True),
               _input("FAIL_AFTER", T.TYPE_INT32, [1], True), _input("TAG", T.TYPE_STRING, [1], True)],
        output=[mc.ModelOutput(name="INDEX", data_type=T.TYPE_INT32, dims=[1]),
                mc.ModelOutput(name="TEXT", data_type=T.TYPE_STRING, dims=[1])],
        model_transaction_policy=mc.ModelTransactionPolicy(decoupled=True),
    )  # fmt: skip
    streamer.parameters["log_file"].string_value = str(log_file)
    double = mc.ModelConfig(
        name="double", backend="python", max_batch_size=8, instance_group=cpu2,
        input=[_input("X", T.TYPE_FP32, [-1]), _input("SLEEP_MS", T.TYPE_INT32, [1], True)],
        output=[mc.ModelOutput(name="Y", data_type=T.TYPE_FP32, dims=[-1])],
    )  # fmt: skip
    repo = root / "repo"
    for config, source in ((streamer, "streamer.py"), (double, "double.py")):
        (repo / config.name / "1").mkdir(parents=True)
        shutil.copy(DATA / source, repo / config.name / "1" / "model.py")
        (repo / config.name / "config.pbtxt").write_text(text_format.MessageToString(config))
    return repo


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def repoforge(*args: str, log: Path) -> ManagedProcess:
    return ManagedProcess([sys.executable, "-m", "repoforge", *args], log_path=log, name="repoforge " + args[0])


@dataclass
class Env:
    root: Path
    triton: TritonServer
    redis_url: str
    log_file: Path

    def gateway(self, queue: str, *extra: str, port: int | None = None) -> tuple[ManagedProcess, str]:
        """A started gateway (ready: it answers /v2/health/ready) and its base URL."""
        port = port or free_port("127.0.0.1")
        proc = repoforge("gateway", self.triton.grpc_url, "--port", str(port), "--redis", self.redis_url,
                         "--queue", queue, "--timeout", "1", "--max-body", str(1 << 20), *extra,
                         log=self.root / f"gateway-{port}-{uuid.uuid4().hex[:4]}.log")  # fmt: skip
        proc.start()
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert proc.alive, proc.log_tail()
            try:
                return httpx.get(f"{base}/v2/health/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 30, "the gateway to be ready")
        return proc, base

    def worker(self, queue: str, *extra: str) -> ManagedProcess:
        proc = repoforge("worker", self.triton.grpc_url, "--redis", self.redis_url, "--queue", queue, *extra,
                         log=self.root / f"worker-{uuid.uuid4().hex[:6]}.log")  # fmt: skip
        proc.start()
        return proc


QUEUE_FLAGS = ("--request-timeout", "1", "--visibility-timeout", "3", "--max-deliveries", "3")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("gateway")
    log_file = root / "streamer.log"
    log_file.touch()
    # a stream the cancellation tests walk away from can still be running when the module ends: Triton waits for it
    # up to --exit-timeout-secs (30 s by default) at shutdown, which this module's teardown then paid every run
    triton_server = TritonServer(
        make_repo(root, log_file), workdir=root / "triton", extra_args=("--exit-timeout-secs", "3")
    )
    with triton_server as triton, RedisServer() as redis_server:
        yield Env(root, triton, redis_server.url, log_file)


@pytest.fixture(scope="module")
def gw(env: Env) -> Iterator[str]:
    """The gateway most tests talk to (queue `t:main`), with one worker process answering its queue."""
    proc, base = env.gateway("t:main", *QUEUE_FLAGS)
    worker = env.worker("t:main", "--concurrency", "4", *QUEUE_FLAGS)
    try:
        yield base
    finally:
        worker.stop(timeout=10)
        proc.stop(timeout=10)


@pytest.fixture()
def r(env: Env) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(env.redis_url, decode_responses=True, socket_timeout=10)
    yield client
    client.close()


def sse_events(base: str, body: dict[str, Any], stop_after: int | None = None) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    with httpx.stream("POST", f"{base}/v2/models/streamer/generate_stream", json=body, timeout=10) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
                if stop_after is not None and len(events) >= stop_after:
                    break  # leaving the block closes the connection: the client is gone
    return events


def model_log(env: Env, tag: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in env.log_file.read_text().splitlines() if line.split(" ", 1)[0] == tag]


# -- streaming ---------------------------------------------------------------------------------------------
def test_sse_streams_a_decoupled_model_in_order(gw: str) -> None:
    events = sse_events(gw, {"COUNT": 5, "DELAY_MS": 30, "TAG": "sse-order"})
    assert [e["INDEX"] for e in events] == [0, 1, 2, 3, 4]
    assert [e["TEXT"] for e in events] == [f"token {i}" for i in range(5)]
    assert all(e["model_name"] == "streamer" for e in events)


def test_websocket_streams_in_order_and_serves_an_ordinary_model(gw: str) -> None:
    ws_base = gw.replace("http://", "ws://")
    with ws_connect(f"{ws_base}/v2/models/streamer/stream", open_timeout=10, close_timeout=5) as ws:
        for round_ in range(2):  # one connection, one request after another
            ws.send(json.dumps({"COUNT": 4, "DELAY_MS": 20, "TAG": f"ws-order-{round_}", "id": f"r{round_}"}))
            events = [json.loads(ws.recv(timeout=10)) for _ in range(5)]
            assert [e.get("INDEX") for e in events[:4]] == [0, 1, 2, 3]
            assert events[4] == {"id": f"r{round_}", "done": True, "responses": 4}
    with ws_connect(f"{ws_base}/v2/models/double/stream", open_timeout=10, close_timeout=5) as ws:
        ws.send(json.dumps({"X": [1.0, 2.5]}))
        assert json.loads(ws.recv(timeout=10))["Y"] == [2.0, 5.0]
        assert json.loads(ws.recv(timeout=10))["done"] is True
    events = sse_events(gw, {"COUNT": 1})  # an ordinary model answers SSE with one event too
    assert len(events) == 1


def test_a_failure_mid_stream_is_k_events_then_an_error_event(gw: str) -> None:
    events = sse_events(gw, {"COUNT": 6, "FAIL_AFTER": 2, "TAG": "sse-fail"})
    assert [e.get("INDEX") for e in events[:2]] == [0, 1]
    assert len(events) == 3 and "failed on purpose after 2" in events[2]["error"]
    with ws_connect(f"{gw.replace('http://', 'ws://')}/v2/models/streamer/stream", open_timeout=10) as ws:
        ws.send(json.dumps({"COUNT": 6, "FAIL_AFTER": 3, "TAG": "ws-fail"}))
        events = [json.loads(ws.recv(timeout=10)) for _ in range(4)]
        assert [e.get("INDEX") for e in events[:3]] == [0, 1, 2]
        assert "failed on purpose after 3" in events[3]["error"]
        with pytest.raises(Exception, match="1011"):  # then the gateway closes: internal error
            ws.recv(timeout=10)


@pytest.mark.parametrize("protocol", ["sse", "ws"])
def test_a_client_that_leaves_cancels_the_request_in_the_model(gw: str, env: Env, protocol: str) -> None:
    tag = f"leave-{protocol}"
    body = {"COUNT": 40, "DELAY_MS": 100, "TAG": tag}
    if protocol == "sse":
        assert len(sse_events(gw, body, stop_after=1)) == 1
    else:
        with ws_connect(f"{gw.replace('http://', 'ws://')}/v2/models/streamer/stream", open_timeout=10) as ws:
            ws.send(json.dumps(body))
            assert json.loads(ws.recv(timeout=10))["INDEX"] == 0
    line = wait_for(lambda: next((x for x in model_log(env, tag) if x.startswith("cancelled")), None), 10,
                    f"{tag}: the model to see is_cancelled()")  # fmt: skip
    produced = int(line.rsplit(" ", 1)[1])
    assert 1 <= produced < 40, line
    assert not any(x.startswith("finished") for x in model_log(env, tag))


# -- synchronous -------------------------------------------------------------------------------------------
def test_infer_passes_kserve_v2_json_through_and_times_out_with_504(gw: str) -> None:
    ok = httpx.post(f"{gw}/v2/models/double/infer", timeout=10,
                    json={"id": "a1", "inputs": [{"name": "X", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]}]})  # fmt: skip
    assert ok.status_code == 200
    assert ok.json()["id"] == "a1"
    assert ok.json()["outputs"] == [{"name": "Y", "datatype": "FP32", "shape": [2, 2], "data": [2.0, 4.0, 6.0, 8.0]}]
    slow = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 1], "data": [1]},
                       {"name": "SLEEP_MS", "datatype": "INT32", "shape": [1, 1], "data": [2500]}]}  # fmt: skip
    started = time.monotonic()
    late = httpx.post(f"{gw}/v2/models/double/infer", json=slow, timeout=10)
    assert late.status_code == 504 and "cancelled" in late.json()["error"]
    assert time.monotonic() - started < 2.5  # answered at the gateway's --timeout 1, not when the model finished


# -- bad input ---------------------------------------------------------------------------------------------
X1 = {"name": "X", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}
BAD = [
    ("nosuch", {"inputs": [X1]}, 404, "served models: double, streamer"),
    ("double", {"inputs": [{**X1, "name": "Z"}]}, 400, "no input 'Z'"),
    ("double", {"inputs": [{**X1, "datatype": "FP64"}]}, 400, "datatype FP64, the model expects FP32"),
    ("double", {"inputs": [{**X1, "shape": [2]}]}, 400, "shape [2] does not match"),
    ("double", {"inputs": [{**X1, "shape": [1, 3]}]}, 400, "2 values for shape [1, 3]"),
    ("double", {"inputs": []}, 400, "needs input 'X'"),
    ("double", {"inputs": [{**X1, "data": [0.0] * 300_000}]}, 413, "over the gateway's limit"),
]


@pytest.mark.parametrize(("model", "body", "status", "says"), BAD, ids=[b[3][:20] for b in BAD])
def test_bad_input_is_a_4xx_and_nothing_is_enqueued(
    gw: str, r: redis.Redis, model: str, body: dict[str, Any], status: int, says: str
) -> None:
    submitted = r.hget("t:main:stats", "submitted")
    length = r.xlen("t:main:requests")
    for route in ("async", "infer"):
        answer = httpx.post(f"{gw}/v2/models/{model}/{route}", json=body, timeout=10)
        assert answer.status_code == status, (route, answer.text)
        assert says in answer.json()["error"], answer.json()
    assert r.hget("t:main:stats", "submitted") == submitted and r.xlen("t:main:requests") == length
    if status == 404:
        assert answer.json()["models"] == ["double", "streamer"]


def test_async_without_redis_is_a_usage_error(env: Env) -> None:
    for args in (["gateway", "127.0.0.1:1", "--workers", "2"], ["worker", "127.0.0.1:1"]):
        done = subprocess.run([sys.executable, "-m", "repoforge", *args], capture_output=True, text=True, timeout=60,
                              env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"})  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "--redis" in done.stderr


def test_a_redis_that_may_evict_the_queue_is_refused_unless_allowed(env: Env) -> None:
    """A Redis with maxmemory-policy other than noeviction deletes keys when full, queued requests among them: the
    gateway and the worker refuse it at start (exit 2), or with --allow-eviction say so and run."""
    with RedisServer() as own:
        client = redis.Redis.from_url(own.url, decode_responses=True, socket_timeout=10)
        client.config_set("maxmemory", "64mb")
        client.config_set("maxmemory-policy", "allkeys-lru")
        client.close()
        for args in (["gateway", env.triton.grpc_url], ["worker", env.triton.grpc_url]):
            done = subprocess.run([sys.executable, "-m", "repoforge", *args, "--redis", own.url], capture_output=True,
                                  text=True, timeout=60)  # fmt: skip
            assert done.returncode == 2, done.stderr
            assert "maxmemory-policy allkeys-lru" in done.stderr and "noeviction" in done.stderr, done.stderr
            assert "Traceback" not in done.stderr
        port = free_port("127.0.0.1")
        proc = repoforge("gateway", env.triton.grpc_url, "--port", str(port), "--redis", own.url, "--allow-eviction",
                         log=env.root / "eviction.log")  # fmt: skip
        proc.start()
        try:
            wait_for(lambda: _ready(proc, f"http://127.0.0.1:{port}"), 30, "the gateway with --allow-eviction")
            assert "warning:" in proc.log_tail() and "allkeys-lru" in proc.log_tail()
        finally:
            proc.stop(timeout=10)


def _ready(proc: ManagedProcess, base: str) -> bool:
    assert proc.alive, proc.log_tail()
    try:
        return httpx.get(f"{base}/v2/health/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


# -- asynchronous ------------------------------------------------------------------------------------------
def submit(base: str, x: list[float], sleep_ms: int = 0, callback: str | None = None) -> str:
    inputs: list[dict[str, Any]] = [{"name": "X", "datatype": "FP32", "shape": [1, len(x)], "data": x}]
    if sleep_ms:
        inputs.append({"name": "SLEEP_MS", "datatype": "INT32", "shape": [1, 1], "data": [sleep_ms]})
    body: dict[str, Any] = {"inputs": inputs, **({"callback": callback} if callback else {})}
    answer = httpx.post(f"{base}/v2/models/double/async", json=body, timeout=10)
    assert answer.status_code == 202, answer.text
    job_id: str = answer.json()["id"]
    return job_id


def final(base: str, job_id: str, timeout: float = 30) -> dict[str, Any]:
    def answered() -> dict[str, Any] | None:
        got: dict[str, Any] = httpx.get(f"{base}/v2/async/{job_id}", timeout=10).json()
        return got if got["status"] != "pending" else None

    result: dict[str, Any] = wait_for(answered, timeout, f"id {job_id} to be answered", every=0.2)
    return result


def test_a_thousand_requests_survive_a_sigkilled_worker_each_done_exactly_once(
    gw: str, env: Env, r: redis.Redis
) -> None:
    victim = env.worker("t:main", "--concurrency", "4", *QUEUE_FLAGS)
    done_before = int(r.hget("t:main:stats", "done") or 0)
    claimed_before = int(r.hget("t:main:stats", "claimed") or 0)

    async def submit_all() -> list[str]:
        limit = asyncio.Semaphore(16)
        async with httpx.AsyncClient(timeout=30) as client:

            async def one(i: int) -> str:
                body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 1], "data": [i]},
                                   {"name": "SLEEP_MS", "datatype": "INT32", "shape": [1, 1], "data": [3]}]}  # fmt: skip
                async with limit:
                    answer = await client.post(f"{gw}/v2/models/double/async", json=body)
                assert answer.status_code == 202, answer.text
                return str(answer.json()["id"])

            return list(await asyncio.gather(*(one(i) for i in range(1000))))

    def victim_busy() -> bool:
        consumers = r.xinfo_consumers("t:main:requests", "workers")
        return any(f"-{victim.pid}-" in c["name"] and c["pending"] > 0 for c in consumers)

    # the victim is reading before anything is submitted: on a loaded host its start (imports) can take longer than the
    # other worker needs to answer all 1000 (a landing at load ~15 timed out below, the victim never holding one);
    # Redis lists a consumer only once it has read something, so the victim's log says when it reads
    wait_for(lambda: "consuming t:main:requests" in victim.log_tail(), 60, "the victim worker to start reading")
    submitted: list[list[str]] = []
    submitting = threading.Thread(target=lambda: submitted.append(asyncio.run(submit_all())), daemon=True)
    submitting.start()

    wait_for(victim_busy, 30, "the victim worker to hold pending requests", every=0.01)
    victim.send_signal(signal.SIGKILL)  # mid-way: requests are still being submitted
    victim.stop(timeout=5)
    submitting.join(timeout=60)
    assert submitted, "submitting did not finish"
    ids = submitted[0]
    assert len(set(ids)) == 1000
    wait_for(lambda: int(r.hget("t:main:stats", "done") or 0) - done_before >= 1000, 60,
             "all 1000 ids to be answered", every=0.5)  # fmt: skip
    with httpx.Client(base_url=gw, timeout=10) as client:
        for i, job_id in enumerate(ids):
            got = client.get(f"/v2/async/{job_id}").json()
            assert got["status"] == "done", got
            assert got["outputs"][0]["data"] == [2.0 * i]
    assert int(r.hget("t:main:stats", "done") or 0) - done_before == 1000  # no id answered twice
    assert int(r.hget("t:main:stats", "claimed") or 0) > claimed_before  # the victim's requests were taken over
    assert r.xlen("t:main:requests") == 0 and r.xpending("t:main:requests", "workers")["pending"] == 0


def test_a_poison_request_is_dead_lettered_with_its_reason(gw: str, r: redis.Redis) -> None:
    job_id = submit(gw, [-1.0])
    result = final(gw, job_id)
    assert result["status"] == "failed" and "poison: X[0] is -1" in result["reason"] and result["deliveries"] == 3
    dead = [fields for _mid, fields in r.xrange("t:main:dead") if fields["id"] == job_id]
    assert len(dead) == 1 and "poison" in dead[0]["reason"] and dead[0]["deliveries"] == "3"


def test_a_timeout_is_retried_then_dead_lettered(gw: str, r: redis.Redis) -> None:
    timeouts = int(r.hget("t:main:stats", "timeouts") or 0)
    job_id = submit(gw, [1.0], sleep_ms=1300)
    result = final(gw, job_id, timeout=40)
    assert result["status"] == "failed" and result["reason"].startswith("timeout") and result["deliveries"] == 3
    assert int(r.hget("t:main:stats", "timeouts") or 0) - timeouts == 3
    assert any(f["id"] == job_id and f["reason"].startswith("timeout") for _m, f in r.xrange("t:main:dead"))


def test_the_callback_gets_the_answer_and_metrics_show_the_queue(gw: str) -> None:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        job_id = submit(gw, [4.0], callback=f"http://127.0.0.1:{server.server_port}/hook")
        assert final(gw, job_id)["status"] == "done"
        wait_for(lambda: received, 10, "the callback")
        assert received[0]["id"] == job_id and received[0]["outputs"][0]["data"] == [8.0]
    finally:
        server.shutdown()
    metrics = {s.name + str(sorted(s.labels.items())): s.value
               for f in text_string_to_metric_families(httpx.get(f"{gw}/metrics", timeout=10).text) for s in f.samples}  # fmt: skip
    for gauge in ("length", "lag", "pending", "delayed", "dead"):
        assert f"repoforge_gateway_queue_{gauge}[]" in metrics
    assert metrics["repoforge_gateway_queue_dead[]"] >= 2
    assert metrics["repoforge_gateway_async_outcomes_total[('outcome', 'done')]"] >= 1
    assert metrics["repoforge_gateway_stream_cancelled_total[('protocol', 'sse')]"] >= 1


def test_killing_and_restarting_the_gateway_loses_no_accepted_id(env: Env, r: redis.Redis) -> None:
    """All 40 ids are accepted before any worker runs (by a gateway without workers, on the same queue), so the kill
    meets 38 of them queued or in flight whatever the host's load: sent one by one to the gateway that also answered
    them, on a loaded host the 40 requests took longer to send than to answer, all were done before the kill and
    nothing was left to lose (it failed so). A request timeout of 2 s: a 150 ms request is not the timeout under
    test here, and three 1 s timeouts of one request on a loaded host would dead-letter it."""
    flags = ("--request-timeout", "2", "--visibility-timeout", "3", "--max-deliveries", "3")
    front, front_base = env.gateway("t:restart", *flags)  # accepts, answers nothing
    try:
        ids = [submit(front_base, [float(i)], sleep_ms=150) for i in range(40)]
        front.send_signal(signal.SIGTERM)  # it shuts down meanwhile; reaped at the end
        assert int(r.hget("t:restart:stats", "done") or 0) == 0
        flags = ("--workers", "2", *flags)
        proc, base = env.gateway("t:restart", *flags)
        port = int(base.rsplit(":", 1)[1])
        try:
            wait_for(lambda: int(r.hget("t:restart:stats", "done") or 0) >= 2, 30, "some answers before the kill")
            proc.send_signal(signal.SIGKILL)  # with in-process workers mid-request
            proc.stop(timeout=5)
            assert int(r.hget("t:restart:stats", "done") or 0) < 40
        finally:
            proc.stop(timeout=5)
        proc, base = env.gateway("t:restart", *flags, port=port)
        try:
            for i, job_id in enumerate(ids):
                got = final(base, job_id, timeout=30)
                assert got["status"] == "done" and got["outputs"][0]["data"] == [2.0 * i]
            assert int(r.hget("t:restart:stats", "done") or 0) == 40
        finally:
            proc.stop(timeout=10)
    finally:
        front.stop(timeout=10)


# -- spec sections -----------------------------------------------------------------------------------------
def test_a_build_serves_with_its_gateway_and_async_sections(env: Env, r: redis.Redis) -> None:
    """`gateway:` and `async:` of spec.yaml are recorded by the build and give `repoforge gateway BUILD` its port, its
    queue and its retries when no flag says otherwise."""
    from repoforge.build import build

    tabular = Path(__file__).resolve().parents[2] / "examples" / "tabular"
    port = free_port("127.0.0.1")
    spec = env.root / "sections" / "spec.yaml"
    spec.parent.mkdir()
    spec.write_text((tabular / "spec.yaml").read_text().replace("path: models/", f"path: {tabular}/models/")
                    + f"gateway:\n  port: {port}\n  timeout_s: 5\nasync:\n  queue: 'spec:q'\n  max_deliveries: 2\n")  # fmt: skip
    out = build(spec, env.root / "sections" / "build", device="cpu").output
    proc = repoforge("gateway", str(out), "--redis", env.redis_url, "--workers", "1", log=env.root / "sections.log")
    proc.start()
    base = f"http://127.0.0.1:{port}"  # the spec's port: no --port given

    def ready() -> bool:
        assert proc.alive, proc.log_tail()
        try:
            return httpx.get(f"{base}/v2/health/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, 90, "the gateway on the spec's port")
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 8], "data": [0.5] * 8}]}
        job = httpx.post(f"{base}/v2/models/classifier/async", json=body, timeout=10).json()["id"]
        assert final(base, job)["status"] == "done"
        assert r.exists("spec:q:requests") and int(r.hget("spec:q:stats", "done") or 0) == 1  # the spec's queue
        assert "max_deliveries 2" in proc.log_tail()  # said at start: what came from the build
    finally:
        proc.stop(timeout=15)
