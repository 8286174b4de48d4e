"""Length bucketing of mini-batches (data/batching.py: bucket_width)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from object2vec.data.batching import bucket_batches, iterate_batches
from object2vec.data.records import PairDataset, TokenSequences


def variable_length(count: int = 500, max_len: int = 60, seed: int = 0) -> PairDataset:
    rng = np.random.default_rng(seed)
    sides = []
    for _ in range(2):
        lengths = rng.integers(0, max_len + 1, count)
        sides.append(TokenSequences.from_flat(rng.integers(0, 50, int(lengths.sum())), lengths))
    return PairDataset(sides[0], sides[1], torch.arange(count))


@pytest.mark.parametrize("width", [1, 5, 20])
def test_batches_cover_every_record_once_and_respect_the_width(width: int) -> None:
    data = variable_length()
    batches = bucket_batches(data, 16, width, torch.Generator().manual_seed(0))
    seen = torch.cat(batches)
    assert sorted(seen.tolist()) == list(range(len(data)))
    for index in batches:
        assert 1 <= len(index) <= 16
        for side in (data.in0, data.in1):
            lengths = side.lengths[index]
            assert int(lengths.max() - lengths.min()) <= width


def test_padding_shrinks() -> None:
    data = variable_length()

    def padded_tokens(width: int) -> int:
        generator = torch.Generator().manual_seed(0)
        return sum(
            b.in0.padded_ids().numel() + b.in1.padded_ids().numel() for b in iterate_batches(data, 32, generator, width)
        )

    real = int(data.in0.lengths.sum() + data.in1.lengths.sum())
    assert padded_tokens(0) > 1.5 * real
    assert padded_tokens(3) < 1.2 * padded_tokens(0) / 1.5


def test_seeded_shuffled_and_reproducible() -> None:
    data = variable_length()
    first = bucket_batches(data, 16, 5, torch.Generator().manual_seed(3))
    again = bucket_batches(data, 16, 5, torch.Generator().manual_seed(3))
    other = bucket_batches(data, 16, 5, torch.Generator().manual_seed(4))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert [b.tolist() for b in first] != [b.tolist() for b in other]
    # Batches are not in length order: shuffled across buckets.
    first_lengths = [int(data.in0.lengths[b].min()) for b in first]
    assert first_lengths != sorted(first_lengths)


def test_batch_contents_match_the_records() -> None:
    data = variable_length(100)
    for batch in iterate_batches(data, 8, torch.Generator().manual_seed(0), bucket_width=4):
        for row, record in enumerate(batch.labels.tolist()):
            length = int(data.in0.lengths[record])
            start = int(data.in0.offsets[record])
            assert batch.in0.lengths[row] == length
            first = int(batch.in0.offsets[row])
            assert torch.equal(batch.in0.ids[first : first + length], data.in0.values[start : start + length])


def test_without_generator_and_empty() -> None:
    data = variable_length(50)
    assert [b.tolist() for b in bucket_batches(data, 8, 2)] == [b.tolist() for b in bucket_batches(data, 8, 2)]
    empty = PairDataset(TokenSequences.from_lists([]), TokenSequences.from_lists([]), torch.zeros(0))
    assert bucket_batches(empty, 8, 2) == []
