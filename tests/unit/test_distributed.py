"""training/distributed.py: topology, batch slicing, the per-step agreement, rendezvous errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from object2vec.config import Hyperparameters
from object2vec.data.batching import Batch, Tokens
from object2vec.data.records import PairDataset, TokenSequences
from object2vec.environment import TrainingEnvironment
from object2vec.errors import ClientError
from object2vec.training.distributed import (
    BatchStream,
    Distributed,
    Split,
    Topology,
    _rendezvous_store,
    plan_topology,
    slice_batch,
)
from object2vec.training.metrics import MetricAccumulator
from object2vec.training.signals import StopSignal

CPU = torch.device("cpu")


def environment(tmp_path: Path, hosts: list[str], current: str, interface: str | None = None) -> TrainingEnvironment:
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    resource = {"current_host": current, "hosts": hosts}
    if interface:
        resource["network_interface_name"] = interface
    (config / "resourceconfig.json").write_text(json.dumps(resource))
    return TrainingEnvironment(tmp_path, {}, {}, current, hosts, num_gpus=0, num_cpus=2)


def hyperparameters(**extra: object) -> Hyperparameters:
    return Hyperparameters.from_dict({"enc0_vocab_size": 10, "enc0_max_seq_len": 3, **extra})


def test_topology_from_resourceconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OBJECT2VEC_MASTER_PORT", raising=False)
    monkeypatch.delenv("OBJECT2VEC_PROCESSES_PER_HOST", raising=False)
    topology = plan_topology(environment(tmp_path, ["algo-1", "algo-2", "algo-3"], "algo-2", "lo"), hyperparameters())
    assert topology.host_rank == 1 and topology.world_size == 3 and topology.processes_per_host == 1
    assert topology.backend == "gloo" and topology.master_port == 29500
    assert topology.network_interface == "lo"  # present on every Linux machine


def test_topology_overrides_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBJECT2VEC_PROCESSES_PER_HOST", "2")
    monkeypatch.setenv("OBJECT2VEC_MASTER_PORT", "31000")
    topology = plan_topology(environment(tmp_path, ["algo-1"], "algo-1", "no-such-nic"), hyperparameters(_num_gpus=0))
    assert (topology.processes_per_host, topology.world_size, topology.master_port) == (2, 2, 31000)
    assert topology.network_interface is None
    monkeypatch.setenv("OBJECT2VEC_PROCESSES_PER_HOST", "zero")
    with pytest.raises(ClientError, match="OBJECT2VEC_PROCESSES_PER_HOST='zero' must be a positive integer"):
        plan_topology(environment(tmp_path, ["algo-1"], "algo-1"), hyperparameters())
    with pytest.raises(ClientError, match="current_host 'algo-9' is not in hosts"):
        plan_topology(environment(tmp_path, ["algo-1"], "algo-9"), hyperparameters())


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
    def make(_size: int):  # noqa: ANN202
        return iter([batch(size) for size in sizes])

    return make


def test_stream_goes_round_again_while_another_shard_is_not_done() -> None:
    # This host's shard has 2 batches; the other host needs 3 steps: a second pass gives the third.
    job = FakeJob([(0, 0), (0, 0), (0, 0), (1, 0)])
    stream = BatchStream(job, lambda: passes([4, 4])(0), Split(1, 0), StopSignal(), 0)
    assert [len(b) for b in stream] == [4, 4, 4]
    assert stream.steps == 3 and not stream.stopped


def test_stream_stops_when_any_process_asks() -> None:
    job = FakeJob([(0, 0), (0, 1)])
    stream = BatchStream(job, lambda: passes([4, 4, 4])(0), Split(1, 0), StopSignal(), 0)
    assert len(list(stream)) == 1
    assert stream.stopped and stream.steps == 1


def test_single_process_stream_skips_steps_done_before_a_resume() -> None:
    single = Distributed.single(CPU)
    sizes = [5, 4, 3, 2]
    stream = single.batches(lambda size: passes(sizes)(size), 5, Split(1, 0), StopSignal(), skip=2)
    assert [len(b) for b in stream] == [3, 2]
    assert stream.steps == 4


def test_global_batch_is_shared_out_and_a_too_small_last_batch_dropped() -> None:
    job = Distributed(1, 2, 1, 1, CPU)
    job.agree = lambda flags: [flags[0] * 2, 0]  # type: ignore[method-assign] # both ranks in step
    asked: list[int] = []

    def make(size: int):  # noqa: ANN202
        asked.append(size)
        return iter([batch(6), batch(6), batch(1)])

    stream = job.batches(make, 6, Split(2, 1), StopSignal())
    assert [len(b) for b in stream] == [3, 3]
    assert asked == [6]  # the global mini-batch is mini_batch_size, split in two


def dataset(count: int) -> PairDataset:
    sequences = TokenSequences.from_lists([[i] for i in range(count)])
    return PairDataset(sequences, sequences, torch.arange(count))


def test_evaluation_shards() -> None:
    job = Distributed(rank=3, world_size=4, local_rank=1, local_size=2, device=CPU)
    assert job.shard(dataset(10), "FullyReplicated").labels.tolist() == [8, 9]
    assert job.shard(dataset(10), "ShardedByS3Key").labels.tolist() == [5, 6, 7, 8, 9]
    assert Distributed.single(CPU).shard(dataset(3), "FullyReplicated").labels.tolist() == [0, 1, 2]


def test_single_process_reduce_is_a_no_op() -> None:
    accumulator = MetricAccumulator(classification=True)
    accumulator.add(torch.tensor([[2.0, 0.0]]), torch.tensor([0]))
    Distributed.single(CPU).all_reduce_(accumulator)
    assert accumulator.count == 1 and accumulator.result()["accuracy"] == 1.0


def test_worker_that_cannot_reach_the_master_names_host_and_port() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        topology = Topology(("127.0.0.1", "localhost"), 1, 1, "cpu", port, 1.0)
        with pytest.raises(ClientError) as info:
            _rendezvous_store(topology, rank=1)
    assert str(info.value).startswith(
        f"host localhost could not reach the master host 127.0.0.1 on port {port} within 1 s"
    )


def test_master_name_that_never_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    topology = Topology(("no-such-host.invalid", "localhost"), 1, 1, "cpu", 29500, 0.5)
    with pytest.raises(ClientError, match="host localhost could not resolve the master host name no-such-host.invalid"):
        _rendezvous_store(topology, rank=1)
