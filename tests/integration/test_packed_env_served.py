"""`build --pack-env`: a model's declared packages travel in the build as a Triton custom Python execution environment
(EXECUTION_ENV_PATH), proved in the bundled tritonserver run from a Python environment that LACKS them.

The server's environment is test_stock_servers' linked venv of nvidia-pytriton alone (no redis, no repoforge); the
Redis result cache still loads, answers and writes to a real Redis, because its stub runs in the packed env. The
env holds only what the model declares plus numpy (redis: ~18 MB packed), so the build stays a few seconds.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from test_stock_servers import imports, linked_venv, triton_in_venv
from tritonclient import http
from tritonclient.grpc import model_config_pb2 as mc

from repoforge.build import build
from repoforge.output import MANIFEST
from repoforge.servers.redis import RedisServer
from repoforge.servers.triton import TritonServer
from repoforge.triton.execution_env import ARCHIVE, CONFIG_VALUE, LOCK_KEY, PARAMETER

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data" / "plugins"

SPEC = """\
version: 1
defaults:
  max_batch_size: 8
models:
  - name: scaled
    format: python
    path: scale.py
    parameters: {factor: 2}
    inputs: [{name: KEY, dtype: BYTES, dims: [1]}, {name: X, dtype: FP32, dims: [4]}]
    outputs: [{name: Y, dtype: FP32, dims: [4]}]
  - name: cached_redis
    format: python
    plugin: {kind: result_cache, model: scaled, backend: redis, redis: {url: "redis://127.0.0.1:1/0", prefix: "env:"}}
"""


@dataclass
class Packed:
    server: TritonServer
    repo: Path
    venv: Path
    redis: RedisServer


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Packed]:
    root = tmp_path_factory.mktemp("packed-env")
    shutil.copy(DATA / "scale.py", root / "scale.py")
    (root / "spec.yaml").write_text(SPEC)
    repo = build(root / "spec.yaml", root / "repo", device="cpu", pack_env=True).output
    venv = linked_venv(root / "venv", ["nvidia-pytriton"])  # the server's Python: no redis in it
    with triton_in_venv(venv, repo) as (server, redis_server):
        yield Packed(server, repo, venv, redis_server)


def test_only_the_model_that_declares_packages_gets_an_env(packed: Packed) -> None:
    lock = json.loads((packed.repo / MANIFEST).read_text())
    assert lock["python_requirements"] == {"cached_redis": [lock["python_requirements"]["cached_redis"][0]]}
    entry = lock[LOCK_KEY]["cached_redis"]
    assert set(lock[LOCK_KEY]) == {"cached_redis"} and entry["path"] == f"cached_redis/{ARCHIVE}"
    assert {p.split("==")[0].lower() for p in entry["packages"]} >= {"redis", "numpy"}
    assert lock["files"][entry["path"]]  # hashed like every other file of the build
    cfg = text_format.Parse((packed.repo / "cached_redis" / "config.pbtxt").read_text(), mc.ModelConfig())
    assert cfg.parameters[PARAMETER].string_value == CONFIG_VALUE
    plain = text_format.Parse((packed.repo / "scaled" / "config.pbtxt").read_text(), mc.ModelConfig())
    assert PARAMETER not in plain.parameters and not (packed.repo / "scaled" / ARCHIVE).exists()
    with tarfile.open(packed.repo / entry["path"]) as tar:
        names = set(tar.getnames())
    assert {"bin/activate", "bin/python3", "pyvenv.cfg"} <= names
    assert any(n.endswith("site-packages/redis/__init__.py") for n in names)


def test_the_servers_python_lacks_what_the_model_needs(packed: Packed) -> None:
    assert "No module named 'redis'" in imports(packed.venv, "redis").stderr
    assert "No module named 'repoforge'" in imports(packed.venv, "repoforge").stderr


def test_the_model_runs_in_its_packed_env(packed: Packed) -> None:
    client = http.InferenceServerClient(packed.server.http_url, network_timeout=30, connection_timeout=30)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    for _ in range(2):  # a miss, then a hit: redis imported from the env, talking to a real Redis
        ins = [http.InferInput("KEY", [2, 1], "BYTES"), http.InferInput("X", [2, 4], "FP32")]
        ins[0].set_data_from_numpy(np.array([[b"k"], [b"k"]], dtype=object))
        ins[1].set_data_from_numpy(x)
        np.testing.assert_allclose(client.infer("cached_redis", ins).as_numpy("Y"), x * 2)
    import redis

    assert redis.Redis.from_url(packed.redis.url, socket_timeout=5).keys("env:*")
