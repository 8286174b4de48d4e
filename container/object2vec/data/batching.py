"""Mini-batches: vectorized padding of flat sequences, shuffled with a seeded generator."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from object2vec.data.records import PairDataset, TokenSequences


@dataclass(frozen=True)
class Batch:
    in0: torch.Tensor  # (B, L0) int64, padded with 0 beyond len0
    len0: torch.Tensor  # (B,) int64
    in1: torch.Tensor  # (B, L1) int64
    len1: torch.Tensor  # (B,) int64
    labels: torch.Tensor  # (B,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device) -> Batch:
        if device.type == "cpu":
            return self
        return Batch(
            *(t.to(device, non_blocking=True) for t in (self.in0, self.len0, self.in1, self.len1, self.labels))
        )


def pad(sequences: TokenSequences, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The sequences at `index` as a (B, L) id matrix padded to the longest of them, and lengths.

    The pad id is 0, a real token in the user's vocabulary: the encoders mask by length, so the
    value never matters. L is at least 1 so that empty sequences still give a tensor.
    """
    lengths = sequences.lengths[index]  # (B,)
    width = max(int(lengths.max()), 1) if len(lengths) else 1
    positions = torch.arange(width)  # (L,)
    mask = positions < lengths[:, None]  # (B, L)
    if sequences.values.numel() == 0:
        return torch.zeros(mask.shape, dtype=torch.int64), lengths
    gather = torch.where(mask, sequences.offsets[index][:, None] + positions, 0)  # (B, L)
    return sequences.values[gather] * mask, lengths


def make_batch(dataset: PairDataset, index: torch.Tensor) -> Batch:
    in0, len0 = pad(dataset.in0, index)
    in1, len1 = pad(dataset.in1, index)
    return Batch(in0, len0, in1, len1, dataset.labels[index])


def iterate_batches(
    dataset: PairDataset,
    batch_size: int,
    generator: torch.Generator | None = None,
    bucket_width: int = 0,
) -> Iterator[Batch]:
    """Batches over the whole dataset; shuffled when a generator is given, in order otherwise.

    bucket_width > 0 groups records into length buckets first (see `bucket_batches`).
    """
    if bucket_width > 0:
        for index in bucket_batches(dataset, batch_size, bucket_width, generator):
            yield make_batch(dataset, index)
        return
    count = len(dataset)
    order = torch.randperm(count, generator=generator) if generator is not None else torch.arange(count)
    for start in range(0, count, batch_size):
        yield make_batch(dataset, order[start : start + batch_size])


def bucket_batches(
    dataset: PairDataset,
    batch_size: int,
    bucket_width: int,
    generator: torch.Generator | None = None,
) -> list[torch.Tensor]:
    """Record indices of each batch, bucketed by length: within a batch the in0 lengths differ by
    at most bucket_width, and so do the in1 lengths, so padding shrinks to under bucket_width + 1
    tokens per sequence.

    A bucket is a cell of the (len0, len1) grid with sides bucket_width + 1. Records are shuffled
    inside their bucket, each bucket is cut into batches (its last one may be smaller) and the
    batches are shuffled across buckets, all with `generator`; without one the order is fixed.
    """
    count = len(dataset)
    if count == 0:
        return []
    side = bucket_width + 1
    cell0 = dataset.in0.lengths // side  # (N,)
    cell1 = dataset.in1.lengths // side  # (N,)
    key = cell0 * (int(cell1.max()) + 1) + cell1  # (N,) one id per grid cell
    order = torch.randperm(count, generator=generator) if generator is not None else torch.arange(count)
    order = order[torch.sort(key[order], stable=True).indices]  # grouped by cell, shuffled inside
    _, sizes = torch.unique_consecutive(key[order], return_counts=True)  # (cells,)
    # Batch starts: every bucket start, plus every batch_size records inside a bucket.
    bucket_starts = torch.cumsum(sizes, 0) - sizes  # (cells,)
    per_bucket = (sizes + batch_size - 1) // batch_size  # (cells,) batches in each bucket
    first = torch.repeat_interleave(bucket_starts, per_bucket)  # (batches,)
    within = torch.arange(int(per_bucket.sum())) - torch.repeat_interleave(
        torch.cumsum(per_bucket, 0) - per_bucket, per_bucket
    )
    starts = first + within * batch_size  # (batches,)
    ends = torch.minimum(starts + batch_size, torch.repeat_interleave(bucket_starts + sizes, per_bucket))
    batches = torch.randperm(len(starts), generator=generator) if generator is not None else torch.arange(len(starts))
    return [order[int(starts[b]) : int(ends[b])] for b in batches.tolist()]
