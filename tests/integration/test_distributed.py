"""One job over several processes (gloo on the CPU), on one machine.

Two hosts: two `train` processes, each with its own /opt/ml, whose resourceconfig.json lists the
hosts "127.0.0.1" and "localhost": names every machine resolves without touching /etc/hosts, so
the test runs as is on a fresh CI machine. hosts[0] ("127.0.0.1") is the master.

Tolerance: with a FullyReplicated train channel, two processes take the very same optimizer steps
as one (each takes half of every global mini-batch, DDP averages the gradients), so the metrics
differ only by the order of floating-point sums: we allow 1e-4 on the validation cross-entropy
(measured: well under 1e-5) and 1e-4 on every weight.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from object2vec.model.io import load_model

from .jobs import (
    TIMEOUT,
    free_port,
    log_of,
    make_job,
    records,
    run_train,
    standard_channels,
    start_train,
    validation_losses,
)

HOSTS = ["127.0.0.1", "localhost"]
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = make_job(tmp_path_factory.mktemp("one") / "opt" / "ml", standard_channels())
    code, log = run_train(base)
    assert code == 0, log
    return base


def run_two_hosts(tmp_path: Path, channels_by_host: list[dict], **job: object) -> list[Path]:
    port = str(free_port())
    bases = [
        make_job(tmp_path / host / "opt" / "ml", channels, hosts=HOSTS, current_host=host, **job)  # type: ignore[arg-type]
        for host, channels in zip(HOSTS, channels_by_host, strict=True)
    ]
    extra = {"OBJECT2VEC_MASTER_PORT": port, "OBJECT2VEC_RENDEZVOUS_TIMEOUT": "120"}
    processes = [start_train(base, **extra) for base in bases]
    for base, process in zip(bases, processes, strict=True):
        try:
            code = process.wait(timeout=TIMEOUT)
        finally:
            for other in processes:
                if other.poll() is None and process.returncode != 0:
                    other.kill()
        assert code == 0, log_of(base)
    return bases


def assert_same_model(a: Path, b: Path) -> None:
    first, second = load_model(a / "model").model.state_dict(), load_model(b / "model").model.state_dict()
    for name, tensor in first.items():
        assert torch.allclose(tensor, second[name], atol=TOLERANCE), name


def test_two_hosts_train_one_job_like_one_process(tmp_path: Path, one_process: Path) -> None:
    master, worker = run_two_hosts(tmp_path, [standard_channels(), standard_channels()])
    master_log, worker_log = log_of(master), log_of(worker)
    assert "Joined the job as rank 0 of 2" in master_log and "Joined the job as rank 1 of 2" in worker_log
    # Metric lines once, by the master, with its host name; the model only on the master.
    assert "#quality_metric: host=127.0.0.1, epoch=0, validation cross_entropy" in master_log
    assert "#quality_metric: host=127.0.0.1, test accuracy" in master_log
    assert "#quality_metric" not in worker_log and "#throughput_metric" not in worker_log
    assert not (worker / "model" / "model.safetensors").exists()
    assert (master / "output" / "success").exists() and (worker / "output" / "success").exists()

    reference = validation_losses(log_of(one_process))
    distributed = validation_losses(master_log)
    assert len(distributed) == len(reference)
    assert max(abs(a - b) for a, b in zip(distributed, reference, strict=True)) < TOLERANCE
    assert_same_model(master, one_process)


def test_two_processes_on_one_host_like_one_process(tmp_path: Path, one_process: Path) -> None:
    # The multi-GPU code path (one spawned process per device), run with gloo on the CPU.
    base = make_job(tmp_path / "opt" / "ml", standard_channels())
    code, log = run_train(base, OBJECT2VEC_PROCESSES_PER_HOST="2", OBJECT2VEC_MASTER_PORT=str(free_port()))
    assert code == 0, log
    assert "Starting 2 training processes on this host" in log
    assert log.count("#quality_metric: host=algo-1, epoch=0, validation cross_entropy") == 1
    reference = validation_losses(log_of(one_process))
    assert max(abs(a - b) for a, b in zip(validation_losses(log), reference, strict=True)) < TOLERANCE
    assert_same_model(base, one_process)


def test_sharded_channel_is_used_as_given(tmp_path: Path) -> None:
    # ShardedByS3Key: each host trains on its own records; the smaller shard goes round again.
    shards = [
        {"train": records(300, 10), "validation": records(80, 11)},
        {"train": records(140, 12), "validation": records(60, 13)},
    ]
    master, worker = run_two_hosts(
        tmp_path,
        shards,
        hyperparameters={"epochs": "2"},
        distribution={"train": "ShardedByS3Key", "validation": "ShardedByS3Key"},
    )
    assert "Channel train: 300 records" in log_of(master)
    assert "Channel train: 140 records" in log_of(worker)
    assert len(validation_losses(log_of(master))) == 2
    assert (master / "model" / "model.safetensors").exists()


def test_unreachable_master_fails_with_host_and_port(tmp_path: Path) -> None:
    port = free_port()  # nobody listens there
    base = make_job(tmp_path / "opt" / "ml", standard_channels(), hosts=HOSTS, current_host="localhost")
    code, log = run_train(base, OBJECT2VEC_MASTER_PORT=str(port), OBJECT2VEC_RENDEZVOUS_TIMEOUT="3")
    assert code == 1, log
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith(
        f"ClientError: host localhost could not reach the master host 127.0.0.1 on port {port} within 3 s"
    )


def test_in_batch_negatives_over_two_processes(tmp_path: Path) -> None:
    """Each process's share of the global mini-batch (16 of 32 pairs) is ranked against the in1 of
    both shares (gathered with their gradients: tests/unit/test_in_batch.py shows the step equals one
    process's); DDP averages the gradients of the (16, 32) margins through forward(all_pairs=True),
    so the replicas stay equal and the master's model is the job's."""
    positives = {name: [r for r in rows if r["label"] == 1] for name, rows in standard_channels().items()}
    hyperparameters = {"in_batch_negatives": "true", "tied_encoders": "true", "comparator_list": "cosine"}
    base = make_job(tmp_path / "opt" / "ml", positives, {**hyperparameters, "mlp_layers": "0"})
    code, log = run_train(base, OBJECT2VEC_PROCESSES_PER_HOST="2", OBJECT2VEC_MASTER_PORT=str(free_port()))
    assert code == 0, log
    assert "Starting 2 training processes on this host" in log
    assert "In-batch negatives: each training pair's in1 is ranked against the other in1" in log
    assert len(validation_losses(log)) == 4  # the ranking of the validation pairs, every epoch
    train = [float(v) for v in re.findall(r"epoch=\d+, train cross_entropy <loss>=(\S+)", log)]
    assert len(train) == 4 and train[-1] < 0.8 * train[0]  # the ranking is learnt (240 pairs: train only)
    model = load_model(base / "model").model
    assert model.siamese and model.mlp[-1].weight[1, 0] - model.mlp[-1].weight[0, 0] > 0
