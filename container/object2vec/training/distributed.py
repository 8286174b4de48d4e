"""One training job over several processes: this process's place in it and the collectives it runs.

A job runs one process per GPU on each host, hosts from resourceconfig.json:
- training/topology.py plans where each process runs;
- training/processes.py starts a host's processes and supervises them;
- training/rendezvous.py joins them into one torch.distributed group (NCCL between GPUs, gloo on
  the CPU);
- training/sharding.py shares out the records and keeps the processes in step;
- this module is one process's view of the group: its rank and the collectives it runs.
The model is wrapped in DistributedDataParallel, so every process holds the same weights after
every step.

In-batch negatives rank each pair's in1 against those of the whole global mini-batch: the
processes gather one another's in1 encodings (`gather_rows`, gradients flowing back to their
owners), so a job of N processes learns what one process with the same mini_batch_size would.

Metrics are sums and counts, all-reduced, so the lines the master writes are those of the whole
job; other processes write none. Stop requests are agreed on at every step (one tiny all-reduce
on the CPU), so that every process stops after the same step and none waits in a collective.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as functional_collectives
from torch import nn

from object2vec.training.metrics import MetricAccumulator


class Distributed:
    """This process's part of the job. With one process in all it runs no collective at all."""

    def __init__(
        self,
        rank: int,
        world_size: int,
        local_rank: int,
        local_size: int,
        device: torch.device,
        control: Any = None,  # the gloo group for CPU-side agreement (the default group on CPU)
    ) -> None:
        self.rank = rank
        self.world_size = world_size
        self.local_rank = local_rank
        self.local_size = local_size
        self.device = device
        self.control = control

    @classmethod
    def single(cls, device: torch.device) -> Distributed:
        return cls(0, 1, 0, 1, device)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_master(self) -> bool:
        """Writes the model, the metric lines and the checkpoints of the job."""
        return self.rank == 0

    @property
    def writes_host_files(self) -> bool:
        """One process per host writes that host's checkpoints."""
        return self.local_rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to train through: DistributedDataParallel when there are several processes."""
        if not self.enabled:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def all_reduce_(self, accumulator: MetricAccumulator) -> None:
        """Sums and counts of every process, in place, so `result()` gives the job's metrics."""
        if not self.enabled:
            return
        if accumulator.count == 0:  # an empty shard still needs the same keys as the others
            width = 2 if accumulator.classification else 1
            labels = torch.zeros(0, dtype=torch.int64 if accumulator.classification else torch.float32)
            accumulator.add(torch.zeros(0, width), labels)
        names = sorted(accumulator.sums)
        values = torch.tensor(
            [float(accumulator.count), *(float(accumulator.sums[name]) for name in names)], dtype=torch.float64
        )
        dist.all_reduce(values, group=self.control)
        accumulator.count = int(values[0])
        accumulator.sums = {name: values[i + 1] for i, name in enumerate(names)}

    def agree(self, flags: list[int]) -> list[int]:
        """Element-wise sums of small integer flags over all processes."""
        if not self.enabled:
            return flags
        values = torch.tensor(flags, dtype=torch.int64)
        dist.all_reduce(values, group=self.control)
        return [int(v) for v in values]

    def agree_min(self, value: int) -> int:
        if not self.enabled:
            return value
        values = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(values, op=dist.ReduceOp.MIN, group=self.control)
        return int(values[0])

    def agree_max(self, values: list[int]) -> list[int]:
        """Element-wise maxima of small integers over all processes."""
        if not self.enabled:
            return values
        tensor = torch.tensor(values, dtype=torch.int64)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self.control)
        return [int(v) for v in tensor]

    def gather_rows(self, rows: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Every process's `rows` (n_p, ...) concatenated in rank order, (sum of n_p, ...), and the
        index of this process's first row there. The counts n_p may differ, the other dimensions
        not. Differentiable: the gradient of each process's rows comes back to it, summed over the
        processes that used them (DDP then averages the parameters' gradients as usual)."""
        if not self.enabled:
            return rows, 0
        counts = torch.zeros(self.world_size, dtype=torch.int64)  # (W,) on the CPU, as the flags
        counts[self.rank] = len(rows)
        dist.all_reduce(counts, group=self.control)
        sizes = counts.tolist()
        most = max(sizes)
        padded = torch.cat([rows, rows.new_zeros(most - len(rows), *rows.shape[1:])])  # (most, ...)
        # The functional collective (torch.distributed.nn.functional.all_gather's named successor)
        # has a backward: a reduce-scatter of the gradients to the processes that own the rows.
        gathered = functional_collectives.all_gather_single_autograd(padded, 0, dist.group.WORLD)  # (W * most, ...)
        gathered = functional_collectives.wait_tensor(gathered)
        parts = [gathered[rank * most : rank * most + size] for rank, size in enumerate(sizes)]
        return torch.cat(parts), sum(sizes[: self.rank])

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier(group=self.control)

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    def __enter__(self) -> Distributed:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
