"""A training job from start to model: configuration, data, device, fit, test metrics, artifacts."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import torch

from object2vec.config import Hyperparameters
from object2vec.data.init_model import initialise_from_model, read_init_model
from object2vec.data.pipe import PipeEpochs, read_pipe
from object2vec.data.pretrained import initialise_transformers, read_transformer_checkpoints, transformer_specs
from object2vec.data.records import PairDataset, read_channel
from object2vec.data.sampling import describe_negative_sampling
from object2vec.data.vocab import AUXILIARY, check_auxiliary_files, initialise_token_embeddings
from object2vec.environment import TrainingEnvironment
from object2vec.errors import ClientError, TrainingStopped
from object2vec.model.io import save_model
from object2vec.model.object2vec import Object2VecModel
from object2vec.retrieval.candidates import CHANNEL as CANDIDATES
from object2vec.retrieval.candidates import CandidateBlock, read_catalogue
from object2vec.retrieval.index_file import INDEX_FILE
from object2vec.threads import ADJUST_SECONDS, ThreadGovernor, describe_wait_policy, free_cores, thread_count
from object2vec.training.checkpoint import Checkpointer, CheckpointStore
from object2vec.training.distributed import Distributed
from object2vec.training.in_batch import calibrate, positives_only
from object2vec.training.metrics import log_quality
from object2vec.training.processes import run_local_processes
from object2vec.training.rendezvous import connect
from object2vec.training.sharding import shard
from object2vec.training.signals import StopSignal
from object2vec.training.topology import Topology, plan_topology
from object2vec.training.trainer import Trainer

logger = logging.getLogger(__name__)

CHANNELS = ("train", "validation", "test", "auxiliary", CANDIDATES)


def run_training(env: TrainingEnvironment, stop: StopSignal) -> None:
    started = time.time()
    hp = Hyperparameters.from_dict(env.hyperparameters)
    logger.info("Final configuration: %s", json.dumps(hp.to_dict(), sort_keys=True))
    check_channels(env)
    check_auxiliary_files(hp, env.channels.get(AUXILIARY))
    read_transformer_checkpoints(hp, env.channels.get(AUXILIARY))  # fail fast: config and weights header only
    topology = plan_topology(env, hp)
    if topology.processes_per_host > 1:  # one process per GPU, each running train_process
        run_local_processes(train_process, env, stop, topology)
        return
    train_process(env, stop, topology, 0, hp, started)


def train_process(
    env: TrainingEnvironment,
    stop: StopSignal,
    topology: Topology,
    local_rank: int,
    hp: Hyperparameters | None = None,
    started: float | None = None,
) -> None:
    """One process of the job: the whole job on a host with one device, one rank of it otherwise."""
    started = started or time.time()
    hp = hp or Hyperparameters.from_dict(env.hyperparameters)
    with connect(topology, local_rank) as dist:
        train_with(env, stop, hp, dist, started)


def train_with(
    env: TrainingEnvironment, stop: StopSignal, hp: Hyperparameters, dist: Distributed, started: float
) -> None:
    device = dist.device
    idle, governor = "", None
    if device.type == "cpu":
        free = free_cores()  # shared by this host's processes, like its cores
        share = None if free is None else free / dist.local_size
        most = max(env.num_cpus // dist.local_size, 1)
        torch.set_num_threads(thread_count(most, free=share))
        governor = ThreadGovernor.start(most)  # follows the idle cores as other work comes and goes
        parts = [f"{free:.1f} of {env.num_cpus} cores idle at start"] if free is not None else []
        if governor is not None:
            parts.append(f"re-counted every {ADJUST_SECONDS:g} s, at most {most}")
        idle = f" ({'; '.join(parts)})" if parts else ""
    logger.info(
        "Training on %s with %d CPU thread(s)%s, %s", device, torch.get_num_threads(), idle, describe_wait_policy()
    )
    torch.manual_seed(hp.seed)

    clock = {"start": time.perf_counter()}
    init_model = read_init_model(hp, env.channels.get(AUXILIARY))  # before the data: a bad one fails in seconds
    train = read_train_channel(env, hp, stop)
    # The catalogue is read (and checked) before training, so that a bad one fails in seconds, not
    # after hours; only the master writes the model, so only it needs it.
    catalogue = read_catalogue(env.channels[CANDIDATES], hp) if CANDIDATES in env.channels and dist.is_master else None
    validation, test = (read_optional_channel(env, name, hp) for name in ("validation", "test"))
    if hp.in_batch_negatives:  # ranked among their batch: the positive pairs are what counts
        validation, test = positives_only(validation, "validation"), positives_only(test, "test")
    validation = shard_channel(dist, env, "validation", validation)
    test = shard_channel(dist, env, "test", test)
    clock["data"] = time.perf_counter()

    checkpoints = read_transformer_checkpoints(hp, env.channels.get(AUXILIARY))
    model = Object2VecModel(hp, transformer_specs(checkpoints)).to(device)
    logger.info("Model has %d parameters", sum(p.numel() for p in model.parameters()))
    if hp.scores_by_cosine and not hp.is_classification:  # before init_model: a matching head wins
        start_from_label_range(model, train, validation)
    initialise_token_embeddings(model, hp, env.channels.get(AUXILIARY))  # logs each encoder's table
    initialise_transformers(model, hp, checkpoints)  # logs each transformer
    if init_model is not None:
        initialise_from_model(model, hp, init_model)  # after the embedding files: a matching table wins
    if hp.in_batch_negatives:
        logger.info(
            "In-batch negatives: each training pair's in1 is ranked against the other in1 of its mini-batch "
            "(%d pairs), no negatives sampled",
            hp.mini_batch_size,
        )
    if hp.negative_sampling_rate:
        logger.info(
            "%s",
            describe_negative_sampling(
                hp.negative_sampling_rate, hp.is_classification, hp.num_classes, hp.negative_sampling_grouped
            ),
        )
    store = CheckpointStore(env.checkpoint_dir, env.current_host) if env.checkpoint_dir.is_dir() else None
    checkpointer = Checkpointer(store, dist, hp.to_dict())
    trainer = Trainer(
        model, hp, device, env.current_host, stop, dist, checkpointer, env.channels["train"].distribution, governor
    )
    clock["model"] = time.perf_counter()
    with stop.deferred():
        result = trainer.fit(train, validation, trainer.restore())
        clock["training"] = time.perf_counter()
        if result.best_state is None:
            raise TrainingStopped(
                f"training stopped by {result.stopped_by} before the first epoch ended; no model saved"
            )
        model.load_state_dict(result.best_state)
        if hp.in_batch_negatives:
            calibrate_in_batch_scores(model, hp, device, validation, train)
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
            if dist.is_master:
                save_model(model, env.model_dir, info)
            raise TrainingStopped(
                f"training stopped by {result.stopped_by} after {result.epochs_completed} complete epoch(s); "
                f"the best model so far (epoch {result.best_epoch}) was saved to {env.model_dir}"
            )
        if test is not None:
            for name, value in trainer.evaluate(test).items():
                log_quality(env.current_host, "test", name, value)
        clock["test"] = time.perf_counter()
        if dist.is_master:  # one model for the whole job
            save_model(model, env.model_dir, info)
        dist.barrier()
        clock["saving"] = time.perf_counter()
    logger.info(
        "Saved the model of epoch %d to %s (%.1f s in all)", result.best_epoch, env.model_dir, time.time() - started
    )
    if catalogue is not None:
        write_retrieval_index(env, hp, catalogue, stop)
        clock["retrieval index"] = time.perf_counter()
    elif dist.is_master and (env.model_dir / INDEX_FILE).exists():  # an earlier model's: it would not load
        (env.model_dir / INDEX_FILE).unlink()
        logger.warning("Removed %s: it was built for an earlier model", env.model_dir / INDEX_FILE)
    logger.info("%s", describe_time(clock, result.epochs_completed))


def start_from_label_range(
    model: Object2VecModel, train: PairDataset | PipeEpochs, validation: PairDataset | None
) -> None:
    """A regression on the cosine alone starts spanning the training labels' range (the validation
    labels' when the train channel is streamed in Pipe mode)."""
    name, pairs = ("train", train) if isinstance(train, PairDataset) else ("validation", validation)
    if pairs is None or len(pairs) == 0:
        logger.warning(
            "Regression on the cosine (comparator_list=cosine, mlp_layers=0): the score starts at the default "
            "init, since the train channel is in Pipe mode and there is no validation channel to read the labels' "
            "range from; it may learn slowly (give a validation channel, or mlp_layers >= 1)"
        )
        return
    low, high = float(pairs.labels.min()), float(pairs.labels.max())
    model.start_cosine_regression(low, high)
    logger.info(
        "Regression on the cosine: the score starts at %g + %g x cosine (the %s labels' range)",
        low,
        high - low if high > low else 1.0,
        name,
    )


def calibrate_in_batch_scores(
    model: Object2VecModel,
    hp: Hyperparameters,
    device: torch.device,
    validation: PairDataset | None,
    train: PairDataset | PipeEpochs,
) -> None:
    """The ranking leaves the pair scores' offset free: fit it on the validation pairs, else on the
    training pairs (in_batch.calibrate)."""
    name, pairs = ("validation", validation) if validation is not None else ("train", train)
    if not isinstance(pairs, PairDataset):  # a Pipe-mode channel is streamed once per epoch
        logger.warning(
            "In-batch negatives: the pair scores were not calibrated (no validation channel, and the train "
            "channel is in Pipe mode): they rank pairs, but 0.5 does not separate true pairs from others; "
            "give a validation channel of positive pairs to calibrate them"
        )
        return
    calibration = calibrate(model, pairs, hp, device)
    if calibration is None:
        logger.warning("In-batch negatives: the pair scores were not calibrated: no %s batch holds a negative", name)
        return
    logger.info(
        "In-batch negatives: pair scores calibrated on %d %s pairs against %d in-batch negatives (class-1 bias "
        "%+.4g): mean score of a true pair %.3f, of a negative %.3f",
        calibration.positives,
        name,
        calibration.negatives,
        calibration.shift,
        calibration.positive_score,
        calibration.negative_score,
    )


def write_retrieval_index(
    env: TrainingEnvironment, hp: Hyperparameters, catalogue: list[CandidateBlock], stop: StopSignal
) -> None:
    """Encode the candidates with the saved model (as `serve` will load it) and write model/retrieval.index."""
    from object2vec.retrieval.build import build_index
    from object2vec.serving.predictor import Predictor

    try:
        build_index(Predictor.load(env.model_dir), catalogue, hp, env.model_dir)
    except TrainingStopped as err:
        raise TrainingStopped(
            f"stopped by {stop.requested} while building the retrieval index: the model was saved to "
            f"{env.model_dir}, the index was not; build it with `python -m object2vec index --model-dir MODEL_DIR "
            "CANDIDATES...`"
        ) from err


def describe_time(clock: dict[str, float], epochs: int) -> str:
    """Where the job's time went: the log line users (and benchmarks/movielens.py) read."""
    age = process_age()
    startup = (
        f"start-up {age - (time.perf_counter() - clock['start']):.2f} s (interpreter, imports, setup), " if age else ""
    )
    phases = list(clock.items())
    parts = [f"{name} {end - begin:.2f} s" for (_, begin), (name, end) in zip(phases, phases[1:], strict=False)]
    return f"Time: {startup}{', '.join(parts)} ({epochs} epoch(s), validation included)"


def process_age() -> float | None:
    """Seconds since this process started (Linux: /proc), so start-up time can be reported."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time after boot
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(uptime - started, 0.0)


def check_channels(env: TrainingEnvironment) -> None:
    unknown = sorted(set(env.channels) - set(CHANNELS))
    if unknown:
        raise ClientError(
            f"unknown channel(s) {', '.join(unknown)}: Object2Vec reads the channels {', '.join(CHANNELS)}"
        )
    if "train" not in env.channels:
        raise ClientError("the train channel is required: give the training job a channel named train")


def read_train_channel(env: TrainingEnvironment, hp: Hyperparameters, stop: StopSignal) -> PairDataset | PipeEpochs:
    """In Pipe mode, one FIFO per epoch: the records are read as each epoch begins."""
    channel = env.channels["train"]
    return PipeEpochs(channel, hp, stop) if channel.input_mode == "Pipe" else read_channel(channel, hp)


def shard_channel(
    dist: Distributed, env: TrainingEnvironment, name: str, dataset: PairDataset | None
) -> PairDataset | None:
    """This process's part of an evaluation channel (the metrics are all-reduced)."""
    return shard(dist, dataset, env.channels[name].distribution) if dataset is not None else None


def read_optional_channel(env: TrainingEnvironment, name: str, hp: Hyperparameters) -> PairDataset | None:
    channel = env.channels.get(name)
    if channel is None:
        return None
    return read_pipe(channel, hp) if channel.input_mode == "Pipe" else read_channel(channel, hp)


def _size(dataset: PairDataset | None) -> int:
    return len(dataset) if dataset is not None else 0
