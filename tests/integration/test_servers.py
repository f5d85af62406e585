"""Real-server tests for repoforge.servers: tritonserver (pytriton bundle, CPU) and redis-server.

One Triton server is shared by the module; the broken-model test starts one more, short-lived one.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from repoforge.servers import (
    ManagedProcess,
    RedisNotFoundError,
    RedisServer,
    ServerStartError,
    TritonNotFoundError,
    TritonServer,
    find_redis_server,
    find_tritonserver,
    free_port,
    free_ports,
    group_pids,
    harmless_log_line,
    parse_failed_models,
    pid_alive,
    port_is_free,
    prepare_backend_dir,
    redis_ping,
    server_env,
)
from repoforge.servers.ports import ports_in_use

ADD_MODEL_PY = """\
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            out = pb_utils.Tensor("OUTPUT0", (a + b).astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
"""

BROKEN_MODEL_PY = """\
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("repoforge-test: broken on purpose")

    def execute(self, requests):
        return []
"""


def write_python_model(repo: Path, name: str, model_py: str) -> None:
    """A python-backend model with INPUT0 + INPUT1 -> OUTPUT0 (FP32, variable length)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    cfg = mc.ModelConfig(name=name, backend="python", max_batch_size=8)
    cfg.input.add(name="INPUT0", data_type=mc.TYPE_FP32, dims=[-1])
    cfg.input.add(name="INPUT1", data_type=mc.TYPE_FP32, dims=[-1])
    cfg.output.add(name="OUTPUT0", data_type=mc.TYPE_FP32, dims=[-1])
    cfg.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(text_format.MessageToString(cfg))
    (repo / name / "1" / "model.py").write_text(model_py)


def _require_triton() -> None:
    try:
        find_tritonserver()
    except TritonNotFoundError as exc:
        pytest.skip(f"no tritonserver: {exc}")


def _require_redis() -> None:
    try:
        find_redis_server()
    except RedisNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def add_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repo-add")
    write_python_model(repo, "add", ADD_MODEL_PY)
    return repo


@pytest.fixture(scope="module")
def triton(add_repo: Path, repoforge_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """The one Triton server of this module (explicit mode, so load/unload can be tested too)."""
    _require_triton()
    server = TritonServer(
        add_repo,
        model_control="explicit",
        load_models=["add"],
        workdir=tmp_path_factory.mktemp("triton-work"),
    )
    server.start(timeout=180)
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------
# Pure helpers (no server)
# --------------------------------------------------------------------------------------------
def test_free_ports_distinct_and_bindable() -> None:
    ports = free_ports(8)
    assert len(ports) == len(set(ports)) == 8
    assert all(1024 <= p <= 65535 for p in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))  # it really was free
    assert isinstance(free_port(), int)
    assert free_ports(0) == []


def test_server_start_error_message_has_command_exit_code_and_log_tail() -> None:
    err = ServerStartError(
        "it broke", command=["srv", "--flag", "a b"], returncode=3, log_tail="line1\nline2", details=["why"]
    )
    text = str(err)
    assert "it broke" in text and "why" in text
    assert "srv --flag 'a b'" in text
    assert "exit code: 3" in text
    assert "line1\nline2" in text


def test_empty_log_line_only_where_a_log_file_exists(tmp_path: Path) -> None:
    """A start refused before any server ran has no log: no "(the log is empty)" line; an empty log file says so."""
    assert "log" not in str(ServerStartError("http port 8000 on 127.0.0.1 is already in use"))
    missing = ServerStartError("it broke", log_path=tmp_path / "never-written.log")
    assert "(the log is empty)" not in str(missing)
    (tmp_path / "empty.log").write_text("")
    assert "(the log is empty)" in str(ServerStartError("it broke", log_path=tmp_path / "empty.log"))


def test_ports_in_use_names_every_taken_port() -> None:
    with socket.socket() as a, socket.socket() as b:
        for s in (a, b):
            s.bind(("127.0.0.1", 0))
            s.listen()
        busy = [a.getsockname()[1], b.getsockname()[1]]
        free = free_port()
        assert ports_in_use([busy[0], free, busy[1]]) == busy


def test_parse_failed_models_from_lines_and_table() -> None:
    log = textwrap.dedent(
        """\
        E1125 11:20:46.410013 3908 server.cc:241] "CudaDriverHelper has not been initialized."
        E1125 11:20:55.396881 4031 model_lifecycle.cc:642] "failed to load 'broken' version 1: \
        Internal: RuntimeError: boom\\n\\nAt:\\n  model.py(4): initialize\\n"
        I1125 11:20:55.396902 4031 model_lifecycle.cc:777] "failed to load 'broken'"
        +--------+---------+-------------------------+
        | Model  | Version | Status                  |
        +--------+---------+-------------------------+
        | add    | 1       | READY                   |
        | broken | 1       | UNAVAILABLE: Internal:  |
        | other  | 1       | UNAVAILABLE: bad config |
        |        |         | second line             |
        +--------+---------+-------------------------+
        """
    )
    failed = parse_failed_models(log)
    assert set(failed) == {"broken", "other"}
    assert failed["broken"].startswith("Internal: RuntimeError: boom")
    assert failed["other"] == "bad config second line"
    assert harmless_log_line(log.splitlines()[0])
    assert not harmless_log_line(log.splitlines()[1])


def test_busy_explicit_port_is_refused(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        assert not port_is_free(busy)
        with pytest.raises(ServerStartError, match=f"http port {busy} .* already in use"):
            TritonServer(tmp_path, http_port=busy).start()
        try:
            redis = RedisServer(port=busy)
        except RedisNotFoundError:
            return
        with pytest.raises(ServerStartError, match="already in use"):
            redis.start()
        assert redis.pid is None  # nothing was started
    assert port_is_free(busy)


def test_docker_command(tmp_path: Path) -> None:
    server = TritonServer(tmp_path, model_control="explicit", load_models=["add"], cache_size_bytes=1024)
    line = server.docker_command(tmp_path)
    argv = shlex.split(line)
    assert argv[:5] == ["docker", "run", "--gpus", "all", "--rm"]
    assert f"{tmp_path}:/models" in argv
    assert "nvcr.io/nvidia/tritonserver:24.10-py3" in argv
    tail = argv[argv.index("tritonserver") :]
    assert "--model-repository=/models" in tail
    assert "--model-control-mode=explicit" in tail and "--load-model=add" in tail
    assert "--cache-config=local,size=1024" in tail


def test_managed_process_failure_shows_log_tail(tmp_path: Path) -> None:
    code = "import sys; print('starting up'); print('fatal: no config', file=sys.stderr); sys.exit(7)"
    proc = ManagedProcess([sys.executable, "-c", code], log_path=tmp_path / "p.log")
    with proc:
        with pytest.raises(ServerStartError) as info:
            proc.wait_until(lambda: False, timeout=60, what="never")
    text = str(info.value)
    assert "exit code: 7" in text
    assert "starting up" in text and "fatal: no config" in text
    assert sys.executable in text
    assert info.value.returncode == 7


def test_managed_process_stop_kills_group_and_is_idempotent(tmp_path: Path) -> None:
    # A parent that ignores SIGTERM and has a child: stop() must escalate and take the child too.
    code = (
        "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); print('ok', flush=True); "
        "time.sleep(600)"
    )
    proc = ManagedProcess([sys.executable, "-c", code], log_path=tmp_path / "p.log").start()
    proc.wait_until(lambda: "ok" in proc.log_tail() and len(group_pids(proc.pid or 0)) >= 2, 60, "child")
    pids = group_pids(proc.pid or 0)
    assert len(pids) >= 2
    rc = proc.stop(timeout=0.5)
    assert rc == -signal.SIGKILL
    assert proc.stop() == rc  # idempotent
    assert not proc.alive
    assert not any(pid_alive(p) for p in pids)


def test_a_server_does_not_outlive_a_repoforge_killed_with_sigkill(tmp_path: Path) -> None:
    # The owner starts a server and is SIGKILLed: no atexit, no stop(). The watchdog notices its parent is gone
    # and stops the server's whole group.
    server = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)"
    owner = (
        "import sys, time; from repoforge.servers.process import ManagedProcess; "
        f"p = ManagedProcess([sys.executable, '-c', {server!r}], log_path={str(tmp_path / 's.log')!r}).start(); "
        "print(p.pid, flush=True); time.sleep(600)"
    )
    parent = subprocess.Popen([sys.executable, "-c", owner], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert pid_alive(pid)
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 30
        while group_pids(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not group_pids(pid), "the server outlived its killed owner"
    finally:
        if parent.poll() is None:
            parent.kill()


# --------------------------------------------------------------------------------------------
# Triton
# --------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_prepare_backend_dir_is_idempotent(repoforge_cache: Path) -> None:
    _require_triton()
    install = find_tritonserver()
    first = prepare_backend_dir(install)
    second = prepare_backend_dir(install)
    assert first == second
    python_dir = first / "python"
    for name in ("libtriton_python.so", "triton_python_backend_utils.py", "triton_python_backend_stub"):
        assert (python_dir / name).is_file(), name
    assert os.access(python_dir / "triton_python_backend_stub", os.X_OK)
    if install.source == "pytriton":
        assert repoforge_cache in first.parents  # built in the cache, site-packages untouched
        assert not (install.backends_dir / "python" / "triton_python_backend_stub").exists()
    env = server_env(install)
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


@pytest.mark.integration
def test_bundled_server_gets_python_based_onnxruntime_and_pytorch_backends(repoforge_cache: Path) -> None:
    """The pytriton server has no libtriton_onnxruntime.so / libtriton_pytorch.so: its private backend folder gets
    repoforge's Python-based backends of those names (their model.py, byte for byte); an install that brings its own
    stub (the NGC image) is used as it is, with its native backends."""
    from repoforge.servers.triton import private_backends
    from repoforge.servers.triton_install import PYTHON_BASED_BACKENDS, python_based_backend

    _require_triton()
    install = find_tritonserver()
    if install.source != "pytriton":
        pytest.skip("not the pytriton-bundled server")
    assert private_backends(install) == PYTHON_BASED_BACKENDS == ("onnxruntime", "pytorch")
    backends = prepare_backend_dir(install)
    for name in PYTHON_BASED_BACKENDS:
        assert (backends / name / "model.py").read_bytes() == python_based_backend(name).read_bytes()
        assert not (backends / name / f"libtriton_{name}.so").exists()
    ngc_like = replace(install, backends_dir=backends, stubs_dir=None)  # a stub in place: nothing is added
    assert private_backends(ngc_like) == () and prepare_backend_dir(ngc_like) == backends


@pytest.mark.integration
def test_triton_ready_and_infer(triton: TritonServer) -> None:
    import tritonclient.http as httpclient

    assert triton.alive and triton.is_ready()
    assert triton.metadata()["version"]
    client = httpclient.InferenceServerClient(url=triton.http_url)
    try:
        assert client.is_server_ready()
        assert client.is_model_ready("add")
        a = np.arange(6, dtype=np.float32).reshape(2, 3)
        b = np.full((2, 3), 10.0, dtype=np.float32)
        inputs = [
            httpclient.InferInput("INPUT0", list(a.shape), "FP32"),
            httpclient.InferInput("INPUT1", list(b.shape), "FP32"),
        ]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(b)
        result = client.infer("add", inputs, outputs=[httpclient.InferRequestedOutput("OUTPUT0")])
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    finally:
        client.close()


@pytest.mark.integration
def test_triton_grpc_and_metrics_urls(triton: TritonServer) -> None:
    import urllib.request

    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url=triton.grpc_url)
    try:
        assert client.is_server_live()
    finally:
        client.close()
    with urllib.request.urlopen(triton.metrics_url, timeout=10) as resp:
        assert b"nv_inference" in resp.read()


@pytest.mark.integration
def test_triton_model_states_and_explicit_load(triton: TritonServer) -> None:
    states = {s["name"]: s for s in triton.model_states()}
    assert states["add"]["state"] == "READY"
    assert states["add"]["version"] == "1"
    triton.unload_model("add")
    deadline = time.monotonic() + 60
    while triton.model_ready("add") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not triton.model_ready("add")
    triton.load_model("add")
    assert triton.model_ready("add")
    assert {s["name"]: s["state"] for s in triton.model_states()}["add"] == "READY"


@pytest.mark.integration
def test_triton_stub_processes_are_in_the_server_group(triton: TritonServer) -> None:
    assert triton.pid is not None
    members = group_pids(triton.pid)
    assert triton.pid in members
    assert len(members) >= 2, "expected the python backend stub next to tritonserver"


@pytest.mark.integration
def test_triton_broken_model_reports_name_and_log(tmp_path: Path, repoforge_cache: Path) -> None:
    _require_triton()
    repo = tmp_path / "repo"
    write_python_model(repo, "broken_model", BROKEN_MODEL_PY)
    server = TritonServer(repo, workdir=tmp_path / "work")
    with pytest.raises(ServerStartError) as info:
        server.start(timeout=180)
    err = info.value
    text = str(err)
    assert "broken_model" in text
    assert "broken_model" in err.failed_models
    assert "broken on purpose" in err.failed_models["broken_model"]
    assert "--- last lines of the log ---" in text and "failed to load all models" in text
    assert err.returncode not in (None, 0)
    assert "CudaDriverHelper" not in err.log_tail  # CPU-only noise is filtered out
    assert not server.alive and server.pid is not None
    assert not group_pids(server.pid)
    server.stop()  # still fine after a failed start


@pytest.mark.integration
def test_triton_stop_is_idempotent_and_leaves_nothing(triton: TritonServer) -> None:
    # Runs after the other tests that use `triton` (definition order); stops the module's server.
    pid = triton.pid
    assert pid is not None
    members = group_pids(pid)
    assert len(members) >= 2
    rc = triton.stop()
    assert rc == 0  # Triton exits cleanly on SIGTERM
    assert triton.stop() == rc
    assert not triton.alive
    assert not any(pid_alive(p) for p in members)
    assert not group_pids(pid)


# --------------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_redis_start_ping_stop() -> None:
    _require_redis()
    with RedisServer() as server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert server.port is not None
        assert redis_ping("127.0.0.1", server.port)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n")
            assert sock.recv(64).startswith(b"+OK")
        pid = server.pid
        workdir = server.workdir
    assert pid is not None and not pid_alive(pid)
    assert not workdir.exists()
    assert server.stop() is not None  # idempotent


@pytest.mark.integration
def test_redis_pause_resume_restart() -> None:
    _require_redis()
    server = RedisServer().start()
    try:
        port = server.port
        server.pause()
        assert server.paused and not server.ping(timeout=0.3)
        server.resume()
        assert server.ping()
        old_pid = server.pid
        server.restart()
        assert server.port == port and server.pid != old_pid and server.ping()
        assert old_pid is not None and not pid_alive(old_pid)
        server.pause()  # stop() must also work on a paused server
    finally:
        server.stop()
    assert server.pid is not None and not pid_alive(server.pid)
    assert not server.ping(timeout=0.3)


@pytest.mark.integration
def test_redis_bad_argument_shows_log_tail() -> None:
    _require_redis()
    server = RedisServer(extra_args=["--no-such-option", "x"])
    with pytest.raises(ServerStartError) as info:
        server.start(timeout=30)
    text = str(info.value)
    assert "no-such-option" in text
    assert "redis-server" in text
    server.stop()
