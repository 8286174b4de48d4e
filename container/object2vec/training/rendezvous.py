"""Joining the job's process group: hosts[0] is the master, its TCP store the meeting point.

The master's store listens on OBJECT2VEC_MASTER_PORT (default 29500). A host waits at most
OBJECT2VEC_RENDEZVOUS_TIMEOUT seconds (default 600: SageMaker starts hosts minutes apart) to
resolve and reach it, then fails with a ClientError naming the host and port.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import time

import torch
import torch.distributed as dist

from object2vec.errors import ClientError
from object2vec.training import metrics
from object2vec.training.distributed import Distributed
from object2vec.training.topology import MASTER_PORT_ENV, RENDEZVOUS_TIMEOUT_ENV, Topology

logger = logging.getLogger(__name__)

COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)  # one step or evaluation, never a whole epoch


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
