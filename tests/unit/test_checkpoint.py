"""training/checkpoint.py: the file pair, validity checks, pruning and the trainer round trip."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from object2vec.config import Hyperparameters
from object2vec.data.records import PairDataset, TokenSequences
from object2vec.model.object2vec import Object2VecModel
from object2vec.training.checkpoint import Checkpointer, CheckpointStore, Position, compatible
from object2vec.training.distributed import Distributed
from object2vec.training.signals import StopSignal
from object2vec.training.trainer import Trainer

CPU = torch.device("cpu")


def state() -> dict:
    return {
        "hyperparameters": {},
        "weights": {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(2, dtype=torch.int64)},
        "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"betas": (0.9, 0.999), "lr": 0.1}]},
        "none": None,
        "history": [{"loss": 0.5}],
    }


def test_round_trip_keeps_tensors_int_keys_and_tuples(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, "algo-1")
    store.save(state(), Position(2, 7))
    [(position, path)] = store.positions()
    assert position == Position(2, 7) and path.name == "algo-1-000001.json"
    loaded = store.load(path)
    assert loaded is not None
    assert torch.equal(loaded["weights"]["a"], state()["weights"]["a"])
    assert loaded["weights"]["b"].dtype == torch.int64
    assert list(loaded["optimizer"]["state"]) == [0]  # an int key, as torch's optimizers need
    assert loaded["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert loaded["none"] is None and loaded["history"] == [{"loss": 0.5}]


def test_files_are_json_and_safetensors_only(tmp_path: Path) -> None:
    CheckpointStore(tmp_path, "algo-1").save(state(), Position(0, 0))
    document = json.loads((tmp_path / "algo-1-000001.json").read_text())
    assert document["tensors_file"] == "algo-1-000001.safetensors"
    assert document["position"] == {"epoch": 0, "step": 0}
    assert (tmp_path / "algo-1-000001.safetensors").read_bytes()[8:9] == b"{"  # safetensors header


def test_a_tensor_under_two_names_is_stored_once(tmp_path: Path) -> None:
    shared = torch.arange(4, dtype=torch.float32)  # a tied weight: one tensor, two state-dict names
    body = {"model": {"enc0.w": shared, "enc1.w": shared.detach(), "other": shared.clone()}}
    store = CheckpointStore(tmp_path, "algo-1")
    store.save(body, Position(0, 0))
    with safe_open(str(tmp_path / "algo-1-000001.safetensors"), framework="pt") as handle:
        assert sorted(handle.keys()) == ["t.model.enc0.w", "t.model.other"]  # noqa: SIM118
    loaded = store.load(store.positions()[0][1])
    assert loaded is not None
    model = loaded["model"]
    assert model["enc1.w"] is model["enc0.w"] and torch.equal(model["enc0.w"], shared)
    assert torch.equal(model["other"], shared)


def test_keeps_the_newest_two_per_host(tmp_path: Path) -> None:
    store, other = CheckpointStore(tmp_path, "algo-1"), CheckpointStore(tmp_path, "algo-2")
    other.save(state(), Position(0, 0))
    for epoch in range(4):
        store.save(state(), Position(epoch, 0))
    assert [p.epoch for p, _ in store.positions()] == [3, 2]
    assert len(list(tmp_path.glob("algo-1-*"))) == 4
    assert [p.epoch for p, _ in other.positions()] == [0]


@pytest.mark.parametrize("damage", ["truncate tensors", "truncate json", "delete tensors", "flip a byte"])
def test_damaged_checkpoint_is_skipped_with_a_warning(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = CheckpointStore(tmp_path, "algo-1")
    store.save(state(), Position(1, 0))
    store.save(state(), Position(2, 0))
    tensors, document = tmp_path / "algo-1-000002.safetensors", tmp_path / "algo-1-000002.json"
    if damage == "truncate tensors":
        tensors.write_bytes(tensors.read_bytes()[:40])
    elif damage == "truncate json":
        document.write_text(document.read_text()[:30])
    elif damage == "delete tensors":
        tensors.unlink()
    else:
        data = bytearray(tensors.read_bytes())
        data[-1] ^= 0xFF
        tensors.write_bytes(bytes(data))
    checkpointer = Checkpointer(store, Distributed.single(CPU), {})
    with caplog.at_level(logging.WARNING):
        newest = checkpointer._newest()
    assert newest is not None and newest[0] == Position(1, 0)
    assert "Ignoring checkpoint" in caplog.text and "algo-1-000002.json" in caplog.text


def test_changed_hyperparameters_make_a_checkpoint_unusable() -> None:
    saved = {"enc_dim": 8, "epochs": 5, "_num_gpus": "auto"}
    assert compatible(saved, {"enc_dim": 8, "epochs": 9, "_num_gpus": 2}) == []
    assert compatible(saved, {"enc_dim": 16, "epochs": 5}) == ["enc_dim"]
    # The retrieval_* hyperparameters only shape the index built after training.
    assert compatible(saved, {**saved, "retrieval_top_n": 300, "retrieval_index": "ivf"}) == []
    # A key added by a later release (not in an older checkpoint) counts as its default value.
    assert compatible(saved, {**saved, "ema_decay": 0.0, "comparator_list": "hadamard,concat,abs_diff"}) == []
    assert compatible(saved, {**saved, "ema_decay": 0.99, "comparator_list": "hadamard"}) == [
        "comparator_list",
        "ema_decay",
    ]


# ---------------------------------------------------------------------------------------------
# The trainer round trip: stop mid-epoch, checkpoint, restore into a fresh trainer, finish: the
# same weights as a run never stopped.


def hyperparameters(**changes: Any) -> Hyperparameters:
    return Hyperparameters.from_dict(
        {
            "enc0_network": "pooled_embedding",
            "enc0_vocab_size": 20,
            "enc0_max_seq_len": 4,
            "enc0_token_embedding_dim": 4,
            "enc_dim": 4,
            "mlp_dim": 4,
            "mlp_layers": 1,
            "mini_batch_size": 4,
            "epochs": 3,
            "early_stopping_patience": 5,
            "learning_rate": 0.05,
            **changes,
        }
    )


def dataset(count: int = 40) -> PairDataset:
    generator = torch.Generator().manual_seed(1)
    sequences = [torch.randint(0, 20, (3,), generator=generator).tolist() for _ in range(2 * count)]
    return PairDataset(
        TokenSequences.from_lists(sequences[:count]),
        TokenSequences.from_lists(sequences[count:]),
        torch.randint(0, 2, (count,), generator=generator),
    )


class StopAfter(StopSignal):
    """Requests a stop once `steps` batches were drawn (checked before each step)."""

    def __init__(self, trainer_steps: int) -> None:
        super().__init__()
        self.remaining = trainer_steps

    @property  # type: ignore[override]
    def requested(self) -> str | None:
        self.remaining -= 1
        return "SIGTERM" if self.remaining < 0 else None

    @requested.setter
    def requested(self, value: str | None) -> None:
        pass


def make_trainer(hp: Hyperparameters, stop: StopSignal, checkpointer: Checkpointer | None = None) -> Trainer:
    torch.manual_seed(hp.seed)
    return Trainer(Object2VecModel(hp), hp, CPU, "algo-1", stop, checkpointer=checkpointer)


@pytest.mark.parametrize("changes", [{}, {"ema_decay": 0.9}], ids=["weights", "moving-average"])
def test_stop_mid_epoch_and_resume_matches_an_uninterrupted_fit(tmp_path: Path, changes: dict[str, Any]) -> None:
    hp, train, validation = hyperparameters(**changes), dataset(), dataset(12)
    reference = make_trainer(hp, StopSignal())
    expected = reference.fit(train, validation)

    store = CheckpointStore(tmp_path, "algo-1")
    first = make_trainer(hp, StopAfter(17), Checkpointer(store, Distributed.single(CPU), hp.to_dict()))
    stopped = first.fit(train, validation)
    assert stopped.stopped_by == "SIGTERM" and stopped.epochs_completed == 1
    position = store.positions()[0][0]
    assert position.epoch == 1 and 0 < position.step < 10  # 10 steps per epoch: stopped inside epoch 1

    second = make_trainer(hp, StopSignal(), Checkpointer(store, Distributed.single(CPU), hp.to_dict()))
    resume = second.restore()
    assert resume is not None and resume.position == position
    result = second.fit(train, validation, resume)
    assert result.epochs_completed == expected.epochs_completed == 3
    assert result.best_epoch == expected.best_epoch
    assert [h["train:cross_entropy"] for h in result.history] == pytest.approx(
        [h["train:cross_entropy"] for h in expected.history], abs=1e-6
    )
    for name, tensor in reference.model.state_dict().items():
        assert torch.allclose(tensor, second.model.state_dict()[name], atol=1e-6), name
    assert expected.best_state is not None and result.best_state is not None
    for name, tensor in expected.best_state.items():  # with ema_decay: the average, carried by the checkpoint
        assert torch.allclose(tensor, result.best_state[name], atol=1e-6), name


def test_a_resumed_run_goes_on_at_the_decayed_learning_rate(tmp_path: Path) -> None:
    # A rate of 1e-6 barely moves the loss: every epoch after the first misses the tolerance of 0.1
    # and halves the rate. Stopped in epoch 2, the checkpoint holds the rate after one decay.
    changes = {"learning_rate": 1e-6, "early_stopping_tolerance": 0.1, "learning_rate_plateau_factor": 0.5}
    hp = Hyperparameters.from_dict({**hyperparameters().to_dict(), **changes})
    store = CheckpointStore(tmp_path, "algo-1")
    first = make_trainer(hp, StopAfter(25), Checkpointer(store, Distributed.single(CPU), hp.to_dict()))
    assert first.fit(dataset(), dataset(12)).epochs_completed == 2
    second = make_trainer(hp, StopSignal(), Checkpointer(store, Distributed.single(CPU), hp.to_dict()))
    assert second.optimizer.param_groups[0]["lr"] == pytest.approx(1e-6)
    resume = second.restore()
    assert resume is not None and resume.position.epoch == 2
    assert second.optimizer.param_groups[0]["lr"] == pytest.approx(0.5e-6)


def test_no_store_means_no_resume() -> None:
    hp = hyperparameters()
    trainer = make_trainer(hp, StopSignal(), Checkpointer(None, Distributed.single(CPU), hp.to_dict()))
    assert trainer.restore() is None and not trainer.checkpointer.writes


def test_a_tied_encoder_is_copied_and_checkpointed_once(tmp_path: Path) -> None:
    hp = Hyperparameters.from_dict({**hyperparameters().to_dict(), "tied_encoders": True, "epochs": 1})
    store = CheckpointStore(tmp_path, "algo-1")
    trainer = make_trainer(hp, StopSignal(), Checkpointer(store, Distributed.single(CPU), hp.to_dict()))
    result = trainer.fit(dataset(), dataset(12))
    assert result.best_state is not None
    tied = [name for name in result.best_state if name.startswith("encoders.1.")]
    assert tied and all(result.best_state[name] is result.best_state[name.replace(".1.", ".0.", 1)] for name in tied)
    with safe_open(str(store.positions()[0][1].with_suffix(".safetensors")), framework="pt") as handle:
        assert not [name for name in handle.keys() if ".encoders.1." in name]  # noqa: SIM118
    resumed = make_trainer(hp, StopSignal(), Checkpointer(store, Distributed.single(CPU), hp.to_dict()))
    assert resumed.restore() is not None
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
