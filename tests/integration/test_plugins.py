"""Plugins end to end: spec → repository → a real tritonserver + a real redis-server (both on free ports,
started for this module and stopped afterwards)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from plugin_specs import SCALE_MODELS, copy_scale_models
from tritonclient import http

from repoforge.build import build
from repoforge.features import FeaturePipeline, FeatureStore, OnlineLookup
from repoforge.metrics import scrape
from repoforge.modelgen import mlp, save
from repoforge.servers.redis import RedisServer
from repoforge.servers.triton import TritonServer
from repoforge.spec import load_spec
from repoforge.spec.plugins import FeaturesPlugin, output_dim

pytestmark = pytest.mark.integration

FEATURES = """\
      kind: features
      columns:
        - {{name: user, dtype: BYTES}}
        - {{name: age, dtype: FP32, fill: 35}}
        - {{name: city, dtype: BYTES, fill: unknown}}
      lookup:
        url: {redis_url}
        key: user
        prefix: "u:"
        fields: [{{name: clicks, default: -1}}, {{name: ctr, default: 0.5}}]
        found: known
        timeout_ms: 100
        retry_after_s: 0.5
      features:
        - {{op: standardize, column: age, mean: 40, std: 10}}
        - {{op: vocabulary, column: city, values: [paris, london], oov_buckets: 1}}
        - {{op: hash, column: user, buckets: 16}}
        - {{op: log1p, column: clicks}}
        - {{op: identity, column: ctr}}
        - {{op: identity, column: known}}
"""

SPEC = """\
version: 1
defaults:
  max_batch_size: 64
models:
{scale_models}  - name: feats
    format: python
    plugin:
{features}
  - name: scorer
    format: onnx
    path: scorer.onnx
  - name: pipeline
    format: ensemble
    steps:
      - {{model: feats, inputs: {{user: user, age: age, city: city}}, outputs: {{FEATURES: f}}}}
      - {{model: scorer, inputs: {{features: f}}, outputs: {{score: SCORE}}}}
  - name: cached
    format: python
    plugin: {{kind: result_cache, model: pipeline, max_entries: 100, ttl_s: 60}}
  - name: cached_redis
    format: python
    plugin: {{kind: result_cache, model: model_b, backend: redis, redis: {{url: {redis_url}, prefix: "rc:"}}}}
  - name: semantic
    format: python
    plugin: {{kind: semantic_cache, model: model_b, embedding: X, threshold: 0.999, max_entries: 8}}
  - name: router
    format: python
    plugin:
      kind: router
      routes: [{{model: model_a, weight: 3}}, {{model: model_b, weight: 1}}]
      shadow: {{model: broken, timeout_ms: 2000}}
  - name: sticky
    format: python
    plugin:
      kind: router
      routes: [{{model: model_a}}]
      canary: {{model: model_b, percent: 25}}
      shadow: {{model: model_a}}
      sticky_key: KEY
"""


@dataclass
class Env:
    triton: TritonServer
    redis: RedisServer
    spec: Path
    features: FeaturesPlugin


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("plugins")
    copy_scale_models(root)
    state = root / "state"
    with RedisServer() as redis_server, pytest.MonkeyPatch.context() as mp:
        mp.setenv("REPOFORGE_STATE_DIR", str(state))  # router weights shared by instances: not in the real /tmp
        spec = root / "spec.yaml"
        spec.write_text(
            SPEC.format(
                scale_models=SCALE_MODELS,
                features=FEATURES.format(redis_url=redis_server.url),
                redis_url=redis_server.url,
            )
        )
        features = next(m.plugin for m in load_spec(spec).spec.models if isinstance(m.plugin, FeaturesPlugin))
        save(
            mlp([output_dim(features), 8, 1], seed=5, input_name="features", output_name="score"), root / "scorer.onnx"
        )
        repo = build(spec, root / "repo", device="cpu").output
        with TritonServer(repo) as server:
            yield Env(server, redis_server, spec, features)


def _client(env: Env) -> http.InferenceServerClient:
    return http.InferenceServerClient(env.triton.http_url, concurrency=8, network_timeout=30)


def _inputs(**arrays: np.ndarray) -> list[http.InferInput]:
    out = []
    for name, a in arrays.items():
        t = http.InferInput(name, list(a.shape), "BYTES" if a.dtype == np.object_ else "FP32")
        t.set_data_from_numpy(a)
        out.append(t)
    return out


def _column(values: list) -> np.ndarray:
    if isinstance(values[0], (bytes, str)):
        return np.array([[v.encode() if isinstance(v, str) else v] for v in values], dtype=np.object_)
    return np.array([[v] for v in values], dtype=np.float32)


def _metrics(env: Env) -> dict[str, float]:
    return scrape(env.triton.metrics_url, "repoforge_")


def _metric(env: Env, name: str, **labels: str) -> float:
    key = name + "{" + ",".join(sorted(f'{k}="{v}"' for k, v in labels.items())) + "}"
    return _metrics(env).get(key, 0.0)


def _wait_for(pred, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def _feature_batch(users: list[str]) -> dict[str, np.ndarray]:
    n = len(users)
    ages = [float(20 + 3 * i) if i % 5 else float("nan") for i in range(n)]
    cities = [["paris", "london", "tokyo", ""][i % 4] for i in range(n)]
    return {"user": _column(users), "age": _column(ages), "city": _column(cities)}


# --------------------------------------------------------------------------------------------
def test_features_equal_the_in_process_pipeline_with_redis_lookups(env: Env) -> None:
    import redis

    lk = env.features.lookup
    assert lk is not None
    store_client = redis.Redis.from_url(env.redis.url)
    FeatureStore(lk, client=store_client).write(["alice", "bob"], np.array([[9.0, 0.25], [0.0, 0.75]]))
    assert 0 < store_client.ttl("u:alice") <= lk.ttl_s
    users = ["alice", "bob", "carol", "alice", "dave", "bob", "zed", "alice"]
    batch = _feature_batch(users)
    with _client(env) as client:
        got = client.infer("feats", _inputs(**batch)).as_numpy("FEATURES")
    reference = FeaturePipeline(env.features, lookup=OnlineLookup(lk, client=store_client)).transform(batch)
    np.testing.assert_array_equal(got, reference)
    # the looked-up columns: log1p(clicks), ctr, known (defaults -1 → log1p(0) = 0, 0.5, 0 for unknown users)
    expected = {"alice": [np.log1p(9.0), 0.25, 1.0], "bob": [0.0, 0.75, 1.0]}
    for u, row in zip(users, got[:, -3:], strict=True):
        np.testing.assert_allclose(row, expected.get(u, [0.0, 0.5, 0.0]), rtol=1e-6)
    ages = batch["age"][:, 0]
    np.testing.assert_allclose(
        got[:, 0], (np.where(np.isnan(ages), 35, ages) - 40) / 10, rtol=1e-6
    )  # fill, standardize
    store_client.close()


def test_redis_outage_degrades_to_defaults_without_failed_requests(env: Env) -> None:
    import redis

    lk = env.features.lookup
    assert lk is not None
    FeatureStore(lk, client=redis.Redis.from_url(env.redis.url)).write(["erin"], np.array([[4.0, 0.125]]))
    batch = _feature_batch(["erin", "frank"])
    with _client(env) as client:
        before = client.infer("feats", _inputs(**batch)).as_numpy("FEATURES")
        assert before[0, -1] == 1.0
        errors_before = _metric(env, "repoforge_feature_lookup_total", model="feats", result="error")
        env.redis.pause()
        try:
            started = time.monotonic()
            answers = [client.infer("feats", _inputs(**batch)).as_numpy("FEATURES") for _ in range(10)]
            elapsed = time.monotonic() - started
        finally:
            env.redis.resume()
        for a in answers:  # every request answered, with the declared defaults for the looked-up fields
            np.testing.assert_allclose(a[:, -3:], [[0.0, 0.5, 0.0], [0.0, 0.5, 0.0]])
            np.testing.assert_array_equal(a[:, :-3], before[:, :-3])
        assert elapsed < 5.0, f"10 requests during the outage took {elapsed:.1f} s"
        assert _metric(env, "repoforge_feature_lookup_total", model="feats", result="error") > errors_before
        # Redis is back: after retry_after_s the stored features return
        assert _wait_for(lambda: client.infer("feats", _inputs(**batch)).as_numpy("FEATURES")[0, -1] == 1.0, 10)


def test_result_cache_hit_returns_the_identical_answer(env: Env) -> None:
    batch = _feature_batch(["gina", "hank", "ivan"])
    with _client(env) as client:
        hits_before = _metric(env, "repoforge_cache_requests_total", model="cached", result="hit")
        first = client.infer("cached", _inputs(**batch)).as_numpy("SCORE")
        direct = client.infer("pipeline", _inputs(**batch)).as_numpy("SCORE")
        again = [client.infer("cached", _inputs(**batch)).as_numpy("SCORE") for _ in range(3)]
        other = client.infer("cached", _inputs(**_feature_batch(["gina", "hank", "jack"]))).as_numpy("SCORE")
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        key = _column(["k1", "k2"])
        r1 = client.infer("cached_redis", _inputs(KEY=key, X=x)).as_numpy("Y")
        r2 = client.infer("cached_redis", _inputs(KEY=key, X=x)).as_numpy("Y")
    np.testing.assert_array_equal(first, direct)
    for a in again:
        assert a.tobytes() == first.tobytes()
    np.testing.assert_array_equal(other[:2], first[:2])
    assert _metric(env, "repoforge_cache_requests_total", model="cached", result="hit") >= hits_before + 3
    assert _metric(env, "repoforge_cache_entries", model="cached") >= 2
    m = _metrics(env)
    assert any(k.startswith("repoforge_cache_latency_us_count") and 'model="cached"' in k for k in m)
    np.testing.assert_array_equal(r1, x * 2)
    assert r2.tobytes() == r1.tobytes()
    assert _metric(env, "repoforge_cache_requests_total", model="cached_redis", result="hit") >= 1
    import redis

    assert redis.Redis.from_url(env.redis.url).keys("rc:*")


def _route(
    client: http.InferenceServerClient, model: str, keys: list[str], x: np.ndarray, weights: list[float] | None = None
):
    arrays = {"KEY": _column(keys), "X": x}
    if weights is not None:
        arrays["ROUTE_WEIGHTS"] = np.array([weights] * len(keys), dtype=np.float32)
    res = client.infer(model, _inputs(**arrays))
    return res.as_numpy("ROUTE")[:, 0], res.as_numpy("Y")


def test_router_split_is_within_statistical_bounds_and_a_failing_shadow_changes_nothing(env: Env) -> None:
    rng = np.random.default_rng(1)
    n_req, rows = 40, 50
    xs = [rng.standard_normal((rows, 4)).astype(np.float32) for _ in range(n_req)]
    with _client(env) as client:
        errors_before = _metric(env, "repoforge_shadow_batches_total", model="router", shadow="broken", outcome="error")
        started = time.monotonic()
        pending = [client.async_infer("router", _inputs(KEY=_column([f"k{i}" for i in range(rows)]), X=x)) for x in xs]
        results = [p.get_result() for p in pending]  # raises if any request failed
        elapsed = time.monotonic() - started
    routes = np.concatenate([r.as_numpy("ROUTE")[:, 0] for r in results])
    for r, x in zip(results, xs, strict=True):  # every primary answer is the routed model's own: Y = X * (route + 1)
        np.testing.assert_array_equal(r.as_numpy("Y"), x * (r.as_numpy("ROUTE") + 1).astype(np.float32))
    n = len(routes)
    share_b = float((routes == 1).sum())
    sigma = (n * 0.25 * 0.75) ** 0.5
    assert abs(share_b - 0.25 * n) < 5 * sigma, (share_b, n)
    # the broken shadow sleeps 0.3 s per batch and fails: the primary did not wait for it
    assert elapsed < 0.3 * n_req / 2, elapsed
    assert _wait_for(
        lambda: (
            _metric(env, "repoforge_shadow_batches_total", model="router", shadow="broken", outcome="error")
            > errors_before
        )
    )
    assert _metric(env, "repoforge_router_rows_total", model="router", route="model_b") >= share_b


def test_router_weights_change_at_run_time(env: Env) -> None:
    x = np.ones((20, 4), dtype=np.float32)
    keys = [f"w{i}" for i in range(20)]
    with _client(env) as client:
        try:
            routes, y = _route(client, "router", keys, x, weights=[0, 1])
            assert routes.tolist() == [1] * 20 and (y == 2).all()
            assert _route(client, "router", keys, x)[0].tolist() == [1] * 20  # the new weights stay
            assert _metric(env, "repoforge_router_weight", model="router", route="model_b") == 1.0
            with pytest.raises(Exception, match="non-negative weights"):
                _route(client, "router", keys, x, weights=[-1, 1])
        finally:
            _route(client, "router", keys[:1], x[:1], weights=[3, 1])
        assert _metric(env, "repoforge_router_weight", model="router", route="model_b") == 0.25


def test_sticky_routes_canary_share_and_shadow_agreement(env: Env) -> None:
    users = [f"user{i}" for i in range(400)]
    x = np.ones((len(users), 4), dtype=np.float32)
    with _client(env) as client:
        agree0 = _metric(env, "repoforge_shadow_rows_total", model="sticky", shadow="model_a", outcome="agree")
        disagree0 = _metric(env, "repoforge_shadow_rows_total", model="sticky", shadow="model_a", outcome="disagree")
        first = np.concatenate(
            [_route(client, "sticky", users[i : i + 50], x[i : i + 50])[0] for i in range(0, 400, 50)]
        )
        shuffled = list(reversed(users))
        second = np.concatenate(
            [
                _route(client, "sticky", shuffled[i : i + 64], x[:64][: len(shuffled[i : i + 64])])[0]
                for i in range(0, 400, 64)
            ]
        )
    assert second.tolist() == list(reversed(first.tolist()))  # same user, same route
    canary = int((first == 1).sum())
    sigma = (400 * 0.25 * 0.75) ** 0.5
    assert abs(canary - 100) < 5 * sigma, canary
    # the shadow (model_a) agrees with rows that model_a answered and disagrees with model_b's (Y doubled)
    total = 2 * 400

    def settled() -> bool:
        a = _metric(env, "repoforge_shadow_rows_total", model="sticky", shadow="model_a", outcome="agree") - agree0
        d = (
            _metric(env, "repoforge_shadow_rows_total", model="sticky", shadow="model_a", outcome="disagree")
            - disagree0
        )
        return a + d >= total

    assert _wait_for(settled)
    assert (
        _metric(env, "repoforge_shadow_rows_total", model="sticky", shadow="model_a", outcome="disagree") - disagree0
        == 2 * canary
    )


def test_semantic_cache_reuses_the_answer_of_a_similar_row(env: Env) -> None:
    x = np.array([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]], dtype=np.float32)
    with _client(env) as client:
        first = client.infer("semantic", _inputs(KEY=_column(["a", "b"]), X=x)).as_numpy("Y")
        near = x * 1.5 + np.float32(1e-3)  # same direction (cosine ~1), different values
        far = np.array([[1.0, -1.0, 1.0, -1.0]], dtype=np.float32)
        got = client.infer("semantic", _inputs(KEY=_column(["c", "d", "e"]), X=np.concatenate([near, far]))).as_numpy(
            "Y"
        )
    np.testing.assert_array_equal(first, x * 2)
    np.testing.assert_array_equal(got[:2], first)  # the cached answers, not model_b's answer for `near`
    np.testing.assert_array_equal(got[2:], far * 2)
    assert _metric(env, "repoforge_semantic_cache_rows_total", model="semantic", result="hit") == 2
    assert _metric(env, "repoforge_semantic_cache_rows_total", model="semantic", result="miss") == 3


def test_redis_result_cache_answers_hot_keys_in_process_and_shares_the_rest(env: Env) -> None:
    """The near cache skips the Redis round trip for hot keys; Redis still shares entries between instances."""
    import redis

    from repoforge.runtime.plugins import RedisCache
    from repoforge.spec.plugins import CacheRedis

    cfg = CacheRedis(url=env.redis.url, prefix="near-test:")
    near, plain = RedisCache(cfg, 60, near_entries=8), RedisCache(cfg, 60)
    value = {"Y": np.arange(3, dtype=np.float32)}
    near.put_many([(b"k", value)])
    shared = plain.get_many([b"k"])[0]
    assert shared is not None and shared["Y"].tolist() == [0, 1, 2]
    redis.Redis.from_url(env.redis.url).delete(b"near-test:" + b"k".hex().encode())
    assert plain.get_many([b"k"]) == [None]
    kept = near.get_many([b"k"])[0]
    assert kept is not None and kept["Y"].tolist() == [0, 1, 2]
    plain.put_many([(b"j", value)])  # written by another instance: fetched from Redis, then kept near
    got = near.get_many([b"j", b"absent"])
    assert got[0] is not None and got[1] is None and near.near is not None and near.near.get(b"j") is not None


def test_batch_scores_an_ensemble_on_the_features_plugin_and_a_router_without_its_optional_input(
    env: Env, tmp_path: Path
) -> None:
    """issue 23.2 and 23.3: string columns feed the features plugin's BYTES inputs through an ensemble, and the
    router's optional ROUTE_WEIGHTS is left out of the requests unless --map names a column for it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from repoforge.batch import batch

    users = [f"user{i}" for i in range(40)]
    batch_cols = _feature_batch(users)
    data = tmp_path / "rows.parquet"
    pq.write_table(
        pa.table(
            {
                "user": users,
                "age": [float(v[0]) for v in batch_cols["age"]],
                "city": [v[0] for v in _feature_batch(users)["city"].tolist()],
            }
        ),
        data,
    )
    url = f"grpc://{env.triton.grpc_url}"
    result = batch(url, "pipeline", data=data, output=tmp_path / "pipeline", show_progress=False)
    assert (result.rows_scored, result.rows_errored) == (40, 0)
    got = pq.read_table(tmp_path / "pipeline").sort_by("row").column("SCORE").to_pylist()
    client = _client(env)
    want = client.infer("pipeline", _inputs(**_feature_batch(users))).as_numpy("SCORE")
    np.testing.assert_allclose(np.array(got, dtype=np.float32).reshape(want.shape), want, rtol=1e-5)

    x = np.arange(40 * 4, dtype=np.float32).reshape(40, 4)
    rows = tmp_path / "router.parquet"
    pq.write_table(pa.table({"KEY": users, "X": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 4)}), rows)
    routed = batch(url, "router", data=rows, output=tmp_path / "router", show_progress=False)
    assert (routed.rows_scored, routed.rows_errored) == (40, 0)
    y = np.array(pq.read_table(tmp_path / "router").sort_by("row").column("Y").to_pylist(), dtype=np.float32)
    assert np.all((y == x) | (y == 2 * x))  # model_a (x1) or model_b (x2), never a failed weights check
