"""The features library without servers: every op equals a plain per-row reference, output dims are
static, hashing is stable, lookups degrade to defaults; plus plugin spec validation and planning."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest

from repoforge.errors import SpecError
from repoforge.features import (
    FeatureConfigError,
    FeaturePipeline,
    OnlineLookup,
    stable_hash,
)
from repoforge.features.hashing import fnv1a64, utf8_length
from repoforge.features.online import FeatureStore, encode_values
from repoforge.plan import make_plan
from repoforge.runtime.plugins import (
    MemoryCache,
    SemanticIndex,
    cache_key,
    pack_arrays,
    route_rows,
    sticky_draws,
    unpack_arrays,
)
from repoforge.spec import load_spec
from repoforge.spec.plugins import Lookup, RouterPlugin, output_dim, parse_plugin
from repoforge.triton.config import build_config

ROOT = Path(__file__).resolve().parents[2]
M64 = (1 << 64) - 1


# ------------------------------------------------------------------ plain-Python references
def ref_fnv(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def ref_fmix(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & M64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & M64
    return h ^ (h >> 33)


def ref_hash(v: object) -> int:
    text = v if isinstance(v, bytes) else str(v).encode("utf-8")
    return ref_fmix(ref_fnv(text))


def ref_combine(hs: list[int]) -> int:
    h = 0
    for x in hs:
        h = ref_fmix(((h * 0x9E3779B97F4A7C15) & M64) ^ x)
    return h


def one_hot_ref(i: int, n: int) -> list[float]:
    return [1.0 if k == i else 0.0 for k in range(n)]


def reference_row(row: dict[str, object]) -> list[float]:
    """The FULL config below, computed row by row with the standard library."""
    age = row["age"] if not (isinstance(row["age"], float) and math.isnan(row["age"])) else 35.0
    city = row["city"] or b"unknown"
    ts = int(row["ts"])
    d = dt.datetime.fromtimestamp(ts, dt.timezone.utc)
    vocab = [b"paris", b"london", b"berlin"]
    city_idx = vocab.index(city) if city in vocab else 3 + ref_hash(city) % 2
    bucket = sum(1 for b in [18.0, 30.0, 50.0] if age >= b)
    v = row["v"]
    out: list[float] = []
    out += [(age - 40.0) / 12.0]
    out += [1.0 if isinstance(row["age"], float) and math.isnan(row["age"]) else 0.0]
    out += one_hot_ref(bucket, 4)
    out += [float(bucket)]
    out += one_hot_ref(city_idx, 5)
    out += [float(ref_hash(row["user"]) % 7)]
    out += one_hot_ref(ref_hash(row["user"]) % 3, 3)
    out += [d.hour, d.weekday(), d.month, d.year, d.day, d.timetuple().tm_yday, 1.0 if d.weekday() >= 5 else 0.0]
    out += [
        math.sin(2 * math.pi * d.hour / 24),
        math.cos(2 * math.pi * d.hour / 24),
        math.sin(2 * math.pi * (d.month - 1) / 12),
        math.cos(2 * math.pi * (d.month - 1) / 12),
    ]
    out += [float(len(city.decode("utf-8")))]
    out += [float(ref_combine([ref_hash(city), ref_hash(row["user"])]) % 5)]
    out += [min(max((x - 0.0) / 10.0, 0.0), 1.0) for x in v]
    out += [math.log1p(max(x, 0.0)) for x in v]
    out += [min(max(x, 1.0), 6.0) for x in v]
    out += list(v)
    return out


FULL = {
    "kind": "features",
    "columns": [
        {"name": "age", "dtype": "FP32", "fill": 35},
        {"name": "city", "dtype": "BYTES", "fill": "unknown"},
        {"name": "user", "dtype": "INT64"},
        {"name": "ts", "dtype": "INT64"},
        {"name": "v", "dtype": "FP32", "width": 3},
    ],
    "features": [
        {"op": "standardize", "column": "age", "mean": 40, "std": 12},
        {"op": "is_missing", "column": "age"},
        {"op": "bucketize", "column": "age", "boundaries": [18, 30, 50]},
        {"op": "bucketize", "column": "age", "boundaries": [18, 30, 50], "output": "index"},
        {"op": "vocabulary", "column": "city", "values": ["paris", "london", "berlin"], "oov_buckets": 2},
        {"op": "hash", "column": "user", "buckets": 7},
        {"op": "hash", "column": "user", "buckets": 3, "output": "one_hot"},
        {
            "op": "datetime",
            "column": "ts",
            "parts": ["hour", "weekday", "month", "year", "day", "dayofyear", "is_weekend"],
        },
        {"op": "datetime", "column": "ts", "parts": ["hour", "month"], "cyclical": True},
        {"op": "length", "column": "city"},
        {"op": "cross", "columns": ["city", "user"], "buckets": 5},
        {"op": "min_max", "column": "v", "min": 0, "max": 10, "clip": True},
        {"op": "log1p", "column": "v"},
        {"op": "clip", "column": "v", "min": 1, "max": 6},
        {"op": "identity", "column": "v"},
    ],
}


def random_rows(n: int, seed: int = 0) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    cities = [b"paris", b"london", b"berlin", b"z\xc3\xbcrich", b"", b"new york", b"\xe6\x9d\xb1\xe4\xba\xac"]
    rows = []
    for _ in range(n):
        age = float(np.float32(rng.uniform(0, 90))) if rng.random() > 0.2 else float("nan")
        rows.append(
            {
                "age": age,
                "city": cities[rng.integers(len(cities))],
                "user": int(rng.integers(-5, 10**12)),
                "ts": int(rng.integers(-(10**9), 4 * 10**9)),
                "v": [float(np.float32(x)) for x in rng.uniform(-2, 12, 3)],
            }
        )
    return rows


def as_columns(rows: list[dict[str, object]]) -> dict[str, np.ndarray]:
    return {
        "age": np.array([[r["age"]] for r in rows], dtype=np.float32),
        "city": np.array([[r["city"]] for r in rows], dtype=np.object_),
        "user": np.array([[r["user"]] for r in rows], dtype=np.int64),
        "ts": np.array([[r["ts"]] for r in rows], dtype=np.int64),
        "v": np.array([r["v"] for r in rows], dtype=np.float32),
    }


# ------------------------------------------------------------------ the library
def test_every_op_equals_the_per_row_reference() -> None:
    pipe = FeaturePipeline.from_config(FULL)
    rows = random_rows(300)
    got = pipe.transform(as_columns(rows))
    expected = np.array([reference_row(r) for r in rows], dtype=np.float64)
    assert got.dtype == np.float32 and got.shape == (300, pipe.output_dim) == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_output_dim_is_static_and_matches_the_data() -> None:
    cfg = parse_plugin(FULL)
    assert output_dim(cfg) == FeaturePipeline(cfg).output_dim == 1 + 1 + 4 + 1 + 5 + 1 + 3 + 7 + 4 + 1 + 1 + 3 * 4
    assert FeaturePipeline(cfg).transform(as_columns(random_rows(1))).shape == (1, output_dim(cfg))
    assert FeaturePipeline(cfg).transform(as_columns(random_rows(0) or random_rows(1)[:0])).shape == (
        0,
        output_dim(cfg),
    )


def test_hash_is_stable_fnv1a_and_type_independent() -> None:
    assert int(fnv1a64(np.array([b""], dtype=object))[0]) == 0xCBF29CE484222325  # FNV-1a 64 test vectors
    assert int(fnv1a64(np.array([b"a"], dtype=object))[0]) == 0xAF63DC4C8601EC8C
    assert int(fnv1a64(np.array([b"foobar"], dtype=object))[0]) == 0x85944171F73967E8
    as_obj = stable_hash(np.array([b"42", "z\u00fcrich".encode()], dtype=object))
    as_str = stable_hash(np.array(["42", "z\u00fcrich"]))
    assert as_obj.tolist() == as_str.tolist()
    assert stable_hash(np.array([42]))[0] == as_obj[0] == ref_hash(b"42")
    with pytest.raises(TypeError):
        stable_hash(np.array([1.5]))
    assert utf8_length(np.array(["", "abc", "z\u00fcrich", "\u6771\u4eac"])).tolist() == [0, 3, 6, 2]


def test_few_rows_and_many_rows_hash_alike() -> None:
    """Small batches hash in Python, larger ones in numpy over byte positions: both give FNV-1a."""
    from repoforge.features.hashing import PY_LOOP_MAX_ROWS

    rng = np.random.default_rng(3)
    values = np.array(["".join(chr(int(c)) for c in rng.integers(1, 3000, rng.integers(0, 90))) for _ in range(3 * PY_LOOP_MAX_ROWS)]
                      + ["", "a\x00b", "x" * 300], dtype=object)  # fmt: skip
    together = fnv1a64(values)
    one_by_one = np.concatenate([fnv1a64(values[i : i + 1]) for i in range(len(values))])
    assert together.tolist() == one_by_one.tolist()
    assert together.tolist() == [ref_fnv(v.encode()) for v in values]


def test_text_inputs_may_be_python_strings_as_from_a_torchserve_handler() -> None:
    pipe = FeaturePipeline.from_config(FULL)
    rows = random_rows(20, seed=4)
    cols = as_columns(rows)
    as_text = dict(cols, city=np.array([r["city"].decode() for r in rows]))  # numpy str, e.g. from JSON
    np.testing.assert_array_equal(pipe.transform(as_text), pipe.transform(cols))


def test_inconsistent_configs_are_refused() -> None:
    bad = {**FULL, "features": [{"op": "hash", "column": "age", "buckets": 3}, {"op": "length", "column": "nope"}]}
    with pytest.raises(FeatureConfigError, match="hash needs a BYTES or integer column.*nope"):
        FeaturePipeline.from_config(bad)


# ------------------------------------------------------------------ online lookups (fake clients)
class DictRedis:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.calls = 0

    def mget(self, keys: list[bytes]) -> list[bytes | None]:
        self.calls += 1
        return [self.data.get(k) for k in keys]


class DownRedis:
    calls = 0

    def mget(self, keys: list[bytes]) -> list[bytes | None]:
        DownRedis.calls += 1
        raise TimeoutError("timed out")


LOOKUP = {
    "key": "user",
    "prefix": "u:",
    "fields": [{"name": "clicks", "default": -1}, {"name": "ctr", "default": 0.5}],
    "found": "known",
    "retry_after_s": 60,
}


def test_lookup_is_one_mget_of_distinct_keys_and_defaults_on_a_miss() -> None:
    r = DictRedis()
    r.data[b"u:7"] = encode_values(np.array([[3.0, 0.25]]))[0]
    r.data[b"u:9"] = b"garbage"  # malformed: treated as a miss
    lk = OnlineLookup(Lookup(**LOOKUP), client=r)
    values, found = lk.fetch(np.array([7, 8, 7, 9]))
    assert r.calls == 1
    np.testing.assert_array_equal(values, [[3, 0.25], [-1, 0.5], [3, 0.25], [-1, 0.5]])
    assert found.tolist() == [True, False, True, False]
    assert (lk.stats.hits, lk.stats.misses) == (2, 2)


def test_lookup_outage_gives_defaults_and_backs_off() -> None:
    lk = OnlineLookup(Lookup(**LOOKUP), client=DownRedis())
    DownRedis.calls = 0
    for _ in range(3):
        values, found = lk.fetch(np.array([b"a", b"b"], dtype=object))
        np.testing.assert_array_equal(values, [[-1, 0.5], [-1, 0.5]])
        assert not found.any()
    assert DownRedis.calls == 1  # then skipped for retry_after_s
    assert (lk.stats.errors, lk.stats.skipped) == (1, 2)


def test_pipeline_uses_looked_up_fields_as_columns() -> None:
    r = DictRedis()
    r.data[b"u:1"] = encode_values(np.array([[9.0, 0.1]]))[0]
    cfg = {
        "kind": "features",
        "columns": [{"name": "user", "dtype": "INT64"}],
        "lookup": LOOKUP,
        "features": [
            {"op": "log1p", "column": "clicks"},
            {"op": "identity", "column": "ctr"},
            {"op": "identity", "column": "known"},
        ],
    }
    pipe = FeaturePipeline.from_config(cfg, lookup=OnlineLookup(Lookup(**LOOKUP), client=r))
    got = pipe.transform({"user": np.array([[1], [2]])})
    np.testing.assert_allclose(got, [[math.log1p(9.0), 0.1, 1.0], [0.0, 0.5, 0.0]], rtol=1e-6)


class PipeRecorder:
    def __init__(self) -> None:
        self.sets: list[tuple[bytes, bytes, int | None]] = []

    def pipeline(self, transaction: bool = True) -> PipeRecorder:
        return self

    def set(self, k: bytes, v: bytes, ex: int | None = None) -> None:
        self.sets.append((k, v, ex))

    def execute(self) -> None:
        pass


def test_feature_store_writes_with_ttl() -> None:
    rec = PipeRecorder()
    FeatureStore(Lookup(**LOOKUP, ttl_s=120), client=rec).write(["a", "b"], np.array([[1, 2], [3, 4]]))
    assert [(k, np.frombuffer(v, "<f4").tolist(), ex) for k, v, ex in rec.sets] == [
        (b"u:a", [1, 2], 120),
        (b"u:b", [3, 4], 120),
    ]


# ------------------------------------------------------------------ runtime helpers (no Triton needed)
def test_cache_entries_round_trip_exactly() -> None:
    arrays = {
        "Y": np.arange(6, dtype=np.float32).reshape(2, 3),
        "T": np.array([[b"a\x00"], [b""]], dtype=object),
        "I": np.array([1, -2], dtype=np.int64),
    }
    back = unpack_arrays(pack_arrays(arrays))
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape and back[k].tolist() == v.tolist()
    a = {"X": np.ones((2, 2), np.float32)}
    assert cache_key("m", -1, a) == cache_key("m", -1, {"X": np.ones((2, 2), np.float32)})
    assert cache_key("m", -1, a) != cache_key("m", -1, {"X": np.ones((1, 4), np.float32)})
    assert cache_key("m", -1, a) != cache_key("m", 2, a)


def test_memory_cache_is_a_bounded_lru_with_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    c = MemoryCache(2, ttl_s=10)
    for k in (b"a", b"b"):
        c.put(k, {"Y": np.zeros(1)})
    assert c.get(b"a") is not None  # a is now the most recent
    c.put(b"c", {"Y": np.zeros(1)})
    assert c.get(b"b") is None and c.get(b"a") is not None and len(c) == 2
    from repoforge.runtime.plugins import result_cache as plugins

    now = plugins.time.monotonic()
    monkeypatch.setattr(plugins.time, "monotonic", lambda: now + 11)
    assert c.get(b"a") is None


def test_routes_follow_the_weights_and_sticky_keys() -> None:
    u = np.random.default_rng(0).random(100_000)
    counts = np.bincount(route_rows(u, np.array([3.0, 1.0, 0.0])), minlength=3) / len(u)
    np.testing.assert_allclose(counts, [0.75, 0.25, 0.0], atol=0.01)
    assert route_rows(u[:10], np.array([0.0, 0.0, 2.0])).tolist() == [2] * 10
    keys = np.array([[b"u%d" % (i % 50)] for i in range(1000)], dtype=object)
    r = route_rows(sticky_draws(keys, 1000), np.array([0.5, 0.5]))
    assert all(len(set(r[i::50])) == 1 for i in range(50))  # the same key always takes the same route
    cfg = RouterPlugin(
        kind="router",
        routes=[{"model": "a", "weight": 3}, {"model": "b", "weight": 1}],
        canary={"model": "c", "percent": 20},
    )
    np.testing.assert_allclose(cfg.initial_weights(), [0.6, 0.2, 0.2])


def test_semantic_index_finds_the_nearest_live_entry() -> None:
    idx = SemanticIndex(3, max_entries=2, ttl_s=None)
    assert idx.search(SemanticIndex.normalize(np.ones((1, 3))))[0].tolist() == [-1]
    idx.add(
        SemanticIndex.normalize(np.eye(3)), {"Y": np.array([[10], [20], [30]])}
    )  # 3 rows, room for 2: the last 2 stay
    best, sim = idx.search(SemanticIndex.normalize(np.array([[0, 0.1, 1.0], [1.0, 0, 0]])))
    assert idx.values["Y"][best].ravel().tolist()[0] == 30 and sim[0] > 0.99
    assert sim[1] == 0.0 and len(idx) == 2


# ------------------------------------------------------------------ spec + plan
BASE = """\
version: 1
models:
  - name: a
    format: python
    path: a.py
    max_batch_size: 8
    inputs: [{name: KEY, dtype: BYTES, dims: [1]}, {name: X, dtype: FP32, dims: [4]}]
    outputs: [{name: Y, dtype: FP32, dims: [4]}]
  - name: b
    format: python
    path: a.py
    max_batch_size: 4
    inputs: [{name: KEY, dtype: BYTES, dims: [1]}, {name: X, dtype: FP32, dims: [4]}]
    outputs: [{name: Y, dtype: FP32, dims: [4]}]
"""


def plan_of(tmp_path: Path, extra: str):
    (tmp_path / "a.py").write_text("")
    spec = tmp_path / "spec.yaml"
    spec.write_text(BASE + extra)
    return make_plan(load_spec(spec), "cpu")


def problems_of(tmp_path: Path, extra: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        plan_of(tmp_path, extra)
    return [f"{p.location.line}:{p.location.column} {p.field}: {p.message}" for p in info.value.problems]


def test_plan_derives_plugin_io(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        """\
  - name: feats
    format: python
    plugin:
      kind: features
      columns: [{name: age}, {name: city, dtype: string}, {name: v, width: 3}]
      features: [{op: standardize, column: age}, {op: hash, column: city, buckets: 5, output: one_hot}, {op: identity, column: v}]
  - name: cached
    format: python
    plugin: {kind: result_cache, model: router}
  - name: router
    format: python
    plugin:
      kind: router
      routes: [{model: a}]
      canary: {model: b, percent: 10}
      sticky_key: KEY
""",
    )
    feats, cached, router = plan.model("feats"), plan.model("cached"), plan.model("router")
    assert [(t.name, t.dtype, t.dims) for t in feats.inputs] == [
        ("age", "FP32", [1]),
        ("city", "BYTES", [1]),
        ("v", "FP32", [3]),
    ]
    assert [(t.name, t.dtype, t.dims) for t in feats.outputs] == [("FEATURES", "FP32", [9])]
    assert feats.max_batch_size == 64 and feats.serving.runner == "features"
    # the plugin config is the plan's typed field; the built config hands it to the runner as a parameter
    assert "repoforge_plugin" not in (feats.spec.parameters or {}) and feats.spec.plugin is not None
    assert "repoforge_plugin" in build_config(feats, "cpu").parameters
    assert [t.name for t in router.inputs] == ["KEY", "X", "ROUTE_WEIGHTS"] and router.inputs[-1].optional
    assert [(t.name, t.dims) for t in router.outputs] == [("Y", [4]), ("ROUTE", [1])]
    assert router.max_batch_size == 4  # the smallest of the routed models
    assert [t.name for t in cached.inputs] == ["KEY", "X", "ROUTE_WEIGHTS"] and cached.max_batch_size == 4


def test_plugin_mistakes_name_their_line(tmp_path: Path) -> None:
    got = problems_of(
        tmp_path,
        """\
  - name: router
    format: python
    plugin:
      kind: router
      routes:
        - {model: a}
        - {model: nosuch}
      sticky_key: KEY
""",
    )
    assert got == [
        "21:19 models[2].plugin.routes[1].model: router names model 'nosuch', which is not in the spec; models are: a, b"
    ]
    got = problems_of(
        tmp_path,
        """\
  - name: feats
    format: python
    path: a.py
    plugin:
      kind: features
      columns: [{name: age}]
      features:
        - {op: length, column: age}
        - {op: standardize, column: agee}
""",
    )
    assert got == [
        "17:11 models[2].path: a features plugin has no model file; remove `path` (the plugin is its code)",
        "22:32 models[2].plugin.features[0].column: length needs a BYTES column; 'age' is FP32",
        "23:37 models[2].plugin.features[1].column: standardize names column 'agee', which is not a column; columns are age",
    ]
    got = problems_of(
        tmp_path,
        """\
  - name: feats
    format: python
    plugin:
      kind: features
      columns: [{name: age, dtpe: FP32}]
      features: [{op: log1p, column: age}]
""",
    )
    assert got == ["19:29 models[2].plugin.columns[0].dtpe: unknown field 'dtpe'"]
    got = problems_of(tmp_path, "  - name: k\n    format: python\n    plugin: {kind: cache, model: a}\n")
    assert got == ["17:13 models[2].plugin: `kind` must be one of features, result_cache, semantic_cache, router"]


def test_semantic_cache_embedding_must_be_a_float_input(tmp_path: Path) -> None:
    got = problems_of(
        tmp_path, "  - name: s\n    format: python\n    plugin: {kind: semantic_cache, model: a, embedding: KEY}\n"
    )
    assert got == [
        "17:57 models[2].plugin.embedding: embedding 'KEY' must be a float vector of fixed size (dims [d]), not BYTES [1]"
    ]


def test_router_targets_must_be_interchangeable(tmp_path: Path) -> None:
    got = problems_of(
        tmp_path,
        """\
  - name: feats
    format: python
    plugin: {kind: features, columns: [{name: X}], features: [{op: identity, column: X}]}
  - name: router
    format: python
    plugin: {kind: router, routes: [{model: a}], shadow: {model: feats}}
""",
    )
    assert len(got) == 2 and all(
        g.startswith("20:66 ") and "models[3].plugin.shadow.model: model 'feats' has" in g for g in got
    )


def test_example_spec_builds(tmp_path: Path) -> None:
    plan = make_plan(load_spec(ROOT / "examples" / "plugins" / "spec.yaml"), "cpu")
    kinds = {m.name: m.spec.plugin.kind for m in plan.models if m.spec.plugin is not None}
    assert set(kinds.values()) == {"features", "result_cache", "router"}


def test_example_models_regenerate_byte_for_byte(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    source = ROOT / "examples" / "plugins"
    copy = tmp_path / "plugins"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("models", "models.sha256", "__pycache__"))
    subprocess.run([sys.executable, str(copy / "make_models.py")], cwd=tmp_path, check=True, capture_output=True)
    assert (copy / "models.sha256").read_text() == (source / "models.sha256").read_text()
    for onnx_file in (source / "models").glob("*.onnx"):
        assert (copy / "models" / onnx_file.name).read_bytes() == onnx_file.read_bytes()
