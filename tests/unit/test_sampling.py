"""Negative sampling (data/sampling.py)."""

from __future__ import annotations

from collections import Counter

import torch

from object2vec.data.batching import make_batch
from object2vec.data.records import PairDataset, TokenSequences
from object2vec.data.sampling import PairIndex, content_keys, describe_negative_sampling, take, with_negatives


def dataset(count: int = 6) -> PairDataset:
    # in0 of record i is [i], in1 is [100 + i, i] (so an in1 names its record).
    in0 = TokenSequences.from_lists([[i] for i in range(count)])
    in1 = TokenSequences.from_lists([[100 + i, i] for i in range(count)])
    return PairDataset(in0, in1, torch.ones(count, dtype=torch.int64))


def test_content_keys_equal_exactly_for_equal_token_sequences() -> None:
    sequences = TokenSequences.from_lists([[1, 2, 3], [3, 2, 1], [1, 2, 3], [], [1, 2], [0], [], [1, 2, 3, 0]])
    keys = content_keys(sequences).tolist()
    assert keys[0] == keys[2] and keys[3] == keys[6]  # same tokens (and empty ones) hash alike
    assert len({keys[i] for i in (0, 1, 3, 4, 5, 7)}) == 6  # order, length and a trailing 0 all count
    view = take(sequences, torch.tensor([2, 6, 1]))  # offsets that are not a running sum
    assert content_keys(view).tolist() == [keys[2], keys[6], keys[1]]


def test_partners_are_other_in1_values_and_cover_all_of_them() -> None:
    index = PairIndex.of(dataset(5))
    kept, partners = index.draw(torch.arange(5).repeat_interleave(400), torch.Generator().manual_seed(0))
    assert kept.all()
    for i in range(5):
        assert set(partners[i * 400 : (i + 1) * 400].tolist()) == set(range(5)) - {i}


def multilabel(labels_of_doc: list[list[int]]) -> PairDataset:
    """Positive (document, label) records: document d is the sequence [d, d], label l is [l]."""
    docs = [[d, d] for d, labels in enumerate(labels_of_doc) for _ in labels]
    labels = [[label] for labels in labels_of_doc for label in labels]
    return PairDataset(TokenSequences.from_lists(docs), TokenSequences.from_lists(labels), torch.ones(len(docs)))


def negatives_of(out: PairDataset, count: int) -> list[tuple[int, int]]:
    batch = make_batch(out, torch.arange(count, len(out)))
    firsts = [side.ids.index_select(0, side.offsets) for side in (batch.in0, batch.in1)]  # each sequence's first id
    return list(zip(firsts[0].tolist(), firsts[1].tolist(), strict=True))


def test_a_document_never_gets_its_own_labels_as_negatives() -> None:
    labels_of_doc = [[0, 1, 2], [0], [3, 4], [0, 5]]
    data = multilabel(labels_of_doc)
    out = with_negatives(data, 20, torch.Generator().manual_seed(3))
    assert len(out) == len(data) * 21
    for doc, label in negatives_of(out, len(data)):
        assert label not in labels_of_doc[doc]


def test_partners_are_uniform_over_distinct_in1_not_over_records() -> None:
    # Label 0 is on 30 of the 32 records; labels 1 and 2 on one each. Per-record draws would pick
    # label 0 for ~94% of the negatives; distinct-value draws pick each label a third of the time.
    data = multilabel([[0]] * 30 + [[1], [2]])
    out = with_negatives(data, 30, torch.Generator().manual_seed(0))
    drawn = Counter(label for doc, label in negatives_of(out, len(data)) if doc < 30)
    assert set(drawn) == {1, 2} and abs(drawn[1] - drawn[2]) < 0.1 * 900
    assert {label for doc, label in negatives_of(out, len(data)) if doc == 30} == {0, 2}


def test_an_object_paired_with_every_in1_gets_no_negatives() -> None:
    data = multilabel([[0, 1, 2], [0]])
    out = with_negatives(data, 5, torch.Generator().manual_seed(0))
    assert [doc for doc, _ in negatives_of(out, len(data))] == [1] * 5  # doc 0 has all three labels


def test_with_negatives_pairs_own_in0_with_other_in1_labelled_0() -> None:
    data = dataset()
    out = with_negatives(data, 3, torch.Generator().manual_seed(1))
    assert len(out) == 6 * 4
    batch = make_batch(out, torch.arange(len(out)))
    assert batch.labels.tolist() == [1] * 6 + [0] * 18
    in0, in1 = batch.in0.padded_ids(), batch.in1.padded_ids()  # (24, 1), (24, 2)
    assert in0[:, 0].tolist() == list(range(6)) + [i for i in range(6) for _ in range(3)]
    assert torch.equal(in1[:6, 0], torch.arange(100, 106))  # positives unchanged
    own, partner = in0[6:, 0], in1[6:, 1]
    assert (own != partner).all()
    assert out.in0.values is data.in0.values  # a view: tokens are not copied


def test_drawn_afresh_each_epoch_and_reproducible() -> None:
    data = dataset(50)
    generator = torch.Generator().manual_seed(7)
    first = with_negatives(data, 2, generator).in1.offsets
    second = with_negatives(data, 2, generator).in1.offsets
    assert not torch.equal(first, second)
    again = with_negatives(data, 2, torch.Generator().manual_seed(7)).in1.offsets
    assert torch.equal(first, again)


def test_regression_labels_and_no_op_cases() -> None:
    data = PairDataset(dataset().in0, dataset().in1, torch.full((6,), 4.5))
    out = with_negatives(data, 1, torch.Generator())
    assert out.labels.dtype == torch.float32 and out.labels[6:].eq(0.0).all()
    assert with_negatives(data, 0, torch.Generator()) is data
    one = PairDataset(take(data.in0, torch.tensor([0])), take(data.in1, torch.tensor([0])), torch.ones(1))
    assert with_negatives(one, 3, torch.Generator()) is one


def test_description_flags_regression_and_many_classes() -> None:
    assert "label 0" in describe_negative_sampling(2, True, 2)
    assert "0.0" in describe_negative_sampling(2, False, 2)
    assert "class 0 must be the 'unrelated' class" in describe_negative_sampling(2, True, 3)
    assert "in0 encoded once" in describe_negative_sampling(2, True, 2, grouped=True)
    assert "in0 encoded once" not in describe_negative_sampling(2, True, 2)
