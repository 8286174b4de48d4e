"""training/distributed.py: a one-process job runs no collective (several: tests/integration)."""

from __future__ import annotations

import torch

from object2vec.training.distributed import Distributed
from object2vec.training.metrics import MetricAccumulator

CPU = torch.device("cpu")


def test_single_process_reduce_is_a_no_op() -> None:
    accumulator = MetricAccumulator(classification=True)
    accumulator.add(torch.tensor([[2.0, 0.0]]), torch.tensor([0]))
    Distributed.single(CPU).all_reduce_(accumulator)
    assert accumulator.count == 1 and accumulator.result()["accuracy"] == 1.0


def test_one_process_agrees_with_itself_and_is_the_master() -> None:
    single = Distributed.single(CPU)
    assert not single.enabled and single.is_master and single.writes_host_files
    assert single.agree([1, 0]) == [1, 0] and single.agree_min(7) == 7
    model = torch.nn.Linear(2, 2)
    assert single.wrap(model) is model
