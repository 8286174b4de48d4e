"""training/topology.py: hosts, ranks and processes per host from resourceconfig.json and the environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from object2vec.config import Hyperparameters
from object2vec.environment import TrainingEnvironment
from object2vec.errors import ClientError
from object2vec.training.topology import plan_topology


def environment(tmp_path: Path, hosts: list[str], current: str, interface: str | None = None) -> TrainingEnvironment:
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    resource = {"current_host": current, "hosts": hosts}
    if interface:
        resource["network_interface_name"] = interface
    (config / "resourceconfig.json").write_text(json.dumps(resource))
    return TrainingEnvironment(tmp_path, {}, {}, current, hosts, num_cpus=2)


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
