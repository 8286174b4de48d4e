"""Trainer.fit: learning, early stopping, best-epoch state, stop requests, optimizers, divergence, seeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from object2vec.config import OPTIMIZERS, Hyperparameters
from object2vec.data.records import PairDataset, TokenSequences
from object2vec.errors import ClientError
from object2vec.model.object2vec import Object2VecModel
from object2vec.training.pretrained_lr import TARGET_LR
from object2vec.training.signals import StopSignal
from object2vec.training.trainer import Trainer, decay_learning_rates

CPU = torch.device("cpu")
BASE: dict[str, Any] = {
    "enc0_network": "pooled_embedding",
    "enc0_vocab_size": 12,
    "enc0_max_seq_len": 4,
    "enc0_token_embedding_dim": 4,
    "enc_dim": 4,
    "mlp_dim": 4,
    "mlp_layers": 1,
    "mini_batch_size": 8,
    "learning_rate": 0.05,
    "epochs": 8,
    "early_stopping_patience": 5,
}


pytestmark = pytest.mark.usefixtures("one_thread")


def hyperparameters(**changes: Any) -> Hyperparameters:
    return Hyperparameters.from_dict({**BASE, **changes})


def separable(size: int = 48, regression: bool = False, offset: int = 0) -> PairDataset:
    """The label is the parity of the in0 token: a pooled encoder learns it in a few epochs."""
    in0 = [[(i + offset) % 12] for i in range(size)]
    in1 = [[(i * 5 + offset) % 12, 3] for i in range(size)]
    labels = torch.tensor([seq[0] % 2 for seq in in0])
    return PairDataset(
        in0=TokenSequences.from_lists(in0),
        in1=TokenSequences.from_lists(in1),
        labels=labels.float() if regression else labels,
    )


def make_trainer(hp: Hyperparameters, stop: StopSignal | None = None, cls: type[Trainer] = Trainer) -> Trainer:
    torch.manual_seed(hp.seed)  # as the job does before building the model
    return cls(Object2VecModel(hp), hp, CPU, "algo-1", stop or StopSignal())


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize(
    ("output_layer", "loss"), [("softmax", "cross_entropy"), ("mean_squared_error", "mean_squared_error")]
)
def test_training_lowers_the_loss(output_layer: str, loss: str) -> None:
    regression = output_layer == "mean_squared_error"
    trainer = make_trainer(hyperparameters(output_layer=output_layer))
    result = trainer.fit(separable(regression=regression), separable(24, regression, offset=1))
    history = result.history
    assert len(history) == result.epochs_completed == 8
    assert history[-1][f"train:{loss}"] < 0.5 * history[0][f"train:{loss}"]
    assert history[-1][f"validation:{loss}"] < history[0][f"validation:{loss}"]
    if not regression:
        assert history[-1]["validation:accuracy"] == 1.0
    assert result.best_epoch == min(range(8), key=lambda e: history[e][f"validation:{loss}"])
    assert result.best_loss == history[result.best_epoch][f"validation:{loss}"]


def test_without_validation_the_train_loss_is_monitored() -> None:
    result = make_trainer(hyperparameters(epochs=3)).fit(separable(), None)
    assert all(set(h) == {"train:cross_entropy", "train:accuracy"} for h in result.history)
    losses = [h["train:cross_entropy"] for h in result.history]
    assert result.best_loss == min(losses) and result.best_epoch == losses.index(min(losses))


class RecordingTrainer(Trainer):
    """Keeps the weights the model had at each validation."""

    def evaluate(self, dataset: PairDataset) -> dict[str, float]:
        self.evaluated = getattr(self, "evaluated", []) + [weights(self)]
        return super().evaluate(dataset)


def test_ema_decay_evaluates_and_keeps_the_moving_average_while_the_weights_train_on() -> None:
    hp = hyperparameters(ema_decay=0.8, epochs=4, early_stopping_patience=5)
    trainer = make_trainer(hp, cls=RecordingTrainer)
    validation = separable(24, offset=1)
    result = trainer.fit(separable(), validation)
    assert trainer.average is not None
    trainable = [name for name, p in trainer.model.named_parameters() if p.requires_grad]
    averaged = dict(zip(trainable, trainer.average.averages, strict=True))
    last = trainer.evaluated[-1]  # the weights of the final epoch's validation
    for name, average in averaged.items():
        assert torch.allclose(last[name], average), name  # validated: the average ...
        assert not torch.allclose(trainer.model.state_dict()[name], average), name  # ... not the raw weights
    # The reported validation loss is the average's: the same model scored again gives it.
    fresh = make_trainer(hyperparameters(epochs=4))
    fresh.model.load_state_dict(last)
    assert fresh.evaluate(validation)["cross_entropy"] == pytest.approx(result.history[-1]["validation:cross_entropy"])
    assert result.best_state is not None
    best = trainer.evaluated[result.best_epoch]
    assert all(torch.equal(result.best_state[name], best[name]) for name in best)  # the kept model is an average
    # The same training steps as without it (train metrics are the raw weights'), another validation.
    plain = make_trainer(hyperparameters(epochs=4)).fit(separable(), validation).history
    assert plain[0]["train:cross_entropy"] == pytest.approx(result.history[0]["train:cross_entropy"])
    assert plain[-1]["validation:cross_entropy"] != pytest.approx(result.history[-1]["validation:cross_entropy"])


@pytest.mark.parametrize("patience", [1, 2, 4])
def test_early_stopping_when_the_loss_barely_moves(patience: int) -> None:
    # learning_rate 1e-6 changes the loss by far less than the tolerance of 0.1: epoch 0 sets the
    # reference and every later epoch counts as one without improvement.
    hp = hyperparameters(learning_rate=1e-6, early_stopping_tolerance=0.1, early_stopping_patience=patience, epochs=10)
    result = make_trainer(hp).fit(separable(16), separable(8, offset=1))
    assert result.epochs_completed == len(result.history) == 1 + patience
    assert result.stopped_by is None


class ScriptedTrainer(Trainer):
    """Replays given losses instead of training, so early stopping can be checked exactly; each
    epoch writes its number into a weight, so the returned state tells which epoch it was."""

    train_losses: list[float]
    validation_losses: list[float] | None = None

    def train_epoch(self, train: PairDataset, epoch: int, *args: Any, **kwargs: Any) -> dict[str, float]:
        self.epoch = epoch
        self.rates = [*getattr(self, "rates", []), [group["lr"] for group in self.optimizer.param_groups]]
        with torch.no_grad():
            self.model.mlp[-1].bias.fill_(float(epoch))
        return {"cross_entropy": self.train_losses[epoch], "accuracy": 0.5}

    def evaluate(self, dataset: PairDataset) -> dict[str, float]:
        assert self.validation_losses is not None
        return {"cross_entropy": self.validation_losses[self.epoch], "accuracy": 0.5}


def scripted(losses: list[float], validation: bool, **changes: Any) -> Any:
    return scripted_trainer(losses, validation, **changes)[0]


def scripted_trainer(losses: list[float], validation: bool, **changes: Any) -> tuple[Any, ScriptedTrainer]:
    hp = hyperparameters(epochs=len(losses), early_stopping_tolerance=0.01, **changes)
    trainer = make_trainer(hp, cls=ScriptedTrainer)
    assert isinstance(trainer, ScriptedTrainer)
    flat = [1.0] * len(losses)
    trainer.train_losses = flat if validation else losses
    trainer.validation_losses = losses if validation else None
    return trainer.fit(separable(8), separable(8) if validation else None), trainer


@pytest.mark.parametrize("validation", [True, False])
@pytest.mark.parametrize(
    ("losses", "patience", "completed", "best"),
    [
        # Improvements of at least the tolerance reset the count; the last two do not: stop.
        ([1.0, 0.5, 0.495, 0.6, 0.7, 0.1], 2, 4, 2),
        # Small steps (below the tolerance) are counted from the reference, not from the last epoch.
        ([1.0, 0.995, 0.991, 0.9905, 0.5], 3, 4, 3),
        # Steady, significant improvements never stop training.
        ([1.0, 0.9, 0.8, 0.7, 0.6], 1, 5, 4),
        # The best epoch is kept even when later epochs are worse.
        ([0.3, 0.4, 0.5, 0.6, 0.7], 5, 5, 0),
        # Patience 1: the first epoch without improvement stops.
        ([1.0, 1.2, 0.1], 1, 2, 0),
    ],
)
def test_early_stopping_patience_tolerance_and_best_state(
    losses: list[float], patience: int, completed: int, best: int, validation: bool
) -> None:
    result = scripted(losses, validation, early_stopping_patience=patience)
    assert result.epochs_completed == completed
    assert result.best_epoch == best and result.best_loss == losses[best]
    assert result.best_state is not None
    model = Object2VecModel(hyperparameters(epochs=len(losses)))
    model.load_state_dict(result.best_state)
    assert torch.all(model.mlp[-1].bias == best)  # the state of the best epoch, copied then


@pytest.mark.parametrize("validation", [True, False])
def test_each_epoch_without_improvement_decays_the_learning_rate(validation: bool) -> None:
    # Epochs 2 and 4 do not improve by the tolerance (0.01) on the reference: each multiplies the
    # rate of the epochs after it by the factor; epoch 3 improves and keeps it.
    losses = [1.0, 0.5, 0.6, 0.45, 0.7, 0.3]
    result, trainer = scripted_trainer(losses, validation, learning_rate_plateau_factor=0.5)
    assert result.epochs_completed == 6 and result.best_epoch == 5
    assert [rates[0] for rates in trainer.rates] == pytest.approx([0.05, 0.05, 0.05, 0.025, 0.025, 0.0125])


def test_the_default_factor_keeps_the_learning_rate_and_no_decay_follows_the_stopping_epoch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, constant = scripted_trainer([1.0, 0.5, 0.6, 0.45, 0.7, 0.3], True)
    assert all(rates == [0.05] for rates in constant.rates)
    caplog.set_level("INFO", logger="object2vec.training.trainer")
    result, trainer = scripted_trainer(
        [1.0, 2.0, 2.0, 0.1], True, learning_rate_plateau_factor=0.1, early_stopping_patience=2
    )
    assert result.epochs_completed == 3  # epoch 2 is the second without improvement: the last
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.005)  # decayed once, after epoch 1
    assert caplog.text.count("no improvement; learning rate x 0.1 -> 0.005") == 1


def test_the_decay_scales_a_warming_up_groups_target_too() -> None:
    # A transformer's group warms up towards its target rate: the target decays with the rate, so
    # the ramp ends at the decayed rate instead of jumping back up.
    plain, warming = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [plain]}, {"params": [warming], "lr": 0.001, TARGET_LR: 0.01}], lr=0.1)
    decay_learning_rates(optimizer, 0.5, epoch=3)
    first, second = optimizer.param_groups
    assert (first["lr"], second["lr"], second[TARGET_LR]) == pytest.approx((0.05, 0.0005, 0.005))
    assert TARGET_LR not in first


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_monitored_loss_is_a_client_error(bad: float) -> None:
    with pytest.raises(ClientError, match=r"training diverged: the validation cross_entropy is (nan|inf) at epoch 1"):
        scripted([1.0, bad, 0.5], validation=True)


def test_real_divergence_is_a_client_error() -> None:
    data = separable(16, regression=True)
    data = PairDataset(data.in0, data.in1, torch.full((16,), 3e38))  # squared errors overflow float32
    hp = hyperparameters(output_layer="mean_squared_error", epochs=2)
    with pytest.raises(ClientError, match="training diverged: the train mean_squared_error is .* lower learning_rate"):
        make_trainer(hp).fit(data, None)


def stop_after_steps(trainer: Trainer, stop: StopSignal, steps: int) -> None:
    """Request a stop (as the SIGTERM handler would) once `steps` optimizer steps have run."""
    done = [0]

    def hook(*_: Any) -> None:
        done[0] += 1
        if done[0] == steps:
            stop.requested = "SIGTERM"

    trainer.optimizer.register_step_post_hook(hook)


def test_a_stop_mid_epoch_returns_stopped_by_without_a_model() -> None:
    stop = StopSignal()
    trainer = make_trainer(hyperparameters(mini_batch_size=4), stop)  # 12 steps an epoch
    stop_after_steps(trainer, stop, 3)
    result = trainer.fit(separable(), separable(8))
    assert result.stopped_by == "SIGTERM"
    assert result.epochs_completed == 0 and result.history == []
    assert result.best_state is None and result.best_epoch is None


def test_a_stop_in_a_later_epoch_keeps_the_best_model_so_far() -> None:
    stop = StopSignal()
    trainer = make_trainer(hyperparameters(mini_batch_size=4), stop)
    stop_after_steps(trainer, stop, 12 * 2 + 5)  # in the middle of the third epoch
    result = trainer.fit(separable(), separable(8))
    assert result.stopped_by == "SIGTERM"
    assert result.epochs_completed == 2
    assert result.best_epoch in (0, 1) and result.best_state is not None


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_updates_the_weights(optimizer: str) -> None:
    trainer = make_trainer(hyperparameters(optimizer=optimizer, epochs=1, weight_decay=0.01))
    before = weights(trainer)
    result = trainer.fit(separable(16), None)
    after = weights(trainer)
    assert result.epochs_completed == 1
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert "encoders.0.embedding.weight" in changed and any(name.startswith("mlp.") for name in changed)
    assert all(torch.isfinite(t).all() for t in after.values())


def fitted_weights(**changes: Any) -> dict[str, torch.Tensor]:
    trainer = make_trainer(hyperparameters(epochs=2, mini_batch_size=5, **changes))
    result = trainer.fit(separable(), None)
    assert result.best_state is not None
    return result.best_state


def test_the_same_seed_gives_identical_weights() -> None:
    first, second = fitted_weights(), fitted_weights()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_another_seed_gives_other_weights() -> None:
    first, other = fitted_weights(_seed=0), fitted_weights(_seed=1)
    assert not all(torch.equal(first[name], other[name]) for name in first)


FIXED_SEED_RUNS = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "training" / "fixed_seed_losses.json").read_text()
)


def seeded_pairs(seed: int, count: int, regression: bool) -> PairDataset:
    """Pairs of 0..8-token sequences (empty ones included); the label is the parity of in0's first id."""
    rng = np.random.default_rng(seed)
    sides = []
    for _ in range(2):
        lengths = rng.integers(0, 9, count)
        sides.append(TokenSequences.from_flat(rng.integers(0, 40, int(lengths.sum())), lengths))
    first = sides[0].values[sides[0].offsets.clamp(max=max(len(sides[0].values) - 1, 0))]
    labels = (first % 2) * (sides[0].lengths > 0)
    return PairDataset(sides[0], sides[1], labels.float() if regression else labels.long())


@pytest.mark.parametrize("case", sorted(FIXED_SEED_RUNS["cases"]))
def test_fixed_seed_losses_are_those_of_the_padded_trainer(case: str) -> None:
    # Flat batches, the flat convolution and the hand-written LSTM compute the same functions as the
    # padded trainer that recorded these runs: every metric of every epoch agrees to float precision.
    recorded = FIXED_SEED_RUNS["cases"][case]
    hp = Hyperparameters.from_dict({**FIXED_SEED_RUNS["base_hyperparameters"], **recorded["hyperparameters"]})
    regression = not hp.is_classification
    result = make_trainer(hp).fit(seeded_pairs(1, 120, regression), seeded_pairs(2, 40, regression))
    assert len(result.history) == len(recorded["history"])
    for epoch, (got, want) in enumerate(zip(result.history, recorded["history"], strict=True)):
        assert got.keys() == want.keys()
        for name, value in want.items():
            assert got[name] == pytest.approx(value, rel=1e-5, abs=1e-7), (epoch, name)


def test_an_average_spanning_more_steps_than_the_job_takes_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    # 48 records in batches of 8: 6 steps an epoch, 2 epochs; 0.99 spans about 100 steps.
    make_trainer(hyperparameters(ema_decay=0.99, epochs=2)).fit(separable(), None)
    warning = "ema_decay=0.99 averages over about 100 steps, but this job takes at most 12 (2 epochs of 6)"
    assert warning in caplog.text and "e.g. 0.8333" in caplog.text
    caplog.clear()
    make_trainer(hyperparameters(ema_decay=0.5, epochs=2)).fit(separable(), None)
    assert "averages over about" not in caplog.text
