"""training/sharding.py: batch slicing, the per-step agreement, evaluation shards."""

from __future__ import annotations

import torch

from object2vec.data.batching import Batch, Tokens
from object2vec.data.records import PairDataset, TokenSequences
from object2vec.training.distributed import Distributed
from object2vec.training.sharding import BatchStream, Split, shard, slice_batch, split_of
from object2vec.training.signals import StopSignal

CPU = torch.device("cpu")


def batch(rows: int) -> Batch:
    """Record r has in0 = [r] * (r % 3) (some empty) and in1 = [100 + r, 200 + r]."""
    in0 = Tokens.from_lists([[r] * (r % 3) for r in range(rows)])
    in1 = Tokens.from_lists([[100 + r, 200 + r] for r in range(rows)])
    return Batch(in0, in1, torch.arange(rows))


def test_slices_cover_the_batch_once() -> None:
    parts = [slice_batch(batch(7), 3, index) for index in range(3)]
    assert [len(part) for part in parts] == [3, 2, 2]
    assert torch.equal(torch.cat([part.labels for part in parts]), torch.arange(7))
    expected = batch(7)
    for part, first in zip(parts, [0, 3, 5], strict=True):
        for side in (0, 1):
            whole, sliced = expected.side(side), part.side(side)
            rows = range(first, first + len(part))
            assert sliced.lengths.tolist() == [int(whole.lengths[r]) for r in rows]
            assert sliced.ids.tolist() == [
                int(i) for r in rows for i in whole.ids[whole.offsets[r] : whole.offsets[r] + whole.lengths[r]]
            ]
            assert torch.equal(sliced.offsets, torch.cumsum(sliced.lengths, 0) - sliced.lengths)
            assert torch.equal(sliced.rows, torch.repeat_interleave(torch.arange(len(part)), sliced.lengths))


class FakeJob(Distributed):
    """Rank 0 of two; the other rank's flags are scripted (exhausted, stop) per step."""

    def __init__(self, others: list[tuple[int, int]]) -> None:
        super().__init__(0, 2, 0, 1, CPU)
        self.others = others

    def agree(self, flags: list[int]) -> list[int]:
        other = self.others.pop(0)
        return [flags[0] + other[0], flags[1] + other[1]]


def passes(sizes: list[int]):  # noqa: ANN201 - a factory of batch iterators
    def make():  # noqa: ANN202
        return iter([batch(size) for size in sizes])

    return make


def test_stream_goes_round_again_while_another_shard_is_not_done() -> None:
    # This host's shard has 2 batches; the other host needs 3 steps: a second pass gives the third.
    job = FakeJob([(0, 0), (0, 0), (0, 0), (1, 0)])
    stream = BatchStream(job, passes([4, 4]), Split(1, 0), StopSignal(), 0)
    assert [len(b) for b in stream] == [4, 4, 4]
    assert stream.steps == 3 and not stream.stopped


def test_stream_stops_when_any_process_asks() -> None:
    job = FakeJob([(0, 0), (0, 1)])
    stream = BatchStream(job, passes([4, 4, 4]), Split(1, 0), StopSignal(), 0)
    assert len(list(stream)) == 1
    assert stream.stopped and stream.steps == 1


def test_single_process_stream_skips_steps_done_before_a_resume() -> None:
    single = Distributed.single(CPU)
    sizes = [5, 4, 3, 2]
    stream = BatchStream(single, passes(sizes), Split(1, 0), StopSignal(), skip=2)
    assert [len(b) for b in stream] == [3, 2]
    assert stream.steps == 4


def test_global_batch_is_shared_out_and_a_too_small_last_batch_dropped() -> None:
    job = Distributed(1, 2, 1, 1, CPU)
    job.agree = lambda flags: [flags[0] * 2, 0]  # type: ignore[method-assign] # both ranks in step
    split = split_of(job, "FullyReplicated")
    assert split == Split(2, 1)
    stream = BatchStream(job, lambda: iter([batch(6), batch(6), batch(1)]), split, StopSignal(), 0)
    assert [len(b) for b in stream] == [3, 3]


def dataset(count: int) -> PairDataset:
    sequences = TokenSequences.from_lists([[i] for i in range(count)])
    return PairDataset(sequences, sequences, torch.arange(count))


def test_evaluation_shards() -> None:
    job = Distributed(rank=3, world_size=4, local_rank=1, local_size=2, device=CPU)
    assert shard(job, dataset(10), "FullyReplicated").labels.tolist() == [8, 9]
    assert shard(job, dataset(10), "ShardedByS3Key").labels.tolist() == [5, 6, 7, 8, 9]
    assert shard(Distributed.single(CPU), dataset(3), "FullyReplicated").labels.tolist() == [0, 1, 2]


def test_channel_copies_are_shared_by_the_job_or_by_the_host() -> None:
    job = Distributed(rank=3, world_size=4, local_rank=1, local_size=2, device=CPU)
    assert split_of(job, "FullyReplicated") == Split(4, 3)
    assert split_of(job, "ShardedByS3Key") == Split(2, 1)
