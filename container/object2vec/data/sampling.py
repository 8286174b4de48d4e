"""Negative sampling: for every record, `rate` extra records that pair its in0 with the in1 of a
random other record, labelled 0, drawn afresh each epoch from a seeded generator.

This is how Object2Vec learns from positive-only data (num_classes=2, every label 1): the
negatives teach it what an unlikely pair looks like. The extra records are views: they share the
token storage of the dataset and cost two index entries each, not a copy of their sequences.

Label 0 is the negative label in every case: class 0 for softmax (with num_classes > 2, make
class 0 your "unrelated" class) and the value 0.0 for regression (output_layer=mean_squared_error,
e.g. "no interaction" in a rating scale). The partner is another record, never the same one,
but its in1 may equal the record's own in1 (a repeated item): such a negative is noise, as in
any sampled-negative method, and matters little unless a few in1 values dominate the data.
Only training data is augmented; validation and test channels are scored as given.
"""

from __future__ import annotations

import logging

import torch

from object2vec.data.records import PairDataset, TokenSequences

logger = logging.getLogger(__name__)

NEGATIVE_LABEL = 0


def take(sequences: TokenSequences, index: torch.Tensor) -> TokenSequences:
    """The sequences at `index` as a view over the same token values (no copy of the tokens).

    The result's offsets are not a running sum, which batching (pad) and `select` accept; do
    not call `truncated` on it.
    """
    return TokenSequences(sequences.values, sequences.offsets[index], sequences.lengths[index])


def draw_partners(count: int, rate: int, generator: torch.Generator) -> torch.Tensor:
    """(count, rate) int64: for record i, `rate` uniform draws from the other count - 1 records."""
    if count < 2:
        raise ValueError("negative sampling needs at least two records")
    draws = torch.randint(0, count - 1, (count, rate), generator=generator)  # over count - 1 others
    return draws + (draws >= torch.arange(count)[:, None]).long()  # skip i itself


def with_negatives(dataset: PairDataset, rate: int, generator: torch.Generator) -> PairDataset:
    """The dataset followed by rate * len(dataset) negatives (shuffling is the batcher's job)."""
    count = len(dataset)
    if rate == 0 or count < 2:
        return dataset
    partners = draw_partners(count, rate, generator).reshape(-1)  # (count * rate,)
    own = torch.arange(count).repeat_interleave(rate)  # (count * rate,) in0 of each negative
    index0 = torch.cat([torch.arange(count), own])
    index1 = torch.cat([torch.arange(count), partners])
    negatives = torch.full((count * rate,), NEGATIVE_LABEL, dtype=dataset.labels.dtype)
    return PairDataset(
        in0=take(dataset.in0, index0),
        in1=take(dataset.in1, index1),
        labels=torch.cat([dataset.labels, negatives]),
    )


def describe_negative_sampling(rate: int, classification: bool, num_classes: int) -> str:
    """The log line that says what the negatives are, including the cases to double-check."""
    text = f"Negative sampling: {rate} negative(s) per training record, drawn afresh each epoch, label 0"
    if not classification:
        return text + " (regression: the value 0.0 marks an unlikely pair)"
    if num_classes > 2:
        return text + f" (num_classes={num_classes}: class 0 must be the 'unrelated' class)"
    return text
