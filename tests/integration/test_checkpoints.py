"""Checkpoints in /opt/ml/checkpoints: SIGTERM, restart, the same model as a run never stopped.

Tolerance: a resumed run restores weights, optimizer, RNG states and the position inside the
epoch, so it takes exactly the same steps; on one CPU the weights come out equal up to 1e-6.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import pytest
import torch

from object2vec.model.io import load_model

from .jobs import TIMEOUT, log_of, make_job, run_train, standard_channels, start_train, validation_losses

HYPERPARAMETERS = {"epochs": "5", "mini_batch_size": "8", "early_stopping_patience": "5"}
TOLERANCE = 1e-6


def new_job(base: Path) -> Path:
    return make_job(base / "opt" / "ml", standard_channels(), HYPERPARAMETERS, checkpoints=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = new_job(tmp_path_factory.mktemp("uninterrupted"))
    code, log = run_train(base)
    assert code == 0, log
    return base


def assert_same_model(a: Path, b: Path) -> None:
    first, second = load_model(a / "model"), load_model(b / "model")
    assert first.info["training"]["best_epoch"] == second.info["training"]["best_epoch"]
    weights = second.model.state_dict()
    for name, tensor in first.model.state_dict().items():
        assert torch.allclose(tensor, weights[name], atol=TOLERANCE), name


def wait_for(base: Path, text: str, process: object) -> None:
    deadline = time.monotonic() + TIMEOUT
    while text not in log_of(base):
        assert process.poll() is None, log_of(base)  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, log_of(base)
        time.sleep(0.05)


def test_every_epoch_writes_a_checkpoint_and_keeps_two(uninterrupted: Path) -> None:
    log = log_of(uninterrupted)
    assert log.count("Checkpoint ") == 5
    names = sorted(path.name for path in (uninterrupted / "checkpoints").iterdir())
    assert names == [
        "algo-1-000004.json",
        "algo-1-000004.safetensors",
        "algo-1-000005.json",
        "algo-1-000005.safetensors",
    ]


def test_sigterm_then_restart_gives_the_same_model(tmp_path: Path, uninterrupted: Path) -> None:
    base = new_job(tmp_path)
    process = start_train(base)
    wait_for(base, "epoch=1, validation cross_entropy", process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=TIMEOUT) == 143
    first_log = log_of(base)
    assert "training stopped by SIGTERM" in (base / "output" / "failure").read_text()
    assert first_log.count("Checkpoint ") >= 2  # epochs 0 and 1, plus the one SIGTERM wrote

    (base / "output" / "failure").unlink()
    code, second_log = run_train(base)
    assert code == 0, second_log
    assert "Resuming from the checkpoint of epoch " in second_log
    assert_same_model(base, uninterrupted)
    # The resumed run logs the remaining epochs with the uninterrupted run's values.
    resumed = validation_losses(second_log)
    reference = validation_losses(log_of(uninterrupted))
    assert resumed and resumed == pytest.approx(reference[-len(resumed) :], abs=TOLERANCE)


def test_truncated_checkpoint_is_ignored_with_a_warning(tmp_path: Path, uninterrupted: Path) -> None:
    # The uninterrupted run's last two checkpoints, the newest cut short (as an interrupted sync
    # might leave it): the run resumes from the one before and trains the last epoch again.
    base = new_job(tmp_path)
    shutil.rmtree(base / "checkpoints")
    shutil.copytree(uninterrupted / "checkpoints", base / "checkpoints")
    newest = base / "checkpoints" / "algo-1-000005.safetensors"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    code, log = run_train(base)
    assert code == 0, log
    assert "Ignoring checkpoint" in log and "algo-1-000005.json" in log
    assert "Resuming from the checkpoint of epoch 4, step 0" in log
    assert len(validation_losses(log)) == 1
    assert_same_model(base, uninterrupted)
