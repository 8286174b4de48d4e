"""Which records each process trains and evaluates on, and the per-step agreement that keeps them in step.

A channel that every host holds in full (S3DistributionType=FullyReplicated) is split between all
processes: every process draws the same shuffled order (same seed) and takes its own slice of
each global mini-batch (data.batching.group_batch_size), so a job on W processes takes the same
optimizer steps as a job on one (up to the order of floating-point sums). A ShardedByS3Key
channel is used as given: each host's processes split that host's records, and a host that runs
out first starts another pass until every host has finished one (the steps must match, since
each one is a collective). Evaluation channels are split in contiguous parts; their metrics are
all-reduced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from object2vec.data.batching import Batch
from object2vec.data.records import PairDataset
from object2vec.errors import ClientError
from object2vec.training.distributed import Distributed
from object2vec.training.signals import StopSignal

FULLY_REPLICATED = "FullyReplicated"


@dataclass(frozen=True)
class Split:
    """The processes that share one copy of a channel, and this process's place among them."""

    size: int
    index: int


def split_of(dist: Distributed, distribution: str) -> Split:
    """The processes that share this process's copy of a channel with this S3DistributionType."""
    if distribution == FULLY_REPLICATED:
        return Split(dist.world_size, dist.rank)
    return Split(dist.local_size, dist.local_rank)


def shard(dist: Distributed, dataset: PairDataset, distribution: str) -> PairDataset:
    """This process's contiguous part of an evaluation channel (metrics are all-reduced)."""
    split = split_of(dist, distribution)
    if split.size == 1:
        return dataset
    index = torch.tensor_split(torch.arange(len(dataset)), split.size)[split.index]
    return PairDataset(dataset.in0.select(index), dataset.in1.select(index), dataset.labels[index])


class BatchStream:
    """Iterates this process's slices of the global mini-batches, agreeing with the others each step.

    Before every step all processes sum two flags: "I have been through my shard" and "a stop
    was requested". The epoch ends when every process has been through its shard once; one that
    finishes early (a smaller ShardedByS3Key shard) goes round again meanwhile; any stop request
    stops all of them after the same step. `steps` counts the slices handed out (skipped ones
    included); `stopped` tells the caller that the epoch was cut short.
    """

    def __init__(
        self, dist_: Distributed, new_pass: Callable[[], Iterator[Batch]], split: Split, stop: StopSignal, skip: int
    ) -> None:
        self.dist = dist_
        self.new_pass = new_pass
        self.split = split
        self.stop = stop
        self.skip = skip
        self.steps = 0
        self.stopped = False

    def __iter__(self) -> Iterator[Batch]:
        current = self._slices()
        finished = False  # this process has been through its whole shard once
        for _ in range(self.skip):  # resuming mid-epoch: the same order, minus the steps done
            if next(current, None) is None:
                finished, current = True, self._slices()
                next(current, None)
            self.steps += 1
        while True:
            batch = next(current, None)
            finished = finished or batch is None
            done, stops = self.dist.agree([int(finished), int(bool(self.stop.requested))])
            if stops:
                self.stopped = True
                return
            if done == self.dist.world_size:
                return
            if batch is None:  # others have not finished theirs: go round this shard again
                current = self._slices()
                batch = next(current, None)
                if batch is None:
                    raise ClientError("a process has no training records: every host needs some")
            self.steps += 1
            yield batch

    def _slices(self) -> Iterator[Batch]:
        for batch in self.new_pass():
            if self.split.size == 1:
                yield batch
            elif len(batch) >= self.split.size:  # a last batch too small to share is dropped
                yield slice_batch(batch, self.split.size, self.split.index)


def slice_batch(batch: Batch, parts: int, index: int) -> Batch:
    """Rows of part `index` of `parts` near-equal contiguous parts."""
    rows = torch.tensor_split(torch.arange(len(batch)), parts)[index]
    return batch.narrow(int(rows[0]), len(rows))
