"""The router runs ONNX routes of its own build inside its stub (no BLS hop) and keeps every behaviour of the BLS
path: the same answers and routes, per-route metrics, sticky routing, shadow agreement, weights changed at run time,
and Triton's view of the route (an unloaded route fails as through BLS, a reloaded one serves again)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from tritonclient import http

from repoforge.build import build
from repoforge.metrics import scrape
from repoforge.modelgen import mlp, save
from repoforge.servers.triton import TritonServer

pytestmark = pytest.mark.integration

SPEC = """\
version: 1
defaults: {max_batch_size: 16}
models:
  - {name: a, format: onnx, path: a.onnx}
  - {name: b, format: onnx, path: b.onnx}
  - name: fast
    format: python
    plugin: {kind: router, routes: [{model: a, weight: 3}, {model: b, weight: 1}], sticky_key: id, shadow: {model: b}}
  - name: slow
    format: python
    plugin:
      kind: router
      routes: [{model: a, weight: 3}, {model: b, weight: 1}]
      sticky_key: id
      shadow: {model: b}
      in_process: false
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    root = tmp_path_factory.mktemp("router_in_process")
    for name, seed in (("a", 1), ("b", 2)):
        model = mlp([4, 8, 2], seed=seed, input_name="x", output_name="y")
        batch = model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # an id the router hashes (sticky)
        model.graph.input.append(onnx.helper.make_tensor_value_info("id", onnx.TensorProto.INT64, [batch, 1]))
        save(model, root / f"{name}.onnx")
    (root / "spec.yaml").write_text(SPEC)
    repo = build(root / "spec.yaml", root / "repo", device="cpu").output
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REPOFORGE_STATE_DIR", str(root / "state"))
        with TritonServer(repo, model_control="explicit", load_models=["*"]) as s:
            yield s


def _infer(s: TritonServer, model: str, x: np.ndarray, weights: list[float] | None = None) -> tuple[np.ndarray, ...]:
    client = http.InferenceServerClient(s.http_url, network_timeout=30)
    try:
        ids = np.arange(len(x), dtype=np.int64).reshape(-1, 1) + int(abs(x[:, 0]).sum() * 1000)
        inputs = [http.InferInput("x", list(x.shape), "FP32"), http.InferInput("id", list(ids.shape), "INT64")]
        inputs[0].set_data_from_numpy(x)
        inputs[1].set_data_from_numpy(ids)
        if weights is not None:
            w = http.InferInput("ROUTE_WEIGHTS", [len(x), len(weights)], "FP32")
            w.set_data_from_numpy(np.asarray([weights] * len(x), dtype=np.float32))
            inputs.append(w)
        res = client.infer(model, inputs)
        return res.as_numpy("y"), res.as_numpy("ROUTE")[:, 0]
    finally:
        client.close()


def _metric(s: TritonServer, name: str, **labels: str) -> float:
    key = name + "{" + ",".join(sorted(f'{k}="{v}"' for k, v in labels.items())) + "}"
    return scrape(s.metrics_url, "repoforge_").get(key, 0.0)


def _count(s: TritonServer, model: str) -> int:
    """Rows Triton itself ran on `model` (its statistics): what an in-process route never adds to."""
    client = http.InferenceServerClient(s.http_url, network_timeout=30)
    try:
        stats = client.get_inference_statistics(model)["model_stats"]
    finally:
        client.close()
    return sum(int(m.get("inference_count", 0)) for m in stats)


def _wait(pred, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def test_in_process_answers_route_and_count_like_bls(server: TritonServer) -> None:
    log = Path(server.log_path).read_text() if server.log_path else ""
    assert "fast: route a runs in process" in log and "fast: route b runs in process" in log
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((16, 4)).astype(np.float32) for _ in range(10)]
    before = {m: _count(server, m) for m in ("a", "b")}
    rows0 = {r: _metric(server, "repoforge_router_rows_total", model="fast", route=r) for r in ("a", "b")}
    fast = [_infer(server, "fast", x) for x in xs]
    assert {m: _count(server, m) for m in ("a", "b")} == before  # in process: the route models never saw them
    slow = [_infer(server, "slow", x) for x in xs]
    for (yf, rf), (ys, rs) in zip(fast, slow, strict=True):
        assert rf.tolist() == rs.tolist()  # sticky by x: the same rows take the same routes
        np.testing.assert_allclose(yf, ys, rtol=1e-6, atol=1e-6)
    routes = np.concatenate([r for _, r in fast])
    assert 0 < (routes == 1).sum() < len(routes)
    for r, i in (("a", 0), ("b", 1)):
        sent = _metric(server, "repoforge_router_rows_total", model="fast", route=r) - rows0[r]
        assert sent == (routes == i).sum()
    assert _metric(server, "repoforge_router_latency_us_count", model="fast", route="a") > 0
    # the shadow (b, in process too) agrees with b's rows and disagrees with a's
    assert _wait(
        lambda: (
            _metric(server, "repoforge_shadow_rows_total", model="fast", shadow="b", outcome="agree")
            + _metric(server, "repoforge_shadow_rows_total", model="fast", shadow="b", outcome="disagree")
            >= len(routes)
        )
    )
    assert (
        _metric(server, "repoforge_shadow_rows_total", model="fast", shadow="b", outcome="agree") >= (routes == 1).sum()
    )
    assert (
        _metric(server, "repoforge_shadow_rows_total", model="fast", shadow="b", outcome="disagree")
        >= (routes == 0).sum()
    )


def test_weights_and_an_unloaded_route_follow_triton(server: TritonServer) -> None:
    x = np.ones((4, 4), dtype=np.float32)
    client = http.InferenceServerClient(server.http_url, network_timeout=30)
    try:
        _, routes = _infer(server, "fast", x, weights=[0, 1])
        assert routes.tolist() == [1] * 4
        client.unload_model("b")
        assert _wait(lambda: not server.model_ready("b"))
        time.sleep(0.6)  # the router re-checks the route's state every 0.5 s
        errors0 = _metric(server, "repoforge_router_errors_total", model="fast", route="b")
        with pytest.raises(Exception, match="b"):
            _infer(server, "fast", x)
        assert _metric(server, "repoforge_router_errors_total", model="fast", route="b") == errors0 + 4
        client.load_model("b")
        assert _wait(lambda: server.model_ready("b"))
        time.sleep(0.6)
        y, routes = _infer(server, "fast", x)
        assert routes.tolist() == [1] * 4 and np.isfinite(y).all()
        _, routes = _infer(server, "fast", x, weights=[3, 1])
    finally:
        client.close()
