"""The epoch loop: mini-batches, the optimizer, per-epoch metrics, early stopping, best-epoch model.

Early stopping follows the documentation: training stops once the monitored loss (validation when
there is a validation channel, else train) has gone `early_stopping_patience` consecutive epochs
without falling at least `early_stopping_tolerance` below the best loss so far. The model kept is
the one of the epoch with the lowest monitored loss. With `learning_rate_plateau_factor` < 1, each
epoch that does not improve by the tolerance also multiplies the learning rates by that factor.
With `ema_decay` > 0, validation, early stopping and the kept model use the moving average of the
weights (training/weight_average.py) while the optimizer steps the weights themselves.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from object2vec.config import Hyperparameters
from object2vec.data.batching import Batch, group_batch_size, iterate_batches, length_sorted_batches
from object2vec.data.records import PairDataset
from object2vec.data.sampling import with_negatives
from object2vec.errors import ClientError
from object2vec.model.object2vec import Object2VecModel
from object2vec.threads import ThreadGovernor
from object2vec.training.checkpoint import Checkpointer, Position
from object2vec.training.distributed import Distributed
from object2vec.training.in_batch import check_positives, in_batch_step, ranking_batches
from object2vec.training.metrics import MetricAccumulator, log_progress, log_quality, log_throughput, loss_name
from object2vec.training.optimizers import make_optimizer
from object2vec.training.pretrained_lr import TARGET_LR
from object2vec.training.sharding import FULLY_REPLICATED, BatchStream, split_of
from object2vec.training.signals import StopSignal
from object2vec.training.weight_average import WeightAverage

logger = logging.getLogger(__name__)

EVAL_BATCH_SIZE = 4096  # evaluation has no gradients, so larger batches are cheap


def compute_loss(outputs: torch.Tensor, labels: torch.Tensor, classification: bool) -> torch.Tensor:
    if classification:
        return F.cross_entropy(outputs, labels)  # outputs: (B, C) logits
    return F.mse_loss(outputs.squeeze(1), labels)  # outputs: (B, 1)


def copy_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's state dict; a tied weight (one parameter under two names, e.g. the
    encoder of tied_encoders) stays one copy."""
    copies: dict[int, torch.Tensor] = {}
    state = {}
    for name, value in model.state_dict(keep_vars=True).items():  # the parameters themselves: tied ones are one
        if id(value) not in copies:
            copies[id(value)] = value.detach().clone()
        state[name] = copies[id(value)]
    return state


def decay_learning_rates(optimizer: Any, factor: float, epoch: int) -> None:
    """Multiply every param group's learning rate by `factor` (and a transformer group's warm-up
    target, so that the ramp ends at the decayed rate). The rates live in the optimizer's
    state_dict, so a checkpoint carries them and a resumed run goes on at the decayed rate."""
    for group in optimizer.param_groups:  # an OptimizerGroup lists every inner optimizer's groups
        group["lr"] *= factor
        if TARGET_LR in group:
            group[TARGET_LR] *= factor
    rates = ", ".join(f"{float(group['lr']):.3g}" for group in optimizer.param_groups)
    logger.info("Epoch %d: no improvement; learning rate x %g -> %s", epoch, factor, rates)


@dataclass
class FitResult:
    best_epoch: int | None = None  # 0-based, as in the metric lines
    best_loss: float | None = None
    best_state: dict[str, torch.Tensor] | None = None
    epochs_completed: int = 0
    stopped_by: str | None = None  # signal name when a stop was requested
    history: list[dict[str, float]] = field(default_factory=list)
    reference: float | None = None  # early stopping: best loss at the last significant improvement
    epochs_without_improvement: int = 0


@dataclass
class Resume:
    """What `Trainer.fit` continues from (`Trainer.load_state_dict` makes it from a checkpoint)."""

    result: FitResult  # best model and loss, early-stopping state, history
    position: Position
    train_count: int  # records and metric sums of the epoch's steps already done (rank 0 only)
    train_sums: dict[str, torch.Tensor]


class Trainer:
    def __init__(
        self,
        model: Object2VecModel,
        hp: Hyperparameters,
        device: torch.device,
        host: str,
        stop: StopSignal,
        dist: Distributed | None = None,  # several processes: see training/distributed.py and sharding.py
        checkpointer: Checkpointer | None = None,
        train_distribution: str = FULLY_REPLICATED,  # the train channel's S3DistributionType
        governor: ThreadGovernor | None = None,  # re-sizes torch's CPU threads to the idle cores
    ) -> None:
        self.model = model
        self.dist = dist or Distributed.single(device)
        self.net = self.dist.wrap(model)  # what training steps run through (DDP or the model)
        self.train_split = split_of(self.dist, train_distribution)
        self.checkpointer = checkpointer or Checkpointer(None, self.dist, {})
        self.resume: Resume | None = None
        self.stopped_at = 0  # steps done in the epoch a stop cut short
        self.partial: tuple[int, dict[str, torch.Tensor]] | None = None  # its train metric sums
        self.epoch_start_generators: dict[str, torch.Tensor] = {}
        self.governor = governor
        self.hp = hp
        self.device = device
        self.host = host
        self.stop = stop
        self.optimizer = make_optimizer(hp, model)
        self.generator = torch.Generator().manual_seed(hp.seed)
        self.average = WeightAverage(model, hp.ema_decay) if hp.ema_decay else None
        if self.average is not None:
            logger.info(
                "ema_decay=%g: validation, early stopping and the saved model use the moving average of the "
                "weights over about the last %.0f steps",
                hp.ema_decay,
                self.average.steps,
            )

    def fit(self, train: PairDataset | Any, validation: PairDataset | None, resume: Resume | None = None) -> FitResult:
        """Train from the start, or from `resume`; `train` is a dataset or has next_epoch() (Pipe mode)."""
        hp = self.hp
        monitored = "validation" if validation is not None else "train"
        loss_metric = loss_name(hp.is_classification)
        result = resume.result if resume is not None else FitResult()
        first = resume.position if resume is not None else Position(0, 0)
        if self.average is not None and not hasattr(train, "next_epoch"):  # Pipe mode: the size is not known
            self.check_average_span(len(train))
        self.resume = resume
        for epoch in range(first.epoch, hp.epochs):
            if result.epochs_without_improvement >= hp.early_stopping_patience:
                break  # resumed from the checkpoint of the epoch that stopped early
            data = train.next_epoch() if hasattr(train, "next_epoch") else train
            train_metrics = self.train_epoch(data, epoch, first.step if epoch == first.epoch else 0)
            if train_metrics is None:  # stopped mid-epoch: every process after the same step
                result.stopped_by = self.stop.requested or "a stop request on another host"
                self.checkpoint(result, Position(epoch, self.stopped_at), self.partial)
                break
            metrics = {f"train:{k}": v for k, v in train_metrics.items()}
            with self.kept_weights():  # what is evaluated and kept: the weights, or their average
                if validation is not None:
                    for name, value in self.evaluate(validation).items():
                        log_quality(self.host, "validation", name, value, epoch)
                        metrics[f"validation:{name}"] = value
                result.history.append(metrics)
                result.epochs_completed = epoch + 1
                loss = metrics[f"{monitored}:{loss_metric}"]
                if not math.isfinite(loss):
                    raise ClientError(
                        f"training diverged: the {monitored} {loss_metric} is {loss} at epoch {epoch}; "
                        f"lower learning_rate (now {hp.learning_rate:g}) or check the labels"
                    )
                if result.best_loss is None or loss < result.best_loss:
                    result.best_loss, result.best_epoch = loss, epoch
                    result.best_state = copy_weights(self.model)
                    logger.info(
                        "Epoch %d: %s %s improved to %.6g; keeping this model", epoch, monitored, loss_metric, loss
                    )
            if result.reference is None or loss < result.reference - hp.early_stopping_tolerance:
                result.reference, result.epochs_without_improvement = loss, 0
            else:
                result.epochs_without_improvement += 1
                going_on = epoch + 1 < hp.epochs and result.epochs_without_improvement < hp.early_stopping_patience
                if hp.learning_rate_plateau_factor < 1.0 and going_on:
                    decay_learning_rates(self.optimizer, hp.learning_rate_plateau_factor, epoch)
            log_progress(self.host, 100.0 * (epoch + 1) / hp.epochs)
            self.checkpoint(result, Position(epoch + 1, 0))
            if self.dist.agree([int(bool(self.stop.requested))])[0]:
                result.stopped_by = self.stop.requested or "a stop request on another host"
                break
            if result.epochs_without_improvement >= hp.early_stopping_patience:
                logger.info(
                    "Early stopping at epoch %d: %s %s has not improved by %g for %d epochs; best epoch %d",
                    epoch,
                    monitored,
                    loss_metric,
                    hp.early_stopping_tolerance,
                    result.epochs_without_improvement,
                    result.best_epoch,
                )
                break
        return result

    def train_epoch(self, train: PairDataset, epoch: int, skip: int = 0) -> dict[str, float] | None:
        """One pass over the shuffled training data (minus `skip` steps done before a resume); None
        when a stop was requested mid-way."""
        model, hp = self.model, self.hp
        self.epoch_start_generators = self.generator_states()
        model.train()
        accumulator = MetricAccumulator(hp.is_classification)
        if skip and self.resume is not None and self.dist.is_master:  # sums of the steps done
            accumulator.count = self.resume.train_count
            accumulator.sums = {k: v.to(self.device).double().clone() for k, v in self.resume.train_sums.items()}
        start = time.perf_counter()
        if hp.in_batch_negatives:
            check_positives(train)  # per epoch: in Pipe mode each epoch reads the channel afresh
        train = with_negatives(train, hp.negative_sampling_rate, self.generator)  # drawn afresh each epoch
        grouped = hp.negative_sampling_grouped and hp.negative_sampling_rate > 0  # a record beside its negatives
        # Each process takes its slice of every global mini-batch; all stop after the same step.
        size = group_batch_size(hp.mini_batch_size, self.train_split.size, self.dist.world_size)
        stream = BatchStream(
            self.dist,
            lambda: iterate_batches(train, size, self.generator, hp.bucket_width, grouped),
            self.train_split,
            self.stop,
            skip,
        )
        layouts, governor = model.layouts, self.governor
        for batch in stream:
            if governor is not None:
                governor.tick()  # cheap: a clock read, and /proc/stat every ADJUST_SECONDS
            batch = batch.with_layouts(layouts).to(self.device)  # an encoder's packing, made once per batch
            outputs, labels, loss = self.scored(self.net, batch, across_processes=True)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.average is not None:
                self.average.update()
            accumulator.add(outputs.detach(), labels, loss.detach())
        self.dist.all_reduce_(accumulator)  # the job's sums; forces the device sync
        if stream.stopped:
            self.stopped_at, self.partial = stream.steps, (accumulator.count, accumulator.sums)
            return None
        metrics = accumulator.result()  # forces the device sync before the clock stops
        elapsed = time.perf_counter() - start
        log_throughput(self.host, accumulator.count / max(elapsed, 1e-9))
        for name, value in metrics.items():
            log_quality(self.host, "train", name, value, epoch)
        return metrics

    def scored(
        self, net: torch.nn.Module, batch: Batch, across_processes: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A batch through `net` (the DDP wrapper when training): (outputs, their labels, mean loss).
        With in-batch negatives the outputs are the (B, C) ranking logits, the labels the column of
        each pair's own in1; `across_processes` (training, where every process takes a step at
        once): the candidates are the in1 of every process's share of the global mini-batch."""
        if self.hp.in_batch_negatives:  # every in0 against every candidate in1
            dist = self.dist if across_processes and self.dist.enabled else None
            gather = None if dist is None else (lambda rows: dist.gather_rows(rows)[0])
            margins = net(batch.in0, batch.in1, batch.in0_rows, all_pairs=True, gather=gather)  # (B, C)
            return in_batch_step(margins, batch, dist)
        outputs = net(batch.in0, batch.in1, batch.in0_rows)  # (B, num_classes) or (B, 1)
        return outputs, batch.labels, compute_loss(outputs, batch.labels, self.hp.is_classification)

    def check_average_span(self, records: int) -> None:
        """Warn when the moving average spans more steps than the job takes: it would stay close to
        the untrained starting weights (ema_decay=0.999 on a 40-epoch job of 37 steps an epoch
        saved a model with a validation MSE of 4.0 instead of 0.87)."""
        hp = self.hp
        per_epoch = math.ceil(records * (1 + hp.negative_sampling_rate) / hp.mini_batch_size)
        total = per_epoch * hp.epochs
        assert self.average is not None
        if self.average.steps > total / 4:
            logger.warning(
                "ema_decay=%g averages over about %.0f steps, but this job takes at most %d (%d epochs of %d): the "
                "average would lag behind the training, towards the starting weights. Use an ema_decay whose span "
                "1 / (1 - ema_decay) is a few epochs at most, e.g. %g",
                hp.ema_decay,
                self.average.steps,
                total,
                hp.epochs,
                per_epoch,
                round(1.0 - 1.0 / max(per_epoch, 2), 4),
            )

    def kept_weights(self) -> AbstractContextManager[None]:
        """ema_decay: the averaged weights in the model for the block; otherwise the weights as they are."""
        return self.average.applied() if self.average is not None else nullcontext()

    @torch.inference_mode()
    def evaluate(self, dataset: PairDataset) -> dict[str, float]:
        self.model.eval()
        accumulator = MetricAccumulator(self.hp.is_classification)
        batch_size = max(self.hp.mini_batch_size, EVAL_BATCH_SIZE)
        layouts = self.model.layouts
        # Bucketed by length: the metrics are sums, and similar lengths keep packed steps few.
        batches = length_sorted_batches(dataset, batch_size)
        if self.hp.in_batch_negatives:
            batches = ranking_batches(dataset, self.hp)  # the training ranking's candidates
        for batch in batches:
            if self.governor is not None:
                self.governor.tick()
            batch = batch.with_layouts(layouts).to(self.device)
            outputs, labels, _ = self.scored(self.model, batch)
            accumulator.add(outputs, labels)
        self.dist.all_reduce_(accumulator)  # each process scored its shard
        return accumulator.result()

    def checkpoint(
        self, result: FitResult, position: Position, partial: tuple[int, dict[str, Any]] | None = None
    ) -> None:
        if self.checkpointer.writes:
            self.checkpointer.save(self.state_dict(result, position, partial), position)

    def state_dict(
        self, result: FitResult, position: Position, partial: tuple[int, dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """Everything a run needs to continue from `position` as if never stopped (see training/checkpoint.py)."""
        count, sums = partial if partial is not None else (0, {})
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "best_state": result.best_state,
            "averages": self.average.state() if self.average is not None else None,
            "fit": {
                "best_epoch": result.best_epoch,
                "best_loss": result.best_loss,
                "epochs_completed": result.epochs_completed,
                "reference": result.reference,
                "epochs_without_improvement": result.epochs_without_improvement,
                "history": result.history,
            },
            "train_sums": {"count": count, "sums": dict(sums)},
            "rng": {
                # mid-epoch: the generators as the epoch began, so it draws the same order again
                "generators": self.generator_states(at_epoch_start=position.step > 0),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
        }

    def load_state_dict(self, state: dict[str, Any], position: Position) -> Resume:
        """Restore a `state_dict` saved at `position`; what `fit` then continues from."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.average is not None:
            if state.get("averages") is None:  # written without ema_decay: the average starts from here
                self.average = WeightAverage(self.model, self.hp.ema_decay)
            else:
                self.average.load_state(state["averages"])
        self.set_generator_states(state["rng"]["generators"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        fit = state["fit"]
        result = FitResult(
            best_epoch=fit["best_epoch"],
            best_loss=fit["best_loss"],
            best_state=state["best_state"],
            epochs_completed=fit["epochs_completed"],
            history=fit["history"],
            reference=fit["reference"],
            epochs_without_improvement=fit["epochs_without_improvement"],
        )
        sums = state["train_sums"]
        logger.info(
            "Resuming from the checkpoint of epoch %d, step %d (best epoch so far: %s)",
            position.epoch,
            position.step,
            fit["best_epoch"],
        )
        return Resume(result, position, sums["count"], sums["sums"])

    def restore(self) -> Resume | None:
        """Load the newest checkpoint every process has; None (start from scratch) when there is none."""
        loaded = self.checkpointer.load()
        return self.load_state_dict(loaded[1], loaded[0]) if loaded is not None else None

    def generator_states(self, at_epoch_start: bool = False) -> dict[str, torch.Tensor]:
        """States of every torch.Generator this trainer holds (now, or as the epoch began)."""
        if at_epoch_start:
            return dict(self.epoch_start_generators)
        return {name: g.get_state() for name, g in vars(self).items() if isinstance(g, torch.Generator)}

    def set_generator_states(self, states: dict[str, torch.Tensor]) -> None:
        for name, state in states.items():
            generator = getattr(self, name, None)
            if isinstance(generator, torch.Generator):
                generator.set_state(state)
