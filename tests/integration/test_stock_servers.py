"""Builds serve on stock servers: the bundled tritonserver binary and TorchServe, each run from a Python environment
with NO repoforge in it, holding only the server's own packages and what the build declares
(`python_requirements` in repoforge.lock.json), with PYTHONPATH unset.

A fresh venv with pip installs is slow on this host, so each environment is a venv whose site-packages holds links
to exactly the declared distributions and their dependency closure (their files from importlib.metadata), and
nothing else; `import repoforge` fails in it (asserted). The servers' process lifecycle (free ports, readiness,
kill by pid, log tails) is repoforge's own server classes, pointed at that environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import Distribution, distribution
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from plugin_specs import SCALE_MODELS, copy_scale_models
from tritonclient import http

import repoforge.servers.triton as triton_server
from repoforge.build import build
from repoforge.metrics import parse_prometheus
from repoforge.output import MANIFEST
from repoforge.servers.redis import RedisServer
from repoforge.servers.torchserve import TorchServeServer
from repoforge.servers.triton import TritonServer
from repoforge.targets.torchserve.validate import check_model, check_workflow
from repoforge.validate import validate

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data" / "plugins"


# ------------------------------------------------------------------------------------------------ environments
def closure(names: list[str]) -> dict[str, Distribution]:
    """The distributions `names` and everything they require (markers evaluated, no extras)."""
    seen: dict[str, Distribution] = {}
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        dist = distribution(name)
        seen[name] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def linked_venv(root: Path, names: list[str]) -> Path:
    """A venv (no pip, no system site-packages) whose site-packages links exactly the files of `names`' closure."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    site = root / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    assert site.is_dir() and not any(site.iterdir())
    for dist in closure(names).values():
        base = Path(str(dist.locate_file(""))).resolve()
        for f in dist.files or []:
            src = Path(str(dist.locate_file(f))).resolve()
            if base not in src.parents or not src.is_file():  # console scripts under bin/, caches left out
                continue
            target = site / src.relative_to(base)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(src)
    return root


def clean_env(venv: Path, **extra: str) -> dict[str, str]:
    """The stock process environment: the venv's bin first on PATH, no PYTHONPATH, no repoforge venv."""
    env = {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        **{k: v for k, v in os.environ.items() if k.startswith("REPOFORGE_CACHE")},
        **extra,
    }
    return env


@contextmanager
def triton_in_venv(venv: Path, repo: Path) -> Iterator[tuple[TritonServer, RedisServer]]:
    """A tritonserver serving `repo` whose Python backend stubs run `venv`'s Python (the stub runs the first python3 on
    its PATH), and a Redis the models reach through REPOFORGE_REDIS_URL: the spec's Redis URL points nowhere, and the
    deployment's variable wins, as deploy sets it."""
    with RedisServer() as redis_server, pytest.MonkeyPatch.context() as mp:
        env = clean_env(
            venv,
            REPOFORGE_REDIS_URL=redis_server.url,
            # the stub loads this Python's libpython; the copied python backend needs pytriton's libraries
            LD_LIBRARY_PATH=":".join(
                str(p)
                for p in (sysconfig.get_config_var("LIBDIR"), triton_server.find_tritonserver().libs_dir)
                if p is not None
            ),
        )
        mp.setattr(triton_server, "server_env", lambda install=None, base=None: dict(env))
        with TritonServer(repo) as server:
            yield server, redis_server


def imports(venv: Path, module: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "python3"), "-c", f"import {module}"],
        env=clean_env(venv),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def declared(build_dir: Path) -> list[str]:
    """Distribution names of everything the build's lock says its models need beyond the stock image."""
    lock = json.loads((build_dir / MANIFEST).read_text(encoding="utf-8"))
    return sorted({Requirement(r).name for reqs in lock.get("python_requirements", {}).values() for r in reqs})


# ------------------------------------------------------------------------------------------------ Triton
FEATURES = """\
      kind: features
      columns: [{name: age, dtype: FP32, fill: 35}, {name: city, dtype: BYTES, fill: unknown}]
      features:
        - {op: standardize, column: age, mean: 40, std: 10}
        - {op: vocabulary, column: city, values: [paris, london], oov_buckets: 1}
        - {op: hash, column: city, buckets: 8, output: one_hot}
"""

TRITON_SPEC = """\
version: 1
defaults:
  max_batch_size: 64
models:
{scale_models}  - name: feats
    format: python
    plugin:
{features}
  - name: cached
    format: python
    plugin: {{kind: result_cache, model: model_b, max_entries: 100, ttl_s: 60}}
  - name: cached_redis
    format: python
    plugin: {{kind: result_cache, model: model_b, backend: redis, redis: {{url: "redis://127.0.0.1:1/0", prefix: "st:"}}}}
  - name: cached_broken
    format: python
    plugin: {{kind: result_cache, model: broken}}
  - name: router
    format: python
    plugin:
      kind: router
      routes: [{{model: model_a, weight: 3}}, {{model: model_b, weight: 1}}]
"""

FAILING = {"broken", "cached_broken"}  # answer every request with the model's own error, on purpose


@dataclass
class StockTriton:
    server: TritonServer
    repo: Path
    venv: Path
    redis: RedisServer


@pytest.fixture(scope="module")
def stock_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StockTriton]:
    root = tmp_path_factory.mktemp("stock-triton")
    copy_scale_models(root)
    (root / "spec.yaml").write_text(TRITON_SPEC.format(scale_models=SCALE_MODELS, features=FEATURES))
    repo = build(root / "spec.yaml", root / "repo", device="cpu").output
    needs = declared(repo)
    assert needs == ["redis"]  # the redis result cache; the runtime itself ships inside the build
    venv = linked_venv(root / "venv", ["nvidia-pytriton", *needs])
    with triton_in_venv(venv, repo) as (server, redis_server):
        yield StockTriton(server, repo, venv, redis_server)


def test_the_triton_environment_has_no_repoforge(stock_triton: StockTriton) -> None:
    assert "No module named 'repoforge'" in imports(stock_triton.venv, "repoforge").stderr
    assert imports(stock_triton.venv, "numpy").returncode == 0
    assert imports(stock_triton.venv, "redis").returncode == 0


def test_every_model_answers_as_validate_says(stock_triton: StockTriton) -> None:
    report = validate(stock_triton.repo, url=stock_triton.server.http_url)
    by_name = {c.name: c for c in report.checks}
    assert set(by_name) == {
        "model_a", "model_b", "broken", "feats", "cached", "cached_redis", "cached_broken", "router",
    }  # fmt: skip
    for name, check in by_name.items():
        assert check.state == "READY", (name, check.message)
        if name in FAILING:
            assert not check.ok and "broken on purpose" in check.message, (name, check.message)
        else:
            assert check.ok, (name, check.message)


def _infer(st: StockTriton, model: str, x: np.ndarray, inputs: dict[str, np.ndarray] | None = None) -> Any:
    client = http.InferenceServerClient(st.server.http_url, network_timeout=30, connection_timeout=30)
    feed = inputs or {"KEY": np.array([[b"k"]] * len(x), dtype=object), "X": x}
    ins = []
    for name, arr in feed.items():
        t = http.InferInput(name, list(arr.shape), "BYTES" if arr.dtype == object else "FP32")
        t.set_data_from_numpy(arr)
        ins.append(t)
    return client.infer(model, ins)


def test_plugins_compute_on_the_stock_server(stock_triton: StockTriton) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    for model in ("cached", "cached_redis"):
        for _ in range(2):  # a miss, then a hit (Redis through REPOFORGE_REDIS_URL)
            np.testing.assert_allclose(_infer(stock_triton, model, x).as_numpy("Y"), x * 2)
    import redis

    assert redis.Redis.from_url(stock_triton.redis.url, socket_timeout=5).keys("st:*")
    y = _infer(stock_triton, "router", x).as_numpy("Y")
    assert all(np.allclose(row, x[i]) or np.allclose(row, 2 * x[i]) for i, row in enumerate(y))
    feats = {"age": np.array([[30.0], [np.nan]], dtype=np.float32), "city": np.array([[b"paris"], [b""]], dtype=object)}
    out = _infer(stock_triton, "feats", x, feats).as_numpy("FEATURES")
    assert out.shape == (2, 1 + 3 + 8) and out[0, 0] == pytest.approx(-1.0) and out[1, 0] == pytest.approx(-0.5)


def test_failed_requests_are_counted_by_the_model_that_answered_them(stock_triton: StockTriton) -> None:
    x = np.ones((1, 4), dtype=np.float32)
    for model in ("cached_broken", "broken"):  # a plugin, and a user's own Python model (the build's wrapper)
        for _ in range(3):
            with pytest.raises(Exception, match="broken on purpose"):
                _infer(stock_triton, model, x)
    with urllib.request.urlopen(stock_triton.server.metrics_url, timeout=10) as resp:
        metrics = parse_prometheus(resp.read().decode(), "repoforge_model_errors_total")
    assert metrics['repoforge_model_errors_total{model="cached_broken",version="1"}'] >= 3
    assert metrics['repoforge_model_errors_total{model="broken",version="1"}'] >= 6  # its own 3 + the cache's 3
    assert metrics['repoforge_model_errors_total{model="cached",version="1"}'] == 0  # created at load, at 0
    assert metrics['repoforge_model_errors_total{model="model_a",version="1"}'] == 0


# ------------------------------------------------------------------------------------------------ the router's state
def test_the_routers_state_file_lives_in_the_servers_folder_and_goes_with_it(tmp_path: Path) -> None:
    """Issue 23.15: the weights file was /tmp/repoforge-router/<pid>-<model>.json and stayed after a clean stop."""
    (tmp_path / "spec.yaml").write_text(
        "version: 1\nmodels:\n"
        "  - {name: a, format: python, path: scale.py, max_batch_size: 8,\n"
        "     inputs: [{name: KEY, dtype: BYTES, dims: [1]}, {name: X, dtype: FP32, dims: [4]}],\n"
        "     outputs: [{name: Y, dtype: FP32, dims: [4]}]}\n"
        "  - {name: r, format: python, plugin: {kind: router, routes: [{model: a}, {model: a}]}}\n"
    )
    shutil.copy(DATA / "scale.py", tmp_path / "scale.py")
    repo = build(tmp_path / "spec.yaml", tmp_path / "repo", device="cpu").output
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("REPOFORGE_STATE_DIR", raising=False)
        server = TritonServer(repo, workdir=tmp_path / "work").start()  # kept after stop: only finalize cleans
        try:
            client = http.InferenceServerClient(server.http_url, network_timeout=30)
            w = http.InferInput("ROUTE_WEIGHTS", [1, 2], "FP32")
            w.set_data_from_numpy(np.array([[1.0, 3.0]], dtype=np.float32))
            x = http.InferInput("X", [1, 4], "FP32")
            x.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
            k = http.InferInput("KEY", [1, 1], "BYTES")
            k.set_data_from_numpy(np.array([[b"k"]], dtype=object))
            client.infer("r", [k, x, w])
            client.close()  # an open keep-alive connection makes Triton wait out its exit timeout, then not unload
            state = server.workdir / "state" / "repoforge-router" / str(server.pid) / "r.json"
            assert json.loads(state.read_text())["weights"] == [0.25, 0.75]
        finally:
            server.stop()
        assert not state.exists() and not state.parent.exists()


# ------------------------------------------------------------------------------------------------ TorchServe
OWN_HANDLER = '''\
"""A handler of the user's own: repoforge's handler from the runtime shipped in the archive, plus a header."""
from repoforge_runtime.torchserve.handler import RepoforgeHandler


class ModelHandler(RepoforgeHandler):
    def postprocess(self, results):
        out = super().postprocess(results)
        for i in range(len(out)):
            self._header(i, "X-Own-Handler", "yes")
        return out
'''

TS_SPEC = """\
version: 1
models:
  - name: first
    format: torchscript
    path: first.pt
    max_batch_size: 8
    inputs: [{name: x, dtype: FP32, dims: [4]}]
    outputs: [{name: h, dtype: FP32, dims: [4]}]
  - name: second
    format: torchscript
    path: second.pt
    max_batch_size: 8
    inputs: [{name: h, dtype: FP32, dims: [4]}]
    outputs: [{name: y, dtype: FP32, dims: [2]}]
  - name: own
    format: torchscript
    path: second.pt
    handler: own_handler.py
    max_batch_size: 8
    inputs: [{name: h, dtype: FP32, dims: [4]}]
    outputs: [{name: y, dtype: FP32, dims: [2]}]
  - name: chain
    format: ensemble
    steps:
      - {model: first, inputs: {x: x}, outputs: {h: hidden}}
      - {model: second, inputs: {h: hidden}, outputs: {y: y}}
"""

TS_STOCK = ["torch", "torchserve", "numpy", "pyyaml"]  # the pytorch/torchserve image (PyYAML: needed, undeclared)


class StockTorchServe(TorchServeServer):
    """repoforge's TorchServe lifecycle, run by the stock environment's Python instead of repoforge's."""

    def __init__(self, *args: Any, venv: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.venv = venv

    def command(self, config_file: Path, log_config: Path | None) -> list[str]:
        return [str(self.venv / "bin" / "python3"), *super().command(config_file, log_config)[1:]]

    def _environ(self) -> dict[str, str]:
        assert self._tmpdir is not None
        return clean_env(
            self.venv,
            TMPDIR=str(self._tmpdir),
            TEMP=str(self._tmpdir),
            LOG_LOCATION=str(self.log_dir),
            METRICS_LOCATION=str(self.log_dir),
            PYTHONUNBUFFERED="1",
            **({"JAVA_HOME": os.environ["JAVA_HOME"]} if "JAVA_HOME" in os.environ else {}),
        )


@pytest.fixture(scope="module")
def stock_torchserve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StockTorchServe, Path]]:
    torch = pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("stock-torchserve")
    torch.manual_seed(0)
    torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())).save(str(root / "first.pt"))
    torch.jit.script(torch.nn.Linear(4, 2)).save(str(root / "second.pt"))
    (root / "own_handler.py").write_text(OWN_HANDLER)
    (root / "spec.yaml").write_text(TS_SPEC)
    out = build(root / "spec.yaml", root / "out", target="torchserve", device="cpu").output
    needs = declared(out)
    assert needs == []  # TorchScript and a user's handler: nothing beyond the stock image
    venv = linked_venv(root / "venv", [*TS_STOCK, *needs])
    server = StockTorchServe(out, workflows="all", disable_token_auth=True, venv=venv)
    with server:
        yield server, out


def test_the_torchserve_environment_has_no_repoforge(stock_torchserve: tuple[StockTorchServe, Path]) -> None:
    server, _ = stock_torchserve
    assert "No module named 'repoforge'" in imports(server.venv, "repoforge").stderr
    assert imports(server.venv, "ts").returncode == 0


def test_archives_and_the_workflow_answer_as_validate_says(stock_torchserve: tuple[StockTorchServe, Path]) -> None:
    server, out = stock_torchserve
    for mar in sorted((out / "model-store").glob("*.mar")):
        check = check_model(server, mar)
        assert check.ok, (check.name, check.message)
    check = check_workflow(server, out / "wf-store" / "chain.war", out / "model-store")
    assert check.ok, check.message
    req = urllib.request.Request(
        f"{server.inference_url}/predictions/own",
        data=json.dumps({"h": [[1.0, 2.0, 3.0, 4.0]]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers["X-Own-Handler"] == "yes" and len(json.loads(resp.read())["y"][0]) == 2


def test_the_workflow_handler_is_one_self_contained_file(stock_torchserve: tuple[StockTorchServe, Path]) -> None:
    import zipfile

    _, out = stock_torchserve
    with zipfile.ZipFile(out / "wf-store" / "chain.war") as z:
        code = z.read("repoforge_workflow.py").decode()
    assert "import repoforge" not in code and "from repoforge" not in code
    compile(code, "repoforge_workflow.py", "exec")
    assert textwrap.dedent(code).count("def request_node") == 1
