"""Flat batches (Tokens) against Python references: gather, the packed and padded views, narrow,
and iterate_batches' coverage, seeded shuffling, length-sorted evaluation batches, and batches
that hold a repeated in0 once (grouped negatives, multi-label validation files)."""

from __future__ import annotations

import pytest
import torch

from object2vec.data.batching import (
    Tokens,
    group_batch_size,
    grouped_order,
    in0_views,
    iterate_batches,
    length_sorted_batches,
    make_batch,
)
from object2vec.data.records import PairDataset, TokenSequences
from object2vec.data.sampling import take, with_negatives

SEQS = [[5, 6, 7], [], [1], [2, 3, 4, 8, 9], [9, 9]]


def dataset(size: int) -> PairDataset:
    """Record i has in0 = [i] * (i % 4), in1 = [i % 7], label i: every record is recognisable."""
    return PairDataset(
        in0=TokenSequences.from_lists([[i] * (i % 4) for i in range(size)]),
        in1=TokenSequences.from_lists([[i % 7] for i in range(size)]),
        labels=torch.arange(size),
    )


def sequences_of(tokens: Tokens) -> list[list[int]]:
    """The Python lists a Tokens holds, read through offsets and lengths."""
    return [
        tokens.ids[int(start) : int(start) + int(length)].tolist()
        for start, length in zip(tokens.offsets, tokens.lengths, strict=True)
    ]


def check_consistent(tokens: Tokens) -> None:
    assert tokens.ids.dtype == tokens.offsets.dtype == tokens.lengths.dtype == tokens.rows.dtype == torch.int64
    assert torch.equal(tokens.offsets, torch.cumsum(tokens.lengths, 0) - tokens.lengths)
    assert torch.equal(tokens.rows, torch.repeat_interleave(torch.arange(len(tokens)), tokens.lengths))
    assert tokens.ids.shape == (int(tokens.lengths.sum()),)


@pytest.mark.parametrize("index", [[0], [1], [3, 0, 1], [4, 2], [0, 1, 2, 3, 4], [1, 1], []])
def test_gather_matches_the_python_lists(index: list[int]) -> None:
    tokens = Tokens.gather(TokenSequences.from_lists(SEQS), torch.tensor(index, dtype=torch.int64))
    check_consistent(tokens)
    assert sequences_of(tokens) == [SEQS[i] for i in index]
    assert tokens.positions().tolist() == [p for i in index for p in range(len(SEQS[i]))]


@pytest.mark.parametrize("length", [0, 1, 3])
def test_gather_of_fixed_length_sequences_takes_the_short_path_with_the_same_result(length: int) -> None:
    seqs = [[10 * i + j for j in range(length)] for i in range(6)]
    sequences = TokenSequences.from_lists(seqs)
    assert sequences.fixed_length == length
    index = torch.tensor([4, 0, 5, 5])
    tokens = Tokens.gather(sequences, index)
    check_consistent(tokens)
    assert sequences_of(tokens) == [seqs[i] for i in index.tolist()]
    assert tokens.fixed_length == length and tokens.narrow(1, 2).fixed_length == length
    assert TokenSequences.from_lists(SEQS).fixed_length is None
    assert Tokens.gather(TokenSequences.from_lists(SEQS), index[:1]).fixed_length is None


def test_gather_reads_views_with_offsets_that_are_not_a_running_sum() -> None:
    # Negative sampling's `take` shares the token storage: offsets jump around.
    view = take(TokenSequences.from_lists(SEQS), torch.tensor([3, 0, 3, 4]))
    assert sequences_of(Tokens.gather(view, torch.tensor([2, 1, 3]))) == [SEQS[3], SEQS[0], SEQS[4]]


def test_padded_view_pads_with_zero_to_the_longest() -> None:
    tokens = Tokens.from_lists([[7, 7, 7, 7], [3], [], [8, 8]])
    assert tokens.padded_ids().tolist() == [[7, 7, 7, 7], [3, 0, 0, 0], [0, 0, 0, 0], [8, 8, 0, 0]]
    assert Tokens.from_lists([[], []]).padded_ids().shape == (2, 1)  # at least one column
    assert tokens.with_layout("padded").padded is not None


@pytest.mark.parametrize("seqs", [SEQS, [[1], [2], [3]], [[], []], [[4, 5], [], [6, 7], [1]], []])
def test_packing_is_time_major_longest_first(seqs: list[list[int]]) -> None:
    tokens = Tokens.from_lists(seqs)
    packing = tokens.packed()
    # Reference: sequences sorted by length (stable), step t holds the t-th token of each still running.
    ranked = sorted(range(len(seqs)), key=lambda b: -len(seqs[b]))
    width = max((len(s) for s in seqs), default=0)
    expected_ids = [seqs[b][t] for t in range(width) for b in ranked if len(seqs[b]) > t]
    assert tokens.ids[packing.order].tolist() == expected_ids
    assert packing.steps == tuple(sum(len(s) > t for s in seqs) for t in range(width))
    assert packing.batch_sizes.tolist() == list(packing.steps)
    assert packing.sorted_rows.tolist() == ranked
    assert torch.equal(packing.rank[packing.sorted_rows], torch.arange(len(seqs)))
    assert torch.equal(packing.position[packing.order], torch.arange(len(expected_ids)))
    for b, seq in enumerate(seqs):
        if seq:
            assert int(tokens.ids[packing.order[packing.last[b]]]) == seq[-1]
            assert int(tokens.ids[packing.order[packing.rank[b]]]) == seq[0]
    assert tokens.with_layout("packed").packing is not None


def test_narrow_keeps_a_contiguous_run_of_sequences() -> None:
    tokens = Tokens.from_lists(SEQS)
    for start, count in [(0, 5), (1, 3), (3, 2), (2, 0)]:
        part = tokens.narrow(start, count)
        check_consistent(part)
        assert sequences_of(part) == SEQS[start : start + count]


def test_make_batch_gathers_each_side_and_picks_labels() -> None:
    batch = make_batch(dataset(6), torch.tensor([3, 5]))
    assert sequences_of(batch.in0) == [[3, 3, 3], [5]]
    assert sequences_of(batch.in1) == [[3], [5]]
    assert batch.labels.tolist() == [3, 5] and len(batch) == 2
    assert batch.side(1) is batch.in1
    viewed = batch.with_layouts(("packed", "padded"))
    assert viewed.in0.packing is not None and viewed.in1.padded is not None
    assert viewed.in0.padded is None and viewed.in1.packing is None


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
        assert sequences_of(batch.in0) == [[i] * (i % 4) for i in batch.labels.tolist()]
        assert sequences_of(batch.in1) == [[i % 7] for i in batch.labels.tolist()]


def with_three_negatives(size: int) -> PairDataset:
    """dataset(size) and 3 negatives per record (labels are the record's own, to follow them)."""
    data = dataset(size)
    negatives = with_negatives(data, 3, torch.Generator().manual_seed(1))
    source = torch.cat([torch.arange(size), torch.arange(size).repeat_interleave(3)])  # what with_negatives keeps
    return PairDataset(negatives.in0, negatives.in1, source[: len(negatives)])


@pytest.mark.parametrize("shuffle", [False, True])
def test_grouped_order_keeps_a_record_beside_its_negatives(shuffle: bool) -> None:
    data = with_three_negatives(12)
    order = grouped_order(in0_views(data), torch.Generator().manual_seed(0) if shuffle else None)
    assert sorted(order.tolist()) == list(range(len(data)))
    sources = data.labels[order].tolist()
    starts = [i for i in range(len(sources)) if i == 0 or sources[i] != sources[i - 1]]
    assert len(starts) == 12  # 12 contiguous groups: each record's negatives follow it
    assert (sources == sorted(sources)) is not shuffle  # shuffled groups; in order without a generator


@pytest.mark.parametrize(("batch_size", "parts"), [(8, 1), (8, 3), (40, 2), (5, 5)])
def test_grouped_batches_hold_each_in0_once_and_every_pair_finds_its_own(batch_size: int, parts: int) -> None:
    data = with_three_negatives(10)  # 40 pairs, 10 distinct in0 (record i: [i] * (i % 4))
    batches = list(iterate_batches(data, batch_size, torch.Generator().manual_seed(0), grouped=True))
    assert sorted(torch.cat([b.labels for b in batches]).tolist()) == sorted(data.labels.tolist())
    held = 0
    for batch in batches:
        for part in torch.tensor_split(torch.arange(len(batch)), parts):  # as processes slice a batch
            if len(part) == 0:
                continue
            piece = batch.narrow(int(part[0]), len(part))
            assert piece.in0_rows is not None and len(piece.in0_rows) == len(piece)
            in0 = sequences_of(piece.in0)
            assert [in0[r] for r in piece.in0_rows.tolist()] == [[i] * (i % 4) for i in piece.labels.tolist()]
        assert batch.in0_rows is not None
        held += len(batch.in0)
        assert len(batch.in0) == len(set(batch.labels.tolist()))  # one copy per document in the batch
    assert held < len(data)  # 40 pairs, far fewer in0 copies


def test_empty_dataset_gives_no_batches() -> None:
    assert list(iterate_batches(dataset(0), 4, torch.Generator().manual_seed(0))) == []
    assert list(length_sorted_batches(dataset(0), 4)) == []


def test_length_sorted_batches_cover_every_record_once_in_length_order() -> None:
    data = dataset(23)
    batches = list(length_sorted_batches(data, 5))
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    labels = torch.cat([b.labels for b in batches]).tolist()
    assert sorted(labels) == list(range(23))
    lengths = [i % 4 for i in labels]
    assert lengths == sorted(lengths)  # similar lengths share a batch
    for batch in batches:  # the empty in0 of records 0, 4, 8, ... is held once per batch
        assert batch.in0_rows is not None
        in0 = sequences_of(batch.in0)
        assert [in0[row] for row in batch.in0_rows.tolist()] == [[i] * (i % 4) for i in batch.labels.tolist()]
    assert sum(len(b.in0) for b in batches) == 23 - 6 + 2  # 6 empty sequences: once in each of 2 batches


def test_evaluation_batches_hold_a_repeated_document_once() -> None:
    """A multi-label validation file: every document against every label, document-major."""
    documents = [[1, 2, 3], [4, 5, 6], [7], [1, 2, 3]]  # the last repeats the first
    data = PairDataset(
        in0=TokenSequences.from_lists([doc for doc in documents for _ in range(5)]),
        in1=TokenSequences.from_lists([[label] for _ in documents for label in range(5)]),
        labels=torch.arange(20),
    )
    batches = list(length_sorted_batches(data, 8))
    assert sorted(torch.cat([b.labels for b in batches]).tolist()) == list(range(20))
    for batch in batches:
        assert batch.in0_rows is not None
        in0 = sequences_of(batch.in0)
        assert len(in0) == len({tuple(s) for s in in0})  # each document once per batch
        assert [in0[row] for row in batch.in0_rows.tolist()] == [documents[i // 5] for i in batch.labels.tolist()]
    # [7] x 5 + [1, 2, 3] x 3 | [1, 2, 3] x 7 + [4, 5, 6] | [4, 5, 6] x 4: 5 encodings for 20 pairs
    assert sum(len(b.in0) for b in batches) == 5
    distinct = PairDataset(TokenSequences.from_lists(SEQS), TokenSequences.from_lists([[1]] * 5), torch.arange(5))
    assert next(length_sorted_batches(distinct, 5)).in0_rows is None  # nothing repeated: one in0 per pair


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


@pytest.mark.parametrize(
    ("mini_batch_size", "sharers", "world_size", "expected"),
    [
        (32, 1, 1, 32),  # one process: the mini-batch itself
        (6, 2, 2, 6),  # a FullyReplicated channel shared by the whole job, sliced in two
        (32, 2, 4, 16),  # ShardedByS3Key on 2 hosts x 2 processes: each host's pair takes half
        (3, 4, 4, 4),  # never less than one record per process
        (5, 1, 2, 3),  # rounded up
    ],
)
def test_group_batch_shares_the_mini_batch_between_processes(
    mini_batch_size: int, sharers: int, world_size: int, expected: int
) -> None:
    assert group_batch_size(mini_batch_size, sharers, world_size) == expected
