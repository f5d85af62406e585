"""A features plugin with `model:` answers what an ensemble of the plugin and the model answers: the model run inside
the plugin's stub (`.local_model`, no second stub hop) or, with `in_process: false`, through BLS; the feature lookup
metrics count the same either way."""

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

FEATURES = """\
      columns: [{name: user_id, dtype: BYTES}, {name: age, dtype: FP32, fill: 35}, {name: city, dtype: BYTES, fill: unknown}]
      lookup: {url: "redis://127.0.0.1:9/0", key: user_id, fields: [{name: clicks, default: 3}], timeout_ms: 20, retry_after_s: 0}
      features:
        - {op: standardize, column: age, mean: 40, std: 12}
        - {op: is_missing, column: age}
        - {op: hash, column: city, buckets: 4, output: one_hot}
        - {op: log1p, column: clicks}
"""

SPEC = f"""\
version: 1
defaults: {{max_batch_size: 16}}
models:
  - {{name: a, format: onnx, path: a.onnx}}
  - name: feats
    format: python
    plugin:
      kind: features
{FEATURES}
  - name: pipeline
    format: ensemble
    steps:
      - {{model: feats, inputs: {{user_id: user_id, age: age, city: city}}, outputs: {{FEATURES: f}}}}
      - {{model: a, inputs: {{x: f}}, outputs: {{y: y}}}}
  - name: fast
    format: python
    plugin:
      kind: features
      model: a
{FEATURES}
  - name: slow
    format: python
    plugin:
      kind: features
      model: a
      in_process: false
{FEATURES}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    root = tmp_path_factory.mktemp("features_in_process")
    save(mlp([7, 8, 2], seed=1, input_name="x", output_name="y"), root / "a.onnx")
    (root / "spec.yaml").write_text(SPEC)
    repo = build(root / "spec.yaml", root / "repo", device="cpu").output
    with TritonServer(repo) as s:
        yield s


def _infer(s: TritonServer, model: str, ids: list[bytes], age: np.ndarray, city: list[bytes]) -> np.ndarray:
    client = http.InferenceServerClient(s.http_url, network_timeout=30)
    try:
        inputs = []
        for name, arr in (("user_id", np.array(ids, dtype=object).reshape(-1, 1)), ("age", age.reshape(-1, 1)),
                          ("city", np.array(city, dtype=object).reshape(-1, 1))):  # fmt: skip
            inp = http.InferInput(name, list(arr.shape), "BYTES" if arr.dtype == object else "FP32")
            inp.set_data_from_numpy(arr)
            inputs.append(inp)
        return client.infer(model, inputs).as_numpy("y")
    finally:
        client.close()


def _lookups(s: TritonServer, model: str) -> dict[str, float]:
    m = scrape(s.metrics_url, "repoforge_")
    return {r: m.get(f'repoforge_feature_lookup_total{{model="{model}",result="{r}"}}', 0.0)
            for r in ("hit", "miss", "error", "skipped")}  # fmt: skip


def test_features_run_their_model_in_process_with_the_answers_of_the_ensemble(server: TritonServer) -> None:
    log = Path(server.log_path).read_text() if server.log_path else ""
    assert "fast: the features feed a in process" in log and "slow: the features feed a through BLS" in log
    rng = np.random.default_rng(0)
    batches = []
    for n in (1, 3, 5):
        age = rng.uniform(18, 80, n).astype(np.float32)
        age[0] = np.nan  # a missing value: filled, and flagged by is_missing
        batches.append(([f"u{i}".encode() for i in range(n)], age, [b"paris", b"", b"oslo", b"rome", b"x"][:n]))
    before = _count(server, "a")
    fast = [_infer(server, "fast", *b) for b in batches]
    assert _count(server, "a") == before  # in process: Triton's copy of `a` never saw them
    slow = [_infer(server, "slow", *b) for b in batches]
    assert _count(server, "a") == before + 9  # BLS: every row through Triton's `a`
    ens = [_infer(server, "pipeline", *b) for b in batches]
    for f, s, e in zip(fast, slow, ens, strict=True):
        assert f.shape == e.shape and f.dtype == e.dtype == np.float32
        np.testing.assert_allclose(f, e, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(s, e, rtol=1e-6, atol=1e-6)
    # Redis is down (port 9): every batch answers with the defaults and counts as a lookup error, alike on all three
    looked = {m: _lookups(server, m) for m in ("fast", "slow", "feats")}
    assert looked["fast"] == looked["slow"] == looked["feats"]
    assert sum(looked["fast"].values()) > 0
