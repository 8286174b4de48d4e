"""faiss indexes: plans from the hyperparameters, exact and IVF search, checked zero-copy reading."""

from __future__ import annotations

import math

import faiss
import numpy as np
import pytest

from object2vec.config import Hyperparameters
from object2vec.retrieval import vector_index
from object2vec.retrieval.vector_index import SearchPlan, build, check_blob, plan_search, read, search

REQUIRED = {"enc0_max_seq_len": 2, "enc0_vocab_size": 10}
IVF = {"retrieval_index": "ivf"}


def hp(**values: object) -> Hyperparameters:
    return Hyperparameters.from_dict({**REQUIRED, **values})


def vectors(count: int, dim: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)


@pytest.mark.parametrize(
    ("count", "values", "expected"),
    [
        (50_000, {}, SearchPlan("exact", 6)),
        (50_001, {}, SearchPlan("ivf", 6, nlist=447, nprobe=43)),
        (1_000_000, {}, SearchPlan("ivf", 6, nlist=2000, nprobe=90)),
        (100, {"retrieval_index": "ivf"}, SearchPlan("ivf", 6, nlist=20, nprobe=9)),
        (10**6, {"retrieval_index": "exact"}, SearchPlan("exact", 6)),
        (500, {"retrieval_exact_max": 10}, SearchPlan("ivf", 6, nlist=45, nprobe=14)),
        (500, {**IVF, "retrieval_ivf_nlist": 900, "retrieval_ivf_nprobe": 800}, SearchPlan("ivf", 6, 500, 500)),
        (500, {**IVF, "retrieval_ivf_nlist": 30, "retrieval_ivf_nprobe": 7}, SearchPlan("ivf", 6, 30, 7)),
    ],
)  # fmt: skip
def test_plans(count: int, values: dict, expected: SearchPlan) -> None:
    assert plan_search(count, 6, hp(**values)) == expected


def test_plan_round_trip_and_checks() -> None:
    plan = SearchPlan("ivf", 6, nlist=10, nprobe=3, max_norm=2.5)
    assert SearchPlan.from_dict(plan.to_dict(), count=100) == plan
    for bad, needle in (
        ({**plan.to_dict(), "kind": "hnsw"}, "search.kind"),
        ({**plan.to_dict(), "nlist": 101}, "search.nlist"),
        ({**plan.to_dict(), "nprobe": 11}, "search.nprobe"),
        ({**plan.to_dict(), "enc_dim": "6"}, "search.enc_dim"),
        ({**plan.to_dict(), "max_norm": float("nan")}, "search.max_norm"),
        ([], "must be an object"),
    ):
        with pytest.raises(ValueError, match=needle):
            SearchPlan.from_dict(bad, count=100)


@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_search_finds_the_largest_inner_products_and_returns_the_vectors(kind: str) -> None:
    data = vectors(2000)
    plan = SearchPlan(kind, 6, nlist=20, nprobe=20)  # every cell: exact for ivf too
    index, plan = build(data, plan, seed=0)
    queries = vectors(5, seed=1)
    rows, found = search(index, plan, queries, depth=10, count=2000)
    exact = np.argsort(-(queries @ data.T), axis=1)[:, :10]
    assert rows.tolist() == exact.tolist()
    np.testing.assert_array_equal(found, data[rows])  # (5, 10, 6), the stored float32 values
    if kind == "ivf":
        assert plan.max_norm == pytest.approx(float(np.linalg.norm(data, axis=1).max()))


def test_ivf_searches_every_cell_when_the_depth_covers_the_catalogue() -> None:
    data = vectors(300)
    index, plan = build(data, SearchPlan("ivf", 6, nlist=30, nprobe=1), seed=0)
    rows, _ = search(index, plan, vectors(3, seed=2), depth=500, count=300)
    assert rows.shape == (3, 300) and all(sorted(row) == list(range(300)) for row in rows.tolist())
    partial, _ = search(index, plan, vectors(3, seed=2), depth=100, count=300)
    assert (partial == -1).any()  # one cell of ~10 vectors cannot fill 100 slots


def test_augmentation_turns_inner_product_into_distance() -> None:
    data = vectors(50)
    norms = np.linalg.norm(data, axis=1)
    stored = vector_index.augment(data, norms, float(norms.max()))
    assert stored.shape == (50, 7)
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), norms.max(), rtol=1e-5)


@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_read_gives_the_same_answers(kind: str) -> None:
    data = vectors(1000)
    index, plan = build(data, SearchPlan(kind, 6, nlist=10, nprobe=3), seed=0)
    blob = faiss.serialize_index(index)
    low, high = vector_index.expected_length(plan, 1000)
    assert low <= len(blob) <= high
    loaded = read(blob, plan, 1000)
    queries = vectors(4, seed=3)
    assert search(loaded, plan, queries, 5, 1000)[0].tolist() == search(index, plan, queries, 5, 1000)[0].tolist()
    if kind == "ivf":
        assert loaded.nprobe == 3


def test_read_is_zero_copy_over_the_given_bytes() -> None:
    """The loaded index reads `blob` itself: zeroing the best vector's bytes there changes its answer."""
    data = vectors(1000)
    index, plan = build(data, SearchPlan("exact", 6), seed=0)
    blob = faiss.serialize_index(index)
    loaded = read(blob, plan, 1000)
    query = vectors(1, seed=3)
    best = int(search(loaded, plan, query, 1, 1000)[0][0, 0])
    start = bytes(blob).find(data[best].tobytes())
    blob[start : start + data[best].nbytes] = 0
    assert int(search(loaded, plan, query, 1, 1000)[0][0, 0]) != best


@pytest.mark.parametrize(
    ("plan", "count", "needle"),
    [
        (SearchPlan("exact", 6), 999, "needs"),  # length
        (SearchPlan("exact", 7), 1000, "needs"),
        (SearchPlan("ivf", 6, nlist=10, nprobe=1), 1000, "needs"),  # an exact index read as ivf
    ],
)
def test_blobs_that_do_not_match_the_plan_are_refused(plan: SearchPlan, count: int, needle: str) -> None:
    index, _ = build(vectors(1000), SearchPlan("exact", 6), seed=0)
    with pytest.raises(ValueError, match=needle):
        check_blob(faiss.serialize_index(index), plan, count)


def test_ivf_header_fields_are_checked_at_their_offsets() -> None:
    index, plan = build(vectors(1000), SearchPlan("ivf", 6, nlist=10, nprobe=2), seed=0)
    blob = faiss.serialize_index(index)
    check_blob(blob, plan, 1000)
    other = SearchPlan("ivf", 6, nlist=11, nprobe=2, max_norm=plan.max_norm)  # a length within bounds
    with pytest.raises(ValueError, match="11 L2 cells"):
        check_blob(blob, other, 1000)
    damaged = blob.copy()
    damaged[0:4] = np.frombuffer(b"IxFI", dtype=np.uint8)
    with pytest.raises(ValueError, match="not b'IwFl'"):
        check_blob(damaged, plan, 1000)


def test_auto_nlist_and_nprobe_are_two_square_roots() -> None:
    plan = plan_search(250_000, 8, hp())
    assert plan.nlist == round(2 * math.sqrt(250_000)) and plan.nprobe == math.ceil(2 * math.sqrt(plan.nlist))


@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_blocks_build_the_index_of_their_concatenation_and_are_taken(kind: str) -> None:
    """Blocks go into the index in order (faiss id = row across blocks) and leave the list as they do."""
    data = vectors(3000)
    plan = SearchPlan(kind, 6, nlist=30, nprobe=30)
    blocks = [data[:1000], data[1000:1001], data[1001:]]
    index, built = build(blocks, plan, seed=0)
    assert blocks == [] and index.ntotal == 3000
    whole, _ = build(data, plan, seed=0)
    queries = vectors(4, seed=3)
    rows, found = search(index, built, queries, depth=20, count=3000)
    assert rows.tolist() == search(whole, built, queries, depth=20, count=3000)[0].tolist()
    np.testing.assert_array_equal(found, data[rows])


def test_kmeans_trains_on_a_bounded_sample_drawn_from_every_block(monkeypatch) -> None:
    data = vectors(5000)
    trained: list[np.ndarray] = []
    original = faiss.IndexIVFFlat.train
    monkeypatch.setattr(faiss.IndexIVFFlat, "train", lambda self, x: (trained.append(x.copy()), original(self, x))[1])
    build([data[:2500], data[2500:]], SearchPlan("ivf", 6, nlist=10, nprobe=2), seed=0)
    (sample,) = trained
    assert sample.shape == (10 * vector_index.KMEANS_POINTS_PER_CELL, 7)  # augmented rows
    rows = [int(np.flatnonzero((data == row[:6]).all(axis=1))[0]) for row in sample]
    assert len(set(rows)) == len(rows) and min(rows) < 2500 <= max(rows)  # distinct rows, both blocks
    small: list[np.ndarray] = []
    monkeypatch.setattr(faiss.IndexIVFFlat, "train", lambda self, x: (small.append(x.copy()), original(self, x))[1])
    build(data[:100], SearchPlan("ivf", 6, nlist=10, nprobe=2), seed=0)
    assert small[0].shape == (100, 7)  # fewer rows than the sample size: all of them
