"""Drift while serving, end to end: a features plugin with `drift:` (profile from `repoforge drift profile` on
in-distribution data) in a real tritonserver; in-distribution traffic keeps every repoforge_drift_psi < 0.1,
a window of shifted rows for one feature pushes it past 0.2 while the others stay low, and `drift report` on
the same shifted rows names that feature first."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from tritonclient import http

from repoforge.build import build
from repoforge.drift.profile import make_profile, write_profile
from repoforge.drift.report import drift_report
from repoforge.metrics import scrape
from repoforge.servers.triton import TritonServer

pytestmark = pytest.mark.integration
WINDOW = 1000

SPEC = f"""version: 1
models:
  - name: feats
    format: python
    max_batch_size: 64
    plugin:
      kind: features
      columns: [{{name: age, dtype: FP32}}, {{name: income, dtype: FP32}}, {{name: city, dtype: BYTES}}]
      features:
        - {{op: standardize, column: age, mean: 40, std: 10}}
        - {{op: log1p, column: income}}
        - {{op: hash, column: city, buckets: 8}}
      drift: {{reference: ref.json, window: {WINDOW}}}
"""


def _rows(rng: np.random.Generator, n: int, age_shift: float = 0.0) -> dict[str, np.ndarray]:
    return {
        "age": rng.normal(40, 10, n) + age_shift,
        "income": rng.lognormal(10, 1, n),
        "city": rng.choice(["paris", "london", "tokyo"], n, p=[0.5, 0.3, 0.2]),
    }


def _send(client: http.InferenceServerClient, rows: dict[str, np.ndarray]) -> None:
    n = len(rows["age"])
    for lo in range(0, n, 64):
        inputs = []
        for name, v in rows.items():
            part = v[lo : lo + 64]
            if name == "city":
                a = np.array([[s.encode()] for s in part], dtype=np.object_)
                t = http.InferInput(name, list(a.shape), "BYTES")
            else:
                a = part.astype(np.float32).reshape(-1, 1)
                t = http.InferInput(name, list(a.shape), "FP32")
            t.set_data_from_numpy(a)
            inputs.append(t)
        client.infer("feats", inputs)


def _psi(url: str, model: str = "feats") -> dict[str, float]:
    m = scrape(url, "repoforge_drift_psi")
    return {k.split('feature="')[1].split('"')[0]: v for k, v in m.items() if f'model="{model}"' in k}


def _wait(url: str, pred, timeout: float = 10.0, model: str = "feats") -> dict[str, float]:
    deadline = time.monotonic() + timeout
    got = _psi(url, model)
    while not pred(got) and time.monotonic() < deadline:
        time.sleep(0.2)
        got = _psi(url, model)
    return got


def test_drift_psi_on_metrics_follows_a_shifted_feature(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ref.npz", **_rows(rng, 20000))
    write_profile(make_profile(tmp_path / "ref.npz", "feats"), tmp_path / "ref.json")
    (tmp_path / "spec.yaml").write_text(SPEC)
    repo = build(tmp_path / "spec.yaml", tmp_path / "repo", device="cpu").output
    with TritonServer(repo) as server:
        client = http.InferenceServerClient(server.http_url, network_timeout=30)
        _send(client, _rows(rng, 2 * WINDOW))
        got = _wait(server.metrics_url, lambda g: len(g) == 3)
        assert set(got) == {"age", "income", "city"}, got
        assert all(v < 0.1 for v in got.values()), got
        shifted = _rows(rng, WINDOW + 64, age_shift=10.0)
        _send(client, shifted)
        got = _wait(server.metrics_url, lambda g: g.get("age", 0) > 0.2)
        assert got["age"] > 0.2 and got["income"] < 0.1 and got["city"] < 0.1, got
        # an HTTP client left open keeps Triton's shutdown waiting for its --exit-timeout-secs (30 s) for nothing
        client.close()
    np.savez(tmp_path / "cur.npz", **shifted)
    rep = drift_report(tmp_path / "ref.json", tmp_path / "cur.npz", tmp_path / "report")
    assert rep.data["worst"] == "age" and rep.drifted == ["age"]


ROUTER_SPEC = f"""version: 1
defaults: {{max_batch_size: 64}}
models:
  - name: scale
    format: python
    path: candidate.py
    inputs: [{{name: X, dtype: FP32, dims: [4]}}]
    outputs: [{{name: Y, dtype: FP32, dims: [4]}}]
  - name: router
    format: python
    plugin:
      kind: router
      routes: [{{model: scale}}]
      drift: {{reference: ref_x.json, window: {WINDOW}}}
"""


def test_router_exports_drift_of_each_column_of_its_input_tensor(tmp_path: Path) -> None:
    import shutil

    shutil.copy(Path(__file__).resolve().parents[1] / "data" / "rollout" / "candidate.py", tmp_path / "candidate.py")
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "ref.npz", X=rng.normal(0, 1, (20000, 4)))
    write_profile(make_profile(tmp_path / "ref.npz", "router"), tmp_path / "ref_x.json")
    (tmp_path / "spec.yaml").write_text(ROUTER_SPEC)
    repo = build(tmp_path / "spec.yaml", tmp_path / "repo", device="cpu").output

    def send(client: http.InferenceServerClient, x: np.ndarray) -> None:
        for lo in range(0, len(x), 64):
            t = http.InferInput("X", [min(64, len(x) - lo), 4], "FP32")
            t.set_data_from_numpy(x[lo : lo + 64].astype(np.float32))
            client.infer("router", [t])

    with TritonServer(repo) as server:
        client = http.InferenceServerClient(server.http_url, network_timeout=30)
        send(client, rng.normal(0, 1, (2 * WINDOW, 4)))
        got = _wait(server.metrics_url, lambda g: len(g) == 4, model="router")
        assert set(got) == {"X[0]", "X[1]", "X[2]", "X[3]"} and all(v < 0.1 for v in got.values()), got
        x = rng.normal(0, 1, (WINDOW + 64, 4))
        x[:, 2] += 1.0
        send(client, x)
        got = _wait(server.metrics_url, lambda g: g.get("X[2]", 0) > 0.2, model="router")
        assert got["X[2]"] > 0.2 and max(got["X[0]"], got["X[1]"], got["X[3]"]) < 0.1, got
        client.close()
