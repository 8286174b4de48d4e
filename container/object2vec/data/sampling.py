"""Negative sampling: for every record, `rate` extra records that pair its in0 with another in1,
labelled 0, drawn afresh each epoch from a seeded generator.

This is how Object2Vec learns from positive-only data (num_classes=2, every label 1): the
negatives teach it what an unlikely pair looks like. The extra records are views: they share the
token storage of the dataset and cost two index entries each, not a copy of their sequences.

How a negative is drawn, for a record (a, b):
- the partner is drawn uniformly from the *distinct* in1 sequences of the data (records with equal
  in1 tokens count once), so a frequent in1 (a popular label or item) is not drawn more often than
  a rare one; the model keeps the frequency of each in1 among the positives as its prior, which is
  what ranking by score needs (Precision@1 of a multilabel classifier, top-k items);
- a pair that occurs among the records is never a negative: records with equal in0 tokens are one
  object (one document with several labels, one user with several items), and none of the in1
  values it is paired with in the data is drawn for it. So a multilabel training file needs only
  its positive (document, label) records: the trainer draws the other labels of each document;
- such a draw is redrawn (up to MAX_REDRAWS times); an object paired with (nearly) every in1 in the
  data can get fewer than `rate` negatives.

Label 0 is the negative label in every case: class 0 for softmax (with num_classes > 2, make
class 0 your "unrelated" class) and the value 0.0 for regression (output_layer=mean_squared_error,
e.g. "no interaction" in a rating scale). Only training data is augmented; validation and test
channels are scored as given.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass

import numpy as np
import torch

from object2vec.data.records import PairDataset, TokenSequences

logger = logging.getLogger(__name__)

NEGATIVE_LABEL = 0
MAX_REDRAWS = 10  # rounds of redrawing the negatives that hit a pair of the data; the rest are dropped
# Odd 64-bit constants of the hash below (splitmix64's).
_GOLDEN, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def take(sequences: TokenSequences, index: torch.Tensor) -> TokenSequences:
    """The sequences at `index` as a view over the same token values (no copy of the tokens).

    The result's offsets are not a running sum, which batching (pad) and `select` accept; do
    not call `truncated` on it.
    """
    return TokenSequences(sequences.values, sequences.offsets[index], sequences.lengths[index])


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(_MIX1)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(_MIX2)
    return x ^ (x >> np.uint64(31))


def content_keys(sequences: TokenSequences) -> np.ndarray:
    """(N,) uint64: a hash of each sequence's tokens in order; equal sequences get equal keys."""
    lengths = sequences.lengths.numpy()
    starts = np.cumsum(lengths) - lengths  # (N,) start of each sequence among the gathered tokens
    position = np.arange(int(lengths.sum())) - np.repeat(starts, lengths)  # (T,) index inside its sequence
    tokens = sequences.values.numpy()[np.repeat(sequences.offsets.numpy(), lengths) + position]  # (T,)
    with np.errstate(over="ignore"):
        mixed = _mix(tokens.astype(np.uint64) * np.uint64(_GOLDEN) + _mix(position.astype(np.uint64) + np.uint64(1)))
        running = np.concatenate([np.zeros(1, np.uint64), np.cumsum(mixed, dtype=np.uint64)])  # (T + 1,)
        sums = running[starts + lengths] - running[starts]  # (N,) wrapping segment sums
        return _mix(sums + lengths.astype(np.uint64) * np.uint64(_GOLDEN))


@dataclass(frozen=True)
class PairIndex:
    """The distinct in0 and in1 objects of a dataset and which pairs of them occur."""

    object0: torch.Tensor  # (N,) int64: the distinct in0 each record has (0 .. count0 - 1)
    first1: torch.Tensor  # (count1,) int64: a record holding each distinct in1
    count1: int
    pairs: torch.Tensor  # (P,) int64 sorted: object0 * count1 + object1 of every record

    @classmethod
    def of(cls, dataset: PairDataset) -> PairIndex:
        _, object0 = np.unique(content_keys(dataset.in0), return_inverse=True)
        _, first1, object1 = np.unique(content_keys(dataset.in1), return_index=True, return_inverse=True)
        count1 = len(first1)
        pairs = np.unique(object0.astype(np.int64) * count1 + object1)
        return cls(
            torch.from_numpy(object0.astype(np.int64)), torch.from_numpy(first1), count1, torch.from_numpy(pairs)
        )

    def draw(self, own: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """For the records `own` (M,), partner records whose in1 never pairs with their in0 in the
        data: (kept (M,) bool, partner (M,) int64; partner is meaningful where kept)."""
        base = self.object0[own] * self.count1  # (M,)
        drawn = torch.randint(0, self.count1, own.shape, generator=generator)  # (M,) distinct in1 ids
        clash = self.occurs(base + drawn)
        for _ in range(MAX_REDRAWS):
            where = clash.nonzero().squeeze(1)
            if where.numel() == 0:
                break
            drawn[where] = torch.randint(0, self.count1, where.shape, generator=generator)
            clash[where] = self.occurs(base[where] + drawn[where])
        return ~clash, self.first1[drawn]

    def occurs(self, pairs: torch.Tensor) -> torch.Tensor:
        """(M,) bool: which of these pair ids occur in the data (a binary search: faster than isin)."""
        found = torch.searchsorted(self.pairs, pairs).clamp(max=len(self.pairs) - 1)
        return self.pairs[found] == pairs


def with_negatives(dataset: PairDataset, rate: int, generator: torch.Generator) -> PairDataset:
    """The dataset followed by up to rate * len(dataset) negatives (shuffling is the batcher's job)."""
    count = len(dataset)
    if rate == 0 or count < 2:
        return dataset
    own = torch.arange(count).repeat_interleave(rate)  # (count * rate,) in0 of each negative
    kept, partners = _index_of(dataset).draw(own, generator)
    own, partners = own[kept], partners[kept]
    if len(own) < len(kept):
        logger.debug(
            "%d of %d negatives dropped: their in0 pairs with almost every in1", len(kept) - len(own), len(kept)
        )
    index0 = torch.cat([torch.arange(count), own])
    index1 = torch.cat([torch.arange(count), partners])
    negatives = torch.full((len(own),), NEGATIVE_LABEL, dtype=dataset.labels.dtype)
    return PairDataset(
        in0=take(dataset.in0, index0),
        in1=take(dataset.in1, index1),
        labels=torch.cat([dataset.labels, negatives]),
    )


# The last dataset's PairIndex: the trainer passes the same dataset every epoch (File mode), and
# hashing its sequences again each epoch would cost as much as the draws. A weak reference, so the
# memo never keeps a dataset alive.
_memo: tuple[weakref.ref[PairDataset], PairIndex] | None = None


def _index_of(dataset: PairDataset) -> PairIndex:
    global _memo
    if _memo is None or _memo[0]() is not dataset:
        _memo = (weakref.ref(dataset), PairIndex.of(dataset))
    return _memo[1]


def describe_negative_sampling(rate: int, classification: bool, num_classes: int, grouped: bool = False) -> str:
    """The log line that says what the negatives are, including the cases to double-check."""
    text = (
        f"Negative sampling: {rate} negative(s) per training record, drawn afresh each epoch from the distinct "
        "in1 values (never a pair that occurs in the data), label 0"
    )
    if grouped:
        text += "; each record beside its negatives in a mini-batch, its in0 encoded once for all of them"
    if not classification:
        return text + " (regression: the value 0.0 marks an unlikely pair)"
    if num_classes > 2:
        return text + f" (num_classes={num_classes}: class 0 must be the 'unrelated' class)"
    return text
