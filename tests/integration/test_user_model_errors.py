"""A user's Python model counts its failed requests in repoforge_model_errors_total{model,version} however it answers
(issue 21): a decoupled model that sends an error response through its response sender, and a model whose file has
its own name (raw_config's default_model_filename), served unchanged behind the build's counting file of that name.
One real tritonserver (the bundled 2.51) serves both."""

from __future__ import annotations

import queue
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient import grpc, http
from tritonclient.grpc import model_config_pb2 as mc

from repoforge.backends import model_file
from repoforge.build import build
from repoforge.metrics import parse_prometheus
from repoforge.servers.triton import TritonServer

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data"
ERRORS = "repoforge_model_errors_total"

SPEC = """\
version: 1
models:
  - name: stream
    format: python
    path: streamer.py
    max_batch_size: 0
    model_transaction_policy: {{decoupled: true}}
    parameters: {{log_file: "{log}"}}
    inputs:
      - {{name: COUNT, dtype: INT32, dims: [1]}}
      - {{name: DELAY_MS, dtype: INT32, dims: [1], optional: true}}
      - {{name: FAIL_AFTER, dtype: INT32, dims: [1], optional: true}}
      - {{name: TAG, dtype: BYTES, dims: [1], optional: true}}
    outputs: [{{name: INDEX, dtype: INT32, dims: [1]}}, {{name: TEXT, dtype: BYTES, dims: [1]}}]
  - name: renamed
    format: python
    path: mymodel.py
    raw_config: 'default_model_filename: "mymodel.py"'
    max_batch_size: 4
    inputs: [{{name: X, dtype: FP32, dims: [4]}}]
    outputs: [{{name: Y, dtype: FP32, dims: [4]}}]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TritonServer, Path]]:
    root = tmp_path_factory.mktemp("user-errors")
    shutil.copy(DATA / "gateway" / "streamer.py", root / "streamer.py")
    shutil.copy(DATA / "plugins" / "broken.py", root / "mymodel.py")  # answers every request with an error
    (root / "spec.yaml").write_text(SPEC.format(log=root / "stream.log"))
    repo = build(root / "spec.yaml", root / "repo", device="cpu").output
    with TritonServer(repo) as s:
        yield s, repo


def errors(s: TritonServer) -> dict[str, float]:
    with urllib.request.urlopen(s.metrics_url, timeout=10) as resp:
        text = resp.read().decode()
    return parse_prometheus(text, ERRORS)


def stream(s: TritonServer, count: int, fail_after: int | None) -> list[Any]:
    """Every response of one streamed request (results, then the error if one came), until the final one."""
    got: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = grpc.InferenceServerClient(s.grpc_url)
    feed = {"COUNT": count, **({"FAIL_AFTER": fail_after} if fail_after is not None else {})}
    ins = []
    for name, value in feed.items():
        t = grpc.InferInput(name, [1], "INT32")
        t.set_data_from_numpy(np.array([value], dtype=np.int32))
        ins.append(t)
    client.start_stream(callback=lambda result, error: got.put((result, error)), stream_timeout=30)
    try:
        client.async_stream_infer("stream", ins, enable_empty_final_response=True)
        out: list[Any] = []
        while True:
            result, error = got.get(timeout=30)
            if error is not None:
                out.append(error)
                break
            final = result.get_response().parameters.get("triton_final_response")
            if result.as_numpy("INDEX") is not None:
                out.append(result.as_numpy("INDEX")[0])
            if final is not None and final.bool_param:
                break
        return out
    finally:
        client.stop_stream()
        client.close()


def test_a_renamed_user_file_is_served_behind_a_counting_file_of_its_name(server: tuple[TritonServer, Path]) -> None:
    s, repo = server
    cfg = text_format.Parse((repo / "renamed" / "config.pbtxt").read_text(), mc.ModelConfig())
    assert cfg.default_model_filename == "mymodel.py"
    assert (repo / "renamed/1/mymodel.py").read_bytes() == model_file("user").read_bytes()
    assert (repo / "renamed/1/repoforge_user_model.py").read_bytes() == (DATA / "plugins" / "broken.py").read_bytes()
    client = http.InferenceServerClient(s.http_url, network_timeout=30, connection_timeout=30)
    for _ in range(3):
        x = http.InferInput("X", [1, 4], "FP32")
        x.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
        with pytest.raises(Exception, match="broken on purpose"):
            client.infer("renamed", [x])
    assert errors(s)[f'{ERRORS}{{model="renamed",version="1"}}'] == 3


def test_a_decoupled_models_sent_errors_are_counted(server: tuple[TritonServer, Path]) -> None:
    s, _ = server
    assert errors(s)[f'{ERRORS}{{model="stream",version="1"}}'] == 0  # created at load
    assert stream(s, 3, None) == [0, 1, 2]
    assert errors(s)[f'{ERRORS}{{model="stream",version="1"}}'] == 0  # successful streams add nothing
    for _ in range(2):
        got = stream(s, 3, 1)
        assert got[0] == 0 and "failed on purpose after 1" in str(got[-1])
    assert errors(s)[f'{ERRORS}{{model="stream",version="1"}}'] == 2
