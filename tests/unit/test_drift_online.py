"""Drift while serving: the online monitor's windows agree with the offline PSI, detect a shift within one
window, evict old rows, and the build checks and ships a plugin's `drift.reference`."""

from __future__ import annotations

import numpy as np
import pytest

from repoforge.drift.online import DriftMonitor, InputInfo, match_features
from repoforge.drift.profile import profile_categorical, profile_numeric
from repoforge.drift.stats import categorical_counts, psi

W = 2000


def _profile(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    cats = np.empty(20000, dtype=object)
    cats[:] = rng.choice(["de", "fr", "us"], 20000, p=[0.5, 0.3, 0.2]).tolist()
    return {
        "features": {
            "age": profile_numeric(rng.normal(40, 10, 20000)),
            "X[0]": profile_numeric(rng.normal(0, 1, 20000)),
            "X[1]": profile_numeric(rng.uniform(0, 1, 20000)),
            "country": profile_categorical(cats),
        }
    }


INPUTS = [InputInfo("age", "FP32", (1,)), InputInfo("X", "FP32", (2,)), InputInfo("country", "BYTES", (1,))]


def _batch(rng: np.random.Generator, n: int, age_shift: float = 0.0, p=(0.5, 0.3, 0.2)) -> dict[str, np.ndarray]:
    c = np.array([[v.encode()] for v in rng.choice(["de", "fr", "us"], n, p=list(p))], dtype=object)
    return {
        "age": (rng.normal(40, 10, n) + age_shift).astype(np.float32).reshape(n, 1),
        "X": np.stack([rng.normal(0, 1, n), rng.uniform(0, 1, n)], axis=1).astype(np.float32),
        "country": c,
    }


class Gauges:
    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def set(self, name: str, description: str, value: float, **labels: str) -> None:
        self.values[labels["feature"]] = value


def _monitor(metrics: Gauges | None = None) -> DriftMonitor:
    prof = _profile()
    sources, problems, uncovered = match_features(prof["features"], INPUTS)
    assert problems == [] and uncovered == []
    return DriftMonitor(prof, sources, W, model="m", metrics=metrics, flush_rows=256)


def test_online_psi_equals_offline_psi_on_the_same_rows() -> None:
    mon, rng = _monitor(), np.random.default_rng(3)
    rows = [_batch(rng, n) for n in (1, 7, 64, 500, 1, 64)]
    for b in rows:
        mon.observe(b)
    got = mon.psi()
    allr = {k: np.concatenate([b[k] for b in rows]) for k in rows[0]}
    feats = _profile()["features"]
    want = {
        "age": psi(feats["age"], allr["age"][:, 0]),
        "X[0]": psi(feats["X[0]"], allr["X"][:, 0]),
        "X[1]": psi(feats["X[1]"], allr["X"][:, 1]),
        "country": psi(feats["country"], [v.decode() for v in allr["country"][:, 0]]),
    }
    for k, v in want.items():
        assert abs(got[k] - v) < 1e-9, (k, got[k], v)


def test_in_distribution_stays_low_and_a_shift_crosses_0_2_within_one_window() -> None:
    g = Gauges()
    mon, rng = _monitor(g), np.random.default_rng(5)
    for _ in range(W // 64 + 1):
        mon.observe(_batch(rng, 64))
    mon.flush()
    assert g.values and all(v < 0.1 for v in g.values.values()), g.values
    for _ in range(W // 64 + 1):  # one window of shifted age and country
        mon.observe(_batch(rng, 64, age_shift=8.0, p=(0.2, 0.3, 0.5)))
    got = mon.psi()
    mon.export()
    assert got["age"] > 0.2 and got["country"] > 0.2, got
    assert got["X[0]"] < 0.1 and got["X[1]"] < 0.1, got
    assert g.values["age"] == got["age"]


def test_window_evicts_old_rows_and_counts_stay_exact() -> None:
    mon, rng = _monitor(), np.random.default_rng(7)
    for _ in range(W // 64 + 2):
        mon.observe(_batch(rng, 64, age_shift=20.0))
    assert mon.psi()["age"] > 1.0
    last = []
    for _ in range(W // 50 + 3):  # odd batch sizes wrap the ring at every position
        b = _batch(rng, 50)
        last.append(b["age"][:, 0])
        mon.observe(b)
    mon.flush()
    w = mon.windows["age"]
    assert w.rows == W and int(w.counts.sum()) == W
    recent = np.concatenate(last)[-W:]
    np.testing.assert_array_equal(w.counts, np.bincount(w.bin_of(recent), minlength=w.bins))
    assert mon.psi()["age"] < 0.1


def test_no_psi_exported_before_enough_rows_and_bad_input_never_raises() -> None:
    g = Gauges()
    mon, rng = _monitor(g), np.random.default_rng(9)
    for _ in range(10):
        mon.observe(_batch(rng, 64))
    mon.flush()
    assert g.values == {}  # 640 rows < min(window, 1000)
    mon.observe({"age": np.array([["not a number"]], dtype=object)})  # must not raise
    mon.flush()
    assert not mon.enabled  # logged once, then off: requests go on


def test_categorical_missing_other_and_vectorised_counts() -> None:
    vals = np.empty(7, dtype=object)
    vals[:] = ["de", None, "xx", "fr", 3, "de", "3"]
    counts, other, missing = categorical_counts(["de", "fr", "3"], vals)
    assert counts.tolist() == [2, 1, 2] and other == 1 and missing == 1


def test_match_features_names_missing_and_mistyped_features() -> None:
    feats = _profile()["features"]
    _, problems, _ = match_features(feats, [InputInfo("age", "BYTES", (1,)), InputInfo("X", "FP32", (2,))])
    assert any("country" in p and "not among" in p for p in problems), problems
    assert any("'age' is numeric" in p for p in problems), problems


@pytest.fixture
def ref(tmp_path):
    from repoforge.drift.profile import make_profile, write_profile

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ref.npz", age=rng.normal(40, 10, 3000), city=np.array(["a", "b"] * 1500))
    return write_profile(make_profile(tmp_path / "ref.npz", "feats"), tmp_path / "ref.json")


SPEC = """version: 1
models:
  - name: feats
    format: python
    plugin:
      kind: features
      columns: [{{name: {col}, dtype: FP32}}, {{name: city, dtype: BYTES}}]
      features: [{{op: identity, column: {col}}}]
      drift: {{reference: {ref}}}
"""


def test_build_ships_the_profile_and_locates_bad_references(tmp_path, ref) -> None:
    from repoforge.build import build
    from repoforge.contract import DRIFT_REFERENCE
    from repoforge.errors import SpecError

    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(col="age", ref="ref.json"))
    out = build(spec, tmp_path / "repo", device="cpu").output
    assert (out / "feats" / DRIFT_REFERENCE).read_bytes() == ref.read_bytes()
    for col, reference, words in [("age", "nope.json", "not found"), ("size", "ref.json", "age")]:
        spec.write_text(SPEC.format(col=col, ref=reference))
        with pytest.raises(SpecError) as exc:
            build(spec, tmp_path / "repo2", device="cpu")
        text = str(exc.value)
        assert "spec.yaml:9" in text and words in text, text
        assert not (tmp_path / "repo2").exists()


def test_an_empty_string_counts_the_same_online_and_offline() -> None:
    # not a category: missing (as the online monitor counts it, like the plugins' `fill`); a category: itself
    counts, other, missing = categorical_counts(["a", "b"], np.array(["a", "", "b", None, "z"], dtype=object))
    assert counts.tolist() == [1, 1] and other == 1 and missing == 2
    counts, other, missing = categorical_counts(["a", ""], np.array(["a", "", "b"], dtype=object))
    assert counts.tolist() == [1, 1] and other == 1 and missing == 0
