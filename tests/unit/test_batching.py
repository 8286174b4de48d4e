"""pad() against a Python reference, and iterate_batches' coverage and seeded shuffling."""

from __future__ import annotations

import pytest
import torch

from object2vec.data.batching import iterate_batches, make_batch, pad
from object2vec.data.records import PairDataset, TokenSequences

SEQS = [[5, 6, 7], [], [1], [2, 3, 4, 8, 9], [9, 9]]


def reference_pad(seqs: list[list[int]], index: list[int]) -> tuple[list[list[int]], list[int]]:
    """Pad with 0 to the longest selected sequence (at least 1 wide)."""
    chosen = [seqs[i] for i in index]
    width = max([1, *(len(s) for s in chosen)])
    return [s + [0] * (width - len(s)) for s in chosen], [len(s) for s in chosen]


def dataset(size: int) -> PairDataset:
    """Record i has in0 = [i] * (i % 4), in1 = [i % 7], label i: every record is recognisable."""
    return PairDataset(
        in0=TokenSequences.from_lists([[i] * (i % 4) for i in range(size)]),
        in1=TokenSequences.from_lists([[i % 7] for i in range(size)]),
        labels=torch.arange(size),
    )


@pytest.mark.parametrize("index", [[0], [1], [3, 0, 1], [4, 2], [0, 1, 2, 3, 4], [1, 1], []])
def test_pad_matches_the_python_reference(index: list[int]) -> None:
    ids, lengths = pad(TokenSequences.from_lists(SEQS), torch.tensor(index, dtype=torch.int64))
    expected_ids, expected_lengths = reference_pad(SEQS, index)
    assert ids.dtype == torch.int64 and lengths.dtype == torch.int64
    assert lengths.tolist() == expected_lengths
    if index:
        assert ids.tolist() == expected_ids
    else:
        assert ids.shape == (0, 1)


def test_padding_never_leaks_values_of_neighbouring_sequences() -> None:
    # Gathering past a short sequence's end would read its neighbour's tokens (all non-zero here).
    seqs = [[7, 7, 7, 7], [3], [8, 8, 8, 8]]
    ids, lengths = pad(TokenSequences.from_lists(seqs), torch.tensor([1, 0]))
    assert ids.tolist() == [[3, 0, 0, 0], [7, 7, 7, 7]]
    mask = torch.arange(ids.shape[1]) < lengths[:, None]
    assert (ids[~mask] == 0).all()


@pytest.mark.parametrize("seqs", [[[], []], [[]], []])
def test_all_empty_values(seqs: list[list[int]]) -> None:
    index = torch.arange(len(seqs))
    ids, lengths = pad(TokenSequences.from_lists(seqs), index)
    assert ids.shape == (len(seqs), 1)  # at least one column, so encoders get a tensor
    assert (ids == 0).all() and lengths.tolist() == [0] * len(seqs)


def test_make_batch_pads_each_side_and_picks_labels() -> None:
    data = dataset(6)
    batch = make_batch(data, torch.tensor([3, 5]))
    assert batch.in0.tolist() == [[3, 3, 3], [5, 0, 0]] and batch.len0.tolist() == [3, 1]
    assert batch.in1.tolist() == [[3], [5]] and batch.len1.tolist() == [1, 1]
    assert batch.labels.tolist() == [3, 5] and len(batch) == 2


@pytest.mark.parametrize(("size", "batch_size"), [(10, 3), (10, 10), (10, 32), (1, 1), (7, 1)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_iterate_batches_covers_every_record_exactly_once(size: int, batch_size: int, shuffle: bool) -> None:
    generator = torch.Generator().manual_seed(0) if shuffle else None
    batches = list(iterate_batches(dataset(size), batch_size, generator))
    assert [len(b) for b in batches] == [min(batch_size, size - start) for start in range(0, size, batch_size)]
    seen = torch.cat([b.labels for b in batches])
    assert sorted(seen.tolist()) == list(range(size))
    if not shuffle:
        assert seen.tolist() == list(range(size))
    for batch in batches:  # inputs travel with their label
        expected, _ = reference_pad([[i] * (i % 4) for i in range(size)], batch.labels.tolist())
        assert batch.in0.tolist() == expected
        assert batch.in1[:, 0].tolist() == [i % 7 for i in batch.labels.tolist()]


def test_empty_dataset_gives_no_batches() -> None:
    assert list(iterate_batches(dataset(0), 4, torch.Generator().manual_seed(0))) == []


def epoch_orders(seed: int, epochs: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    data = dataset(50)
    return [torch.cat([b.labels for b in iterate_batches(data, 8, generator)]).tolist() for _ in range(epochs)]


def test_shuffle_is_seeded_and_changes_every_epoch() -> None:
    first, second = epoch_orders(seed=3, epochs=2)
    assert epoch_orders(seed=3, epochs=2) == [first, second]  # reproducible
    assert first != second  # one generator, advanced each epoch
    assert first != list(range(50))
    assert epoch_orders(seed=4, epochs=1)[0] != first
