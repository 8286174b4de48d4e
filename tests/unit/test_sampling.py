"""Negative sampling (data/sampling.py)."""

from __future__ import annotations

import pytest
import torch

from object2vec.data.batching import make_batch
from object2vec.data.records import PairDataset, TokenSequences
from object2vec.data.sampling import describe_negative_sampling, draw_partners, take, with_negatives


def dataset(count: int = 6) -> PairDataset:
    # in0 of record i is [i], in1 is [100 + i, i] (so an in1 names its record).
    in0 = TokenSequences.from_lists([[i] for i in range(count)])
    in1 = TokenSequences.from_lists([[100 + i, i] for i in range(count)])
    return PairDataset(in0, in1, torch.ones(count, dtype=torch.int64))


def test_partners_are_other_records_and_cover_all_of_them() -> None:
    partners = draw_partners(5, 400, torch.Generator().manual_seed(0))
    assert partners.shape == (5, 400)
    for i in range(5):
        assert set(partners[i].tolist()) == set(range(5)) - {i}


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
    with pytest.raises(ValueError):
        draw_partners(1, 1, torch.Generator())


def test_description_flags_regression_and_many_classes() -> None:
    assert "label 0" in describe_negative_sampling(2, True, 2)
    assert "0.0" in describe_negative_sampling(2, False, 2)
    assert "class 0 must be the 'unrelated' class" in describe_negative_sampling(2, True, 3)
