"""The semantic cache's vector index (usearch HNSW, inner product on unit vectors) without servers:
nearest-neighbour answers equal an exact numpy cosine scan, the size stays bounded with the oldest
entries evicted, entries expire after the TTL, and the threshold is compared with a true cosine."""

from __future__ import annotations

import numpy as np
import pytest

from repoforge.runtime.plugins import SemanticIndex
from repoforge.runtime.vector_index import VectorIndex, normalize


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    return normalize(rng.standard_normal((n, dim)))


def test_it_is_a_usearch_inner_product_index() -> None:
    from usearch.index import Index, MetricKind

    idx = VectorIndex(8, 16)
    assert isinstance(idx._index, Index)
    assert idx._index.metric_kind == MetricKind.IP


def test_empty_index_answers_nothing() -> None:
    idx = VectorIndex(3, 4)
    slots, sims = idx.search(np.ones((2, 3)))
    assert slots.tolist() == [-1, -1] and np.isneginf(sims).all()
    assert len(idx) == 0
    assert idx.search(np.zeros((0, 3)))[0].shape == (0,)


@pytest.mark.parametrize("exact_below", [0, 1024], ids=["hnsw", "brute-force"])
def test_nearest_neighbour_and_similarity_equal_an_exact_cosine_scan(exact_below: int) -> None:
    rng = np.random.default_rng(0)
    data = rng.standard_normal((500, 32)).astype(np.float32) * rng.uniform(0.1, 10, (500, 1)).astype(np.float32)
    idx = VectorIndex(32, 1000, exact_below=exact_below)
    slots = idx.add(data)
    assert slots.tolist() == list(range(500)) and len(idx) == 500
    queries = data[:100] + 0.05 * rng.standard_normal((100, 32)).astype(np.float32)
    got, sims = idx.search(queries)
    exact = normalize(queries) @ normalize(data).T
    best = exact.argmax(axis=1)
    if exact_below:
        np.testing.assert_array_equal(got, best)  # a small index is scanned exactly
    else:
        assert (got == best).mean() >= 0.98  # HNSW is approximate; here it is (nearly) always exact
    # the similarity returned is always the true cosine of the entry returned
    np.testing.assert_allclose(sims, exact[np.arange(100), got], atol=1e-5)


def test_the_scale_of_a_vector_does_not_matter() -> None:
    idx = VectorIndex(4, 8)
    idx.add(np.array([[1.0, 2.0, 3.0, 4.0], [4.0, -3.0, 2.0, 1.0]]))
    slots, sims = idx.search(np.array([[10.0, 20.0, 30.0, 40.0], [0.4, -0.3, 0.2, 0.1]]))
    assert slots.tolist() == [0, 1]
    np.testing.assert_allclose(sims, [1.0, 1.0], atol=1e-6)


@pytest.mark.parametrize("exact_below", [0, 1024], ids=["hnsw", "brute-force"])
def test_size_is_bounded_and_the_oldest_entries_are_evicted(exact_below: int) -> None:
    rng = np.random.default_rng(1)
    idx = VectorIndex(16, 100, exact_below=exact_below)
    batches = [unit(rng, 30, 16) for _ in range(20)]  # 600 rows through an index of 100
    for b in batches:
        idx.add(b)
        assert len(idx) <= 100
    assert len(idx) == 100
    assert len(idx._index) == 100  # usearch itself holds no more than that
    assert idx._index.capacity < 300  # removed entries' memory is reused, not grown
    newest = np.concatenate(batches)[-100:]
    slots, sims = idx.search(newest)
    assert (sims > 0.9999).mean() >= 0.98  # the newest 100 are all there
    _, old_sims = idx.search(batches[0])
    assert (old_sims < 0.9999).all()  # the first batch was evicted long ago
    # slots are a ring: row r of the stream lives in slot r % 100
    np.testing.assert_array_equal(slots[sims > 0.9999], (np.arange(500, 600) % 100)[sims > 0.9999])


def test_more_rows_than_room_keeps_the_last_ones() -> None:
    idx = VectorIndex(3, 2)
    slots = idx.add(np.eye(3))
    assert slots.tolist() == [-1, 0, 1] and len(idx) == 2
    got, sims = idx.search(np.eye(3))
    assert got[1:].tolist() == [0, 1] and np.allclose(sims[1:], 1.0)
    assert sims[0] == pytest.approx(0.0, abs=1e-6)  # [1,0,0] was never kept: the best live entry is orthogonal


def test_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    idx = VectorIndex(4, 10, ttl_s=5, clock=clock)
    a, b = np.array([[1.0, 0, 0, 0]]), np.array([[0, 1.0, 0, 0]])
    idx.add(a)
    clock.now += 3
    idx.add(b)
    assert len(idx) == 2
    clock.now += 2.5  # a is 5.5 s old, b 2.5 s
    assert len(idx) == 1
    _, sims = idx.search(np.concatenate([a, b]))
    assert sims[1] == pytest.approx(1.0) and sims[0] == pytest.approx(0.0, abs=1e-6)
    clock.now += 3
    assert idx.search(b)[0].tolist() == [-1] and len(idx) == 0 and len(idx._index) == 0
    idx.add(a)  # and the index takes new entries afterwards
    assert idx.search(a)[1][0] == pytest.approx(1.0)


def test_non_finite_rows_are_never_stored() -> None:
    idx = VectorIndex(2, 4)
    slots = idx.add(np.array([[np.nan, 1.0], [1.0, 0.0], [np.inf, 0.0]]))
    assert slots.tolist() == [-1, 0, -1] and len(idx) == 1
    _, sims = idx.search(np.array([[np.nan, 1.0]]))
    assert not (sims >= 0.5).any()  # a NaN query is a miss whatever the threshold


def test_clear_and_dimension_checks() -> None:
    idx = VectorIndex(3, 4)
    idx.add(np.eye(3))
    idx.clear()
    assert len(idx) == 0 and idx.search(np.eye(3))[0].tolist() == [-1, -1, -1]
    with pytest.raises(ValueError, match="3 values"):
        idx.add(np.ones((1, 4)))
    with pytest.raises(ValueError, match="3 values"):
        idx.search(np.ones((1, 2)))
    with pytest.raises(ValueError):
        VectorIndex(0, 4)


def test_semantic_index_keeps_the_answers_by_slot_with_threshold_semantics() -> None:
    si = SemanticIndex(4, max_entries=3, ttl_s=None)
    x = np.array([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]], dtype=np.float32)
    si.add(SemanticIndex.normalize(x), {"Y": x * 2, "ID": np.array([[7], [8]], dtype=np.int64)})
    near = x * 1.5 + np.float32(1e-3)
    far = np.array([[1.0, -1.0, 1.0, -1.0]], dtype=np.float32)
    best, sim = si.search(SemanticIndex.normalize(np.concatenate([near, far])))
    hit = sim >= 0.999  # the runner's rule: a hit is cosine >= threshold
    assert hit.tolist() == [True, True, False]
    np.testing.assert_array_equal(si.values["Y"][best[hit]], x * 2)
    assert si.values["ID"][best[hit]].ravel().tolist() == [7, 8]
    si.add(
        SemanticIndex.normalize(np.concatenate([far, far])),
        {"Y": np.concatenate([far, far]) * 2, "ID": np.array([[9], [10]], dtype=np.int64)},
    )
    assert len(si) == 3  # bounded: the first row (ID 7) was evicted
    best, sim = si.search(SemanticIndex.normalize(x))
    assert sim[0] < 0.999 and sim[1] >= 0.999 and si.values["ID"][best[1], 0] == 8
