"""benchmarks/sts.py's silver pairs for --distil: which training sentences are paired and how the
teacher's cosine becomes a score (the teacher itself, all-MiniLM-L6-v2, is not needed here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sts() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sts_benchmark", ROOT / "benchmarks" / "sts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    path = list(sys.path)
    try:
        spec.loader.exec_module(module)  # puts benchmarks/ on sys.path for its common / bench_data
    finally:
        sys.path[:] = path
    return module


def unit(rows: list[list[float]]) -> np.ndarray:
    array = np.asarray(rows, dtype=np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def test_each_sentence_is_paired_with_its_nearest_and_scored_on_the_0_5_scale(sts: ModuleType) -> None:
    # 0 and 1 are close, 2 and 3 are close, the two groups are orthogonal
    embeddings = unit([[1, 0.1, 0], [1, 0.3, 0], [0, 0, 1], [0, 0.2, 1]])
    pairs = sts.silver_pairs(embeddings, neighbours=1, randoms=0)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1), (2, 3)]
    for i, j, score in pairs:
        assert score == pytest.approx(5 * float(embeddings[i] @ embeddings[j]), abs=1e-5)
        assert 4.5 < score <= 5.0


def test_random_partners_reach_the_low_end_and_negative_cosines_clip_to_zero(sts: ModuleType) -> None:
    embeddings = unit([[1, 0], [-1, 0.05], [0.05, 1], [1, 0.02]])
    pairs = sts.silver_pairs(embeddings, neighbours=0, randoms=20, seed=3)
    found = {(i, j): score for i, j, score in pairs}
    assert all(i < j for i, j in found)  # each pair once, never a sentence with itself
    assert found[(0, 1)] == 0.0  # cosine -1 -> 0, not -5
    assert len(found) == 5  # every pair but (0, 3): the same sentence written twice


def test_the_pairs_are_deterministic_and_bounded_by_the_counts(sts: ModuleType) -> None:
    rng = np.random.default_rng(0)
    embeddings = unit(rng.normal(size=(300, 8)).tolist())
    pairs = sts.silver_pairs(embeddings, neighbours=5, randoms=5, seed=0)
    assert pairs == sts.silver_pairs(embeddings, neighbours=5, randoms=5, seed=0)
    assert 300 * 5 // 2 <= len(pairs) <= 300 * 10
    assert all(0.0 <= score <= 5.0 for _, _, score in pairs)
