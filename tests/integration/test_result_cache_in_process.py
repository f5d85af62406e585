"""A result cache in front of an ONNX model of its own build answers misses inside its stub (no BLS hop, the router's
`.local_model`), with the same answers and cache metrics as through BLS; `in_process: false` keeps BLS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_router_in_process import _count  # rows Triton itself ran on a model
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
  - name: fast
    format: python
    plugin: {kind: result_cache, model: a, max_entries: 100}
  - name: slow
    format: python
    plugin: {kind: result_cache, model: a, max_entries: 100, in_process: false}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    root = tmp_path_factory.mktemp("result_cache_in_process")
    save(mlp([4, 8, 2], seed=1, input_name="x", output_name="y"), root / "a.onnx")
    (root / "spec.yaml").write_text(SPEC)
    repo = build(root / "spec.yaml", root / "repo", device="cpu").output
    with TritonServer(repo) as s:
        yield s


def _infer(s: TritonServer, model: str, x: np.ndarray) -> np.ndarray:
    client = http.InferenceServerClient(s.http_url, network_timeout=30)
    try:
        inp = http.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        return client.infer(model, [inp]).as_numpy("y")
    finally:
        client.close()


def _misses(s: TritonServer, model: str) -> float:
    return scrape(s.metrics_url, "repoforge_").get(
        f'repoforge_cache_requests_total{{model="{model}",result="miss"}}', 0.0
    )


def test_misses_run_in_process_with_the_answers_of_bls(server: TritonServer) -> None:
    log = Path(server.log_path).read_text() if server.log_path else ""
    assert "fast: misses go to a in process" in log and "slow: misses go to a through BLS" in log
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((3, 4)).astype(np.float32) for _ in range(5)]
    before, misses = _count(server, "a"), _misses(server, "fast")
    fast = [_infer(server, "fast", x) for x in xs]
    assert _count(server, "a") == before  # in process: Triton's copy of `a` never saw them
    assert _misses(server, "fast") == misses + len(xs)
    again = [_infer(server, "fast", x) for x in xs]  # hits: the cached answers
    slow = [_infer(server, "slow", x) for x in xs]
    assert _count(server, "a") == before + 3 * len(xs)  # BLS: every row through Triton's `a`
    direct = [_infer(server, "a", x) for x in xs]
    for f, g, s, d in zip(fast, again, slow, direct, strict=True):
        np.testing.assert_array_equal(f, g)
        np.testing.assert_allclose(f, s, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(f, d, rtol=1e-6, atol=1e-6)
