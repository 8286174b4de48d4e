"""In-batch negatives (an extension, `in_batch_negatives=true`): learning from positive pairs only,
without sampled negatives. Each pair's in1 is ranked against the in1 of every other pair of its
mini-batch, and the loss is the cross-entropy of picking its own: sentence-transformers'
MultipleNegativesRankingLoss, InfoNCE. A batch of B pairs gives every pair B - 1 negatives for
the cost of encoding 2B sequences once, where negative_sampling_rate=5 encodes 12B sequences
for 5 negatives each.

The score of in0 i against in1 j is the model's own margin for that pair (the logit of class 1
minus that of class 0, `Object2VecModel.pair_margins`), so the trained model serves pair scores
and embeddings as any other. Pairs that are positives of the batch (the same in0 with the same
in1 as some pair of the batch: a duplicated in1, or a second label of the same document) are not
counted as negatives. The reported cross_entropy and accuracy are of this ranking: accuracy is
the share of pairs whose own in1 scores highest in their batch.

A job of several processes ranks among the whole global mini-batch, as one process would: each
gathers the in1 encodings of the others' shares (`Distributed.gather_rows`, with their gradients)
and the sequences of their pairs (for the positives). Validation ranks within each process's own
batches of mini_batch_size.

The ranking fixes the margins only up to a constant per in0 (a softmax over a row ignores it), so
after training `calibrate` shifts the class-1 bias to where a probability of 0.5 separates true
pairs from the batch's negatives at equal weight; without it a random pair scored as a pair. The
ranking, the embeddings and the metrics do not change.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from object2vec.config import Hyperparameters
from object2vec.data.batching import Batch, Tokens, iterate_batches
from object2vec.data.records import PairDataset
from object2vec.errors import ClientError
from object2vec.model.object2vec import Object2VecModel
from object2vec.training.distributed import Distributed

logger = logging.getLogger(__name__)

POSITIVE_LABEL = 1  # class 1 of num_classes=2; class 0 is "unrelated", as in negative sampling
CALIBRATION_NEGATIVES = 1 << 22  # negative pairs' margins kept for the calibration (bounds its memory)


def in_batch_step(
    margins: torch.Tensor, batch: Batch, dist: Distributed | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, C) margins of a batch's in0 against the C candidate in1 -> (logits (B, C), targets
    (B,), mean loss). The candidates are the batch's own in1 (C = B), or with `dist` those of
    every process's share of the global mini-batch in rank order (this process's from column
    `first` on)."""
    logits, targets = ranking_logits(margins, batch, dist)
    return logits, targets, F.cross_entropy(logits, targets)


def ranking_logits(
    margins: torch.Tensor, batch: Batch, dist: Distributed | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C) margins -> (B, C) logits of the in-batch ranking and (B,) the column of each pair's
    own in1: row i ranks every candidate in1 for in0 i; the other positives of in0 i among them
    are -inf (never a negative)."""
    known, first = batch_positives(batch.in0, batch.in1, batch.in0_rows, dist)  # (B, C)
    rows = torch.arange(len(known), device=margins.device)
    targets = rows + first
    known = known.to(margins.device)
    known[rows, targets] = False
    return margins.masked_fill(known, float("-inf")), targets


def batch_positives(
    in0: Tokens, in1: Tokens, in0_rows: torch.Tensor | None = None, dist: Distributed | None = None
) -> tuple[torch.Tensor, int]:
    """(B, C) bool: whether in0 i with candidate in1 j is a pair of the batch, i.e. some pair k
    has in0 k equal to in0 i and in1 k equal to in1 j; and the column of this process's first
    pair. One process: the candidates are the batch's own in1 (C = B, first 0, the diagonal is
    true). With `dist`: every process's pairs and in1, gathered in rank order (C = the global batch)."""
    keys0, keys1 = _keys(in0), _keys(in1)  # (B or D, 1 + L0), (B, 1 + L1)
    if in0_rows is not None:
        keys0 = keys0.index_select(0, in0_rows)  # (B, 1 + L0)
    first = 0
    if dist is not None and dist.enabled:
        width0, width1 = dist.agree_max([keys0.shape[1], keys1.shape[1]])
        keys = torch.cat([_widened(keys0, width0), _widened(keys1, width1)], dim=1)  # (B, width0 + width1)
        keys, first = dist.gather_rows(keys)  # (C, width0 + width1): every process's pairs
        keys0, keys1 = keys.split([width0, width1], dim=1)
    group0 = torch.unique(keys0, dim=0, return_inverse=True)[1]  # (C,) equal ids for equal sequences
    group1 = torch.unique(keys1, dim=0, return_inverse=True)[1]  # (C,)
    # The batch's (in0, in1) pairs as a table of distinct in0 x distinct in1, then looked up for
    # every (i, j): O(B * C) time and memory, as the margins themselves.
    pairs = torch.zeros(int(group0.max()) + 1, int(group1.max()) + 1, dtype=torch.bool, device=group0.device)
    pairs[group0, group1] = True  # (D0, D1)
    own = group0.narrow(0, first, len(in1))  # (B,) this process's pairs
    return pairs.index_select(0, own).index_select(1, group1), first


def _keys(tokens: Tokens) -> torch.Tensor:
    """(B, 1 + L) int64: length + ids, zero-padded; equal rows for equal sequences (exact)."""
    return torch.cat([tokens.lengths[:, None], tokens.padded_ids()], dim=1)


def _widened(keys: torch.Tensor, width: int) -> torch.Tensor:
    """Keys zero-padded to `width` columns (a longer padding keeps equal sequences equal)."""
    return F.pad(keys, (0, width - keys.shape[1]))


def ranking_batches(dataset: PairDataset, hp: Hyperparameters) -> Iterator[Batch]:
    """Evaluation batches of the ranking: shuffled batches of mini_batch_size (the candidates a pair
    is ranked among, as in training), the same order on every call so that epochs compare."""
    return iterate_batches(dataset, hp.mini_batch_size, torch.Generator().manual_seed(hp.seed), hp.bucket_width)


def check_positives(dataset: PairDataset, channel: str = "train") -> None:
    """Training data for in-batch negatives holds positive pairs only."""
    others = int((dataset.labels != POSITIVE_LABEL).sum())
    if others:
        first = int((dataset.labels != POSITIVE_LABEL).nonzero()[0, 0])
        raise ClientError(
            f"in_batch_negatives=true trains on positive pairs only (label {POSITIVE_LABEL}), but the {channel} "
            f"channel has {others} record(s) with another label (the first is record {first + 1}, label "
            f"{int(dataset.labels[first])}): remove them, since the other pairs of each mini-batch are the "
            "negatives, or train with negative_sampling_rate instead"
        )


def positives_only(dataset: PairDataset | None, channel: str) -> PairDataset | None:
    """An evaluation channel's positive pairs (the in-batch ranking needs no negatives: a
    validation file written for negative sampling, with label-0 rows, still works)."""
    if dataset is None:
        return None
    keep = (dataset.labels == POSITIVE_LABEL).nonzero().squeeze(1)
    if len(keep) == len(dataset):
        return dataset
    if len(keep) == 0:
        raise ClientError(
            f"in_batch_negatives=true scores the {channel} channel by ranking its positive pairs (label "
            f"{POSITIVE_LABEL}) within each mini-batch, but it has none: add positive pairs, or leave the channel out"
        )
    logger.info(
        "Channel %s: %d of %d records are positive pairs; the other %d are not used (in-batch negatives)",
        channel,
        len(keep),
        len(dataset),
        len(dataset) - len(keep),
    )
    return PairDataset(in0=dataset.in0.select(keep), in1=dataset.in1.select(keep), labels=dataset.labels[keep])


@dataclass(frozen=True)
class Calibration:
    shift: float  # added to the margin (the class-1 bias)
    positives: int  # pairs it was fitted on
    negatives: int  # in-batch negatives it was fitted on
    positive_score: float  # mean probability of class 1, after the shift
    negative_score: float


@torch.inference_mode()
def calibrate(
    model: Object2VecModel, dataset: PairDataset, hp: Hyperparameters, device: torch.device
) -> Calibration | None:
    """Shift the model's class-1 bias so that its pair scores mean something on their own: over the
    seeded batches of `dataset` (positive pairs, batches of mini_batch_size as in training), the
    mean score of a negative equals one minus that of a true pair. None (the model unchanged) when
    the batches hold no negatives (one pair, or every pair a positive of every other)."""
    model.eval()
    positives, negatives, count = [], [], 0
    for batch in ranking_batches(dataset, hp):
        batch = batch.with_layouts(model.layouts).to(device)
        margins = model(batch.in0, batch.in1, batch.in0_rows, all_pairs=True)  # (B, B)
        known, _ = batch_positives(batch.in0, batch.in1, batch.in0_rows)  # (B, B)
        positives.append(margins.diagonal().double().cpu())  # (B,)
        negatives.append(margins[~known.to(margins.device)].double().cpu())  # (<= B * (B - 1),)
        count += len(negatives[-1])
        if count >= CALIBRATION_NEGATIVES:
            break
    if count == 0:
        return None
    true, false = torch.cat(positives), torch.cat(negatives)
    shift = balanced_shift(true, false)
    model.mlp[-1].bias[1] += shift  # the margin is class 1's logit minus class 0's
    return Calibration(
        shift,
        len(true),
        len(false),
        float(torch.sigmoid(true + shift).mean()),
        float(torch.sigmoid(false + shift).mean()),
    )


def balanced_shift(positives: torch.Tensor, negatives: torch.Tensor, steps: int = 100) -> float:
    """The c that minimises mean softplus(-(p + c)) + mean softplus(n + c), the logistic loss with
    positives and negatives weighted equally: the root of mean sigmoid(p + c) - 1 + mean
    sigmoid(n + c), which rises from -1 to 1 with c (bisection: no step can overshoot)."""
    bound = float(torch.cat([positives, negatives]).abs().max()) + 40.0  # sigmoid saturates beyond
    low, high = -bound, bound
    for _ in range(steps):
        middle = (low + high) / 2
        slope = torch.sigmoid(positives + middle).mean() - 1 + torch.sigmoid(negatives + middle).mean()
        low, high = (low, middle) if slope > 0 else (middle, high)
    return (low + high) / 2
