"""Where every process of a training job runs: hosts from resourceconfig.json, one process per GPU.

Hosts and this host's rank come from resourceconfig.json, processes per host from _num_gpus and
the visible GPUs (OBJECT2VEC_PROCESSES_PER_HOST overrides it). The plan is the same on every host.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from object2vec.config import Hyperparameters
from object2vec.environment import RESOURCE_CONFIG_FILE, TrainingEnvironment
from object2vec.errors import ClientError

logger = logging.getLogger(__name__)

MASTER_PORT_ENV = "OBJECT2VEC_MASTER_PORT"
RENDEZVOUS_TIMEOUT_ENV = "OBJECT2VEC_RENDEZVOUS_TIMEOUT"
# Processes per host; by default one per GPU used. Setting it on a CPU host runs that many gloo
# processes, which is how the multi-GPU code path is tested on machines without GPUs.
PROCESSES_PER_HOST_ENV = "OBJECT2VEC_PROCESSES_PER_HOST"
DEFAULT_MASTER_PORT = 29500
DEFAULT_RENDEZVOUS_TIMEOUT = 600.0


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


def _network_interface(base_dir: Path) -> str | None:
    path = base_dir / RESOURCE_CONFIG_FILE
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
