"""One training job over several processes: one per GPU on each host, hosts from resourceconfig.json.

The processes form one torch.distributed group (NCCL between GPUs, gloo on the CPU). The model is
wrapped in DistributedDataParallel, so every process holds the same weights after every step.

Data. A channel that every host holds in full (S3DistributionType=FullyReplicated) is split
between all processes: every process draws the same shuffled order (same seed) and takes its own
slice of each global mini-batch of `mini_batch_size` records, so a job on W processes takes the
same optimizer steps as a job on one (up to the order of floating-point sums). A ShardedByS3Key
channel is used as given: each host's processes split that host's records, and a host that runs
out first starts another pass until every host has finished one (the steps must match, since
each one is a collective).

Metrics are sums and counts, all-reduced, so the lines the master writes are those of the whole
job; other processes write none. Stop requests are agreed on at every step (one tiny all-reduce
on the CPU), so that every process stops after the same step and none waits in a collective.

Rendezvous: hosts[0] is the master; its TCP store listens on OBJECT2VEC_MASTER_PORT (default
29500). A host waits at most OBJECT2VEC_RENDEZVOUS_TIMEOUT seconds (default 600: SageMaker
starts hosts minutes apart) to resolve and reach it, then fails with a ClientError naming the
host and port.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import queue
import signal
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from object2vec.config import Hyperparameters
from object2vec.data.batching import Batch
from object2vec.data.records import PairDataset
from object2vec.environment import TrainingEnvironment
from object2vec.errors import AlgorithmError, ClientError, TrainingStopped
from object2vec.training import metrics
from object2vec.training.metrics import MetricAccumulator
from object2vec.training.signals import StopSignal

logger = logging.getLogger(__name__)

MASTER_PORT_ENV = "OBJECT2VEC_MASTER_PORT"
RENDEZVOUS_TIMEOUT_ENV = "OBJECT2VEC_RENDEZVOUS_TIMEOUT"
# Processes per host; by default one per GPU used. Setting it on a CPU host runs that many gloo
# processes, which is how the multi-GPU code path is tested on machines without GPUs.
PROCESSES_PER_HOST_ENV = "OBJECT2VEC_PROCESSES_PER_HOST"
DEFAULT_MASTER_PORT = 29500
DEFAULT_RENDEZVOUS_TIMEOUT = 600.0
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)  # one step or evaluation, never a whole epoch
FAILURE_GRACE_SECONDS = 30.0  # after one local process fails, how long the others get to end
FULLY_REPLICATED = "FullyReplicated"


@dataclass(frozen=True)
class Topology:
    """Where every process of the job runs; the same on every host."""

    hosts: tuple[str, ...]
    host_rank: int  # index of this host in hosts; hosts[0] is the master
    processes_per_host: int
    device_type: str  # "cuda" | "cpu"
    master_port: int
    rendezvous_timeout: float  # seconds
    network_interface: str | None = None  # from resourceconfig.json, when this machine has it

    @property
    def world_size(self) -> int:
        return len(self.hosts) * self.processes_per_host

    @property
    def backend(self) -> str:
        return "nccl" if self.device_type == "cuda" else "gloo"


def plan_topology(env: TrainingEnvironment, hp: Hyperparameters) -> Topology:
    """Processes per host from _num_gpus and the visible GPUs; hosts and rank from resourceconfig.json."""
    if env.current_host not in env.hosts:
        raise ClientError(f"resourceconfig.json: current_host {env.current_host!r} is not in hosts {env.hosts}")
    gpus = torch.cuda.device_count() if hp.num_gpus != 0 else 0
    if hp.num_gpus is not None and hp.num_gpus > gpus:
        if gpus:
            logger.warning("_num_gpus=%d but only %d GPU(s) are visible: using %d", hp.num_gpus, gpus, gpus)
        elif hp.num_gpus:
            logger.warning("_num_gpus=%d but no GPU is visible: training on the CPU", hp.num_gpus)
    used = gpus if hp.num_gpus is None else min(hp.num_gpus, gpus)
    processes = max(used, 1)
    override = os.environ.get(PROCESSES_PER_HOST_ENV)
    if override:
        processes = _positive_int(PROCESSES_PER_HOST_ENV, override)
        if used and processes > used:
            raise ClientError(f"{PROCESSES_PER_HOST_ENV}={processes} is more than the {used} GPU(s) in use")
    if used and processes * len(env.hosts) > 1 and hp.token_embedding_storage_type == "row_sparse":
        # NCCL has no all-reduce of sparse tensors, which DDP would need for these gradients.
        raise ClientError(
            "token_embedding_storage_type=row_sparse trains on one GPU only: set _num_gpus=1 with "
            "instance_count=1, or use token_embedding_storage_type=dense on several GPUs"
        )
    return Topology(
        hosts=tuple(env.hosts),
        host_rank=env.hosts.index(env.current_host),
        processes_per_host=processes,
        device_type="cuda" if used else "cpu",
        master_port=_positive_int(MASTER_PORT_ENV, os.environ.get(MASTER_PORT_ENV) or DEFAULT_MASTER_PORT),
        rendezvous_timeout=float(os.environ.get(RENDEZVOUS_TIMEOUT_ENV) or DEFAULT_RENDEZVOUS_TIMEOUT),
        network_interface=_network_interface(env.base_dir),
    )


@dataclass(frozen=True)
class Split:
    """The processes that share one copy of a channel, and this process's place among them."""

    size: int
    index: int


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

    def split(self, distribution: str) -> Split:
        if distribution == FULLY_REPLICATED:
            return Split(self.world_size, self.rank)
        return Split(self.local_size, self.local_rank)

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to train through: DistributedDataParallel when there are several processes."""
        if not self.enabled:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def shard(self, dataset: PairDataset, distribution: str) -> PairDataset:
        """This process's contiguous part of an evaluation channel (metrics are all-reduced)."""
        split = self.split(distribution)
        if split.size == 1:
            return dataset
        index = torch.tensor_split(torch.arange(len(dataset)), split.size)[split.index]
        return PairDataset(dataset.in0.select(index), dataset.in1.select(index), dataset.labels[index])

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

    def batches(
        self,
        make_pass: Callable[[int], Iterator[Batch]],
        mini_batch_size: int,
        split: Split,
        stop: StopSignal,
        skip: int = 0,
    ) -> BatchStream:
        """This process's slices of one epoch of global mini-batches; see BatchStream."""
        # The records of one step across the job: mini_batch_size, shared out by processes.
        group_batch = max(math.ceil(mini_batch_size * split.size / self.world_size), split.size)
        return BatchStream(self, lambda: make_pass(group_batch), split, stop, skip)

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


class BatchStream:
    """Iterates this process's slices of the global mini-batches, agreeing with the others each step.

    Before every step all processes sum two flags: "I have been through my shard" and "a stop
    was requested". The epoch ends when every process has been through its shard once; one that
    finishes early (a smaller ShardedByS3Key shard) goes round again meanwhile; any stop request
    stops all of them after the same step. `steps` counts the slices handed out (skipped ones included); `stopped`
    tells the caller that the epoch was cut short.
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


# ---------------------------------------------------------------------------------------------
# Rendezvous


def connect(topology: Topology, local_rank: int) -> Distributed:
    """Join the job's process group (nothing to join for a one-process job)."""
    if topology.device_type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if topology.world_size == 1:
        return Distributed.single(device)
    rank = topology.host_rank * topology.processes_per_host + local_rank
    _set_interface(topology.network_interface)
    store = _rendezvous_store(topology, rank)
    dist.init_process_group(
        topology.backend, store=store, rank=rank, world_size=topology.world_size, timeout=COLLECTIVE_TIMEOUT
    )
    # NCCL collectives run on the GPU; the per-step flags and metric sums stay on the CPU.
    control = dist.new_group(backend="gloo") if topology.backend == "nccl" else None
    if rank != 0:
        metrics.logger.disabled = True  # the master writes the job's metric lines, once
    logger.info(
        "Joined the job as rank %d of %d (host %s, local rank %d, %s on %s)",
        rank,
        topology.world_size,
        topology.hosts[topology.host_rank],
        local_rank,
        topology.backend,
        device,
    )
    return Distributed(rank, topology.world_size, local_rank, topology.processes_per_host, device, control)


def _rendezvous_store(topology: Topology, rank: int) -> dist.TCPStore:
    master, port = topology.hosts[0], topology.master_port
    host = topology.hosts[topology.host_rank]
    timeout = topology.rendezvous_timeout
    deadline = time.monotonic() + timeout
    # One host: its processes meet on the loopback (its own name need not resolve).
    address = "127.0.0.1" if len(topology.hosts) == 1 else _resolve(master, deadline, host, timeout)
    if rank != 0:
        _wait_for_port(address, port, deadline, host, master, timeout)
    remaining = datetime.timedelta(seconds=max(deadline - time.monotonic(), 1.0))
    try:
        store = dist.TCPStore(address, port, topology.world_size, rank == 0, remaining, wait_for_workers=False)
    except (RuntimeError, OSError) as err:
        if rank == 0:
            raise ClientError(
                f"the master host {master} cannot listen on port {port}: {err}; set {MASTER_PORT_ENV} to a free port"
            ) from err
        raise _unreachable(host, master, port, timeout, str(err)) from err
    store.set(f"object2vec/joined/{rank}", host)
    if rank == 0:
        _wait_for_everyone(store, topology, deadline, timeout)
    return store


def _resolve(name: str, deadline: float, host: str, timeout: float) -> str:
    """The master's address; names may take a while to resolve after a host starts."""
    while True:
        try:
            return socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)[0][4][0]
        except OSError as err:
            if time.monotonic() >= deadline:
                raise ClientError(
                    f"host {host} could not resolve the master host name {name} within {timeout:.0f} s ({err}): "
                    "every host in resourceconfig.json must resolve the others' names"
                ) from err
            time.sleep(1.0)


def _wait_for_port(address: str, port: int, deadline: float, host: str, master: str, timeout: float) -> None:
    last = ""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=2.0):
                return
        except OSError as err:
            last = str(err)
            time.sleep(0.5)
    raise _unreachable(host, master, port, timeout, last)


def _unreachable(host: str, master: str, port: int, timeout: float, reason: str) -> ClientError:
    return ClientError(
        f"host {host} could not reach the master host {master} on port {port} within {timeout:.0f} s "
        f"({reason or 'no answer'}): the hosts of a job must reach each other on that port (same VPC "
        f"subnet, a security group that allows traffic between its instances); locally, set "
        f"{MASTER_PORT_ENV} or {RENDEZVOUS_TIMEOUT_ENV}"
    )


def _wait_for_everyone(store: dist.TCPStore, topology: Topology, deadline: float, timeout: float) -> None:
    keys = [f"object2vec/joined/{rank}" for rank in range(topology.world_size)]
    while True:
        missing = [rank for rank, key in enumerate(keys) if not store.check([key])]
        if not missing:
            return
        if time.monotonic() >= deadline:
            hosts = sorted({topology.hosts[rank // topology.processes_per_host] for rank in missing})
            raise ClientError(
                f"the master host {topology.hosts[0]} waited {timeout:.0f} s on port {topology.master_port} "
                f"for host(s) {', '.join(hosts)}, which did not join: check that they started and can "
                "reach the master on that port"
            )
        time.sleep(0.2)


def _set_interface(name: str | None) -> None:
    """Use resourceconfig.json's network interface for gloo and NCCL unless told otherwise."""
    if not name:
        return
    for variable in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
        os.environ.setdefault(variable, name)


def _network_interface(base_dir: Path) -> str | None:
    import json

    path = base_dir / "input" / "config" / "resourceconfig.json"
    try:
        name = json.loads(path.read_text()).get("network_interface_name")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(name, str) and name and Path("/sys/class/net", name).exists():
        return name
    return None


def _positive_int(name: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise ClientError(f"{name}={value!r} must be a positive integer")
    return number


# ---------------------------------------------------------------------------------------------
# Several processes on one host


ProcessTarget = Callable[[TrainingEnvironment, StopSignal, Topology, int], None]
OUTCOMES = {"ClientError": ClientError, "TrainingStopped": TrainingStopped, "AlgorithmError": AlgorithmError}


def run_local_processes(target: ProcessTarget, env: TrainingEnvironment, stop: StopSignal, topology: Topology) -> None:
    """Run `target` in one spawned process per local rank; forward SIGTERM; re-raise the first failure.

    The processes report (kind, message) of their failure; this process raises the same error
    class, so the CLI writes one failure file and one exit code for the host.
    """
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    reports = context.Queue()
    processes = [
        context.Process(
            target=_local_process_main,
            args=(target, env, topology, local_rank, reports),
            name=f"object2vec-rank-{local_rank}",
        )
        for local_rank in range(topology.processes_per_host)
    ]
    logger.info("Starting %d training processes on this host (%s)", len(processes), topology.backend)
    for process in processes:
        process.start()
    failures: list[tuple[int, str, str]] = []
    forwarded = False
    first_failure: float | None = None
    with stop.deferred():
        while any(process.is_alive() for process in processes):
            _drain(reports, failures)
            if stop.requested and not forwarded:
                forwarded = True
                _signal_all(processes, signal.SIGTERM)
            if first_failure is None and (failures or any(p.exitcode not in (None, 0) for p in processes)):
                first_failure = time.monotonic()
            if first_failure is not None and time.monotonic() - first_failure > FAILURE_GRACE_SECONDS:
                _signal_all(processes, signal.SIGKILL)
            for process in processes:
                process.join(timeout=0.2)
        _drain(reports, failures)
    if failures:
        _local_rank, kind, message = failures[0]
        raise OUTCOMES.get(kind, AlgorithmError)(message)
    for local_rank, process in enumerate(processes):
        if process.exitcode != 0:
            raise AlgorithmError(f"training process {local_rank} ended with exit code {process.exitcode}")


def _local_process_main(
    target: ProcessTarget, env: TrainingEnvironment, topology: Topology, local_rank: int, reports: Any
) -> None:
    from object2vec.cli import configure_logging

    configure_logging()
    stop = StopSignal.install()
    try:
        target(env, stop, topology, local_rank)
    except (ClientError, TrainingStopped, AlgorithmError) as err:
        reports.put((local_rank, type(err).__name__, str(err)))
        raise SystemExit(1) from None
    except BaseException as err:  # noqa: BLE001 - reported to the parent, which writes the failure file
        logger.error("%s", traceback.format_exc().rstrip())
        reports.put((local_rank, "AlgorithmError", f"{type(err).__name__}: {err}"))
        raise SystemExit(2) from None


def _drain(reports: Any, failures: list[tuple[int, str, str]]) -> None:
    while True:
        try:
            failures.append(reports.get_nowait())
        except queue.Empty:
            return


def _signal_all(processes: list[Any], signum: int) -> None:
    for process in processes:
        if process.is_alive() and process.pid is not None:
            try:
                os.kill(process.pid, signum)
            except ProcessLookupError:
                pass
