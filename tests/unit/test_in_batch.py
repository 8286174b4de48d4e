"""In-batch negatives (training/in_batch.py): which pairs of a batch are positives, the ranking
logits and loss, and the positive-only checks of the channels."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from object2vec.data.batching import make_batch
from object2vec.data.records import PairDataset, TokenSequences
from object2vec.errors import ClientError
from object2vec.training.in_batch import (
    batch_positives,
    check_positives,
    in_batch_step,
    positives_only,
    ranking_logits,
)


def dataset(in0: list[list[int]], in1: list[list[int]], labels: list[int] | None = None) -> PairDataset:
    labels = labels if labels is not None else [1] * len(in0)
    return PairDataset(
        TokenSequences.from_lists(in0), TokenSequences.from_lists(in1), torch.tensor(labels, dtype=torch.int64)
    )


# Pairs 0 and 2 share their in0 (one document, two labels); pairs 1 and 3 share their in1 (one
# label of two documents); pair 4 is alone. [3] and [3, 0] differ (length counts), as [] and [0].
IN0 = [[1, 2], [5], [1, 2], [6, 7], [3]]
IN1 = [[10], [20, 21], [11], [20, 21], [3, 0]]


def test_batch_positives_links_equal_in0_and_equal_in1_exactly() -> None:
    batch = make_batch(dataset(IN0, IN1), torch.arange(5))
    known = batch_positives(batch.in0, batch.in1)
    expected = torch.eye(5, dtype=torch.bool)
    expected[0, 2] = expected[2, 0] = True  # in1 of pair 2 is a label of document 0, and back
    expected[1, 3] = expected[3, 1] = True  # in1 of pair 3 is pair 1's in1
    assert torch.equal(known, expected)


def test_batch_positives_follow_through_a_shared_row() -> None:
    # Pair 0 (a, x), pair 1 (a, y), pair 2 (b, y): (b, x) is not known, (a, y) is.
    batch = make_batch(dataset([[1], [1], [2]], [[10], [11], [11]]), torch.arange(3))
    known = batch_positives(batch.in0, batch.in1)
    assert known.tolist() == [[True, True, True], [True, True, True], [False, True, True]]


def test_batch_positives_with_grouped_in0_rows() -> None:
    # The grouped layout holds each distinct in0 once and in0_rows maps pairs to it.
    data = dataset([[1, 2], [1, 2], [3]], [[10], [11], [12]])
    group = torch.tensor([0, 0, 1])
    batch = make_batch(data, torch.arange(3), group)
    assert batch.in0_rows is not None
    known = batch_positives(batch.in0, batch.in1, batch.in0_rows)
    assert known.tolist() == [[True, True, False], [True, True, False], [False, False, True]]


def test_ranking_logits_mask_other_positives_but_never_the_pair_itself() -> None:
    batch = make_batch(dataset(IN0, IN1), torch.arange(5))
    margins = torch.arange(25, dtype=torch.float32).view(5, 5)
    logits = ranking_logits(margins, batch)
    assert torch.equal(logits.diagonal(), margins.diagonal())
    assert logits[0, 2] == -math.inf and logits[2, 0] == -math.inf
    assert logits[1, 3] == -math.inf and logits[3, 1] == -math.inf
    assert logits[4].isfinite().all()


def test_in_batch_step_is_the_cross_entropy_of_picking_the_own_in1() -> None:
    batch = make_batch(dataset([[1], [2], [3]], [[4], [5], [6]]), torch.arange(3))
    margins = torch.tensor([[2.0, 0.0, 1.0], [0.5, 0.0, 3.0], [0.0, 0.0, 1.0]])
    logits, targets, loss = in_batch_step(margins, batch)
    assert targets.tolist() == [0, 1, 2]
    expected = -(F.log_softmax(margins, dim=1).diagonal()).mean()
    assert loss.item() == pytest.approx(expected.item())
    assert (logits.argmax(dim=1) == targets).tolist() == [True, False, True]


def test_check_positives_names_the_first_other_label() -> None:
    check_positives(dataset([[1], [2]], [[3], [4]], [1, 1]))
    with pytest.raises(ClientError) as err:
        check_positives(dataset([[1], [2], [3]], [[3], [4], [5]], [1, 0, 0]))
    text = str(err.value)
    assert "in_batch_negatives=true trains on positive pairs only (label 1)" in text
    assert "2 record(s) with another label (the first is record 2, label 0)" in text
    assert "negative_sampling_rate" in text


def test_positives_only_keeps_the_positive_pairs() -> None:
    assert positives_only(None, "validation") is None
    data = dataset([[1], [2], [3], [4]], [[5], [6, 7], [8], [9]], [0, 1, 0, 1])
    kept = positives_only(data, "validation")
    assert kept is not None and len(kept) == 2
    assert kept.labels.tolist() == [1, 1]
    batch = make_batch(kept, torch.arange(2))
    assert batch.in0.ids.tolist() == [2, 4] and batch.in1.ids.tolist() == [6, 7, 9]
    same = dataset([[1]], [[2]])
    assert positives_only(same, "test") is same
    with pytest.raises(ClientError, match="the test channel by ranking its positive pairs"):
        positives_only(dataset([[1]], [[2]], [0]), "test")
