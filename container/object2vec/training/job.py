"""A training job from start to model: configuration, data, device, fit, test metrics, artifacts."""

from __future__ import annotations

import json
import logging
import time

import torch

from object2vec.config import Hyperparameters
from object2vec.data.records import PairDataset, read_channel
from object2vec.data.sampling import describe_negative_sampling
from object2vec.data.vocab import AUXILIARY, check_auxiliary_files, initialise_token_embeddings
from object2vec.environment import TrainingEnvironment
from object2vec.errors import ClientError, TrainingStopped
from object2vec.model.io import save_model
from object2vec.model.object2vec import Object2VecModel
from object2vec.training.metrics import log_quality
from object2vec.training.signals import StopSignal
from object2vec.training.trainer import Trainer

logger = logging.getLogger(__name__)

CHANNELS = ("train", "validation", "test", "auxiliary")


def run_training(env: TrainingEnvironment, stop: StopSignal) -> None:
    started = time.time()
    hp = Hyperparameters.from_dict(env.hyperparameters)
    logger.info("Final configuration: %s", json.dumps(hp.to_dict(), sort_keys=True))
    check_channels(env)
    check_features_available(hp)
    check_auxiliary_files(hp, env.channels.get(AUXILIARY))
    device = choose_device(hp)
    if device.type == "cpu":
        torch.set_num_threads(env.num_cpus)
    logger.info("Training on %s with %d CPU thread(s)", device, torch.get_num_threads())
    torch.manual_seed(hp.seed)

    train = read_channel(env.channels["train"], hp)
    validation = read_optional_channel(env, "validation", hp)
    test = read_optional_channel(env, "test", hp)

    model = Object2VecModel(hp).to(device)
    logger.info("Model has %d parameters", sum(p.numel() for p in model.parameters()))
    initialise_token_embeddings(model, hp, env.channels.get(AUXILIARY))  # logs each encoder's table
    if hp.negative_sampling_rate:
        logger.info("%s", describe_negative_sampling(hp.negative_sampling_rate, hp.is_classification, hp.num_classes))
    trainer = Trainer(model, hp, device, env.current_host, stop)
    with stop.deferred():
        result = trainer.fit(train, validation)
        if result.best_state is None:
            raise TrainingStopped(
                f"training stopped by {result.stopped_by} before the first epoch ended; no model saved"
            )
        model.load_state_dict(result.best_state)
        info = {
            "training": {
                "best_epoch": result.best_epoch,
                "best_loss": result.best_loss,
                "epochs_completed": result.epochs_completed,
                "records": {"train": len(train), "validation": _size(validation), "test": _size(test)},
                "seconds": round(time.time() - started, 3),
            }
        }
        if result.stopped_by:
            save_model(model, env.model_dir, info)
            raise TrainingStopped(
                f"training stopped by {result.stopped_by} after {result.epochs_completed} complete epoch(s); "
                f"the best model so far (epoch {result.best_epoch}) was saved to {env.model_dir}"
            )
        if test is not None:
            for name, value in trainer.evaluate(test).items():
                log_quality(env.current_host, "test", name, value)
        save_model(model, env.model_dir, info)
    logger.info(
        "Saved the model of epoch %d to %s (%.1f s in all)", result.best_epoch, env.model_dir, time.time() - started
    )


def check_channels(env: TrainingEnvironment) -> None:
    unknown = sorted(set(env.channels) - set(CHANNELS))
    if unknown:
        raise ClientError(
            f"unknown channel(s) {', '.join(unknown)}: Object2Vec reads the channels {', '.join(CHANNELS)}"
        )
    if "train" not in env.channels:
        raise ClientError("the train channel is required: give the training job a channel named train")


def check_features_available(hp: Hyperparameters) -> None:
    """Features whose hyperparameters are accepted but which this version cannot run yet."""
    missing: list[str] = []  # none at present: every documented feature runs
    if missing:
        raise ClientError(f"not supported by this version yet: {', '.join(missing)}; remove or reset them")


def read_optional_channel(env: TrainingEnvironment, name: str, hp: Hyperparameters) -> PairDataset | None:
    channel = env.channels.get(name)
    return read_channel(channel, hp) if channel is not None else None


def choose_device(hp: Hyperparameters) -> torch.device:
    """CUDA when present and not switched off with _num_gpus=0, else the CPU."""
    if hp.num_gpus == 0 or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", 0)


def _size(dataset: PairDataset | None) -> int:
    return len(dataset) if dataset is not None else 0
