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
) -> Iterator[Batch]:
    """Batches over the whole dataset; shuffled when a generator is given, in order otherwise."""
    count = len(dataset)
    order = torch.randperm(count, generator=generator) if generator is not None else torch.arange(count)
    for start in range(0, count, batch_size):
        yield make_batch(dataset, order[start : start + batch_size])
