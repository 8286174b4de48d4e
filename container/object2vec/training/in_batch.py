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
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from object2vec.data.batching import Batch, Tokens
from object2vec.data.records import PairDataset
from object2vec.errors import ClientError

logger = logging.getLogger(__name__)

POSITIVE_LABEL = 1  # class 1 of num_classes=2; class 0 is "unrelated", as in negative sampling


def ranking_logits(margins: torch.Tensor, batch: Batch) -> torch.Tensor:
    """(B, B) margins -> (B, B) logits of the in-batch ranking: row i ranks every in1 of the batch
    for in0 i; the batch's other positives of in0 i are -inf (never a negative)."""
    known = batch_positives(batch.in0, batch.in1, batch.in0_rows).to(margins.device)  # (B, B)
    known.fill_diagonal_(False)
    return margins.masked_fill(known, float("-inf"))


def ranking_targets(logits: torch.Tensor) -> torch.Tensor:
    """(B,) the column of each row's own in1: the diagonal."""
    return torch.arange(logits.shape[0], device=logits.device)


def batch_positives(in0: Tokens, in1: Tokens, in0_rows: torch.Tensor | None = None) -> torch.Tensor:
    """(B, B) bool: whether in0 i with in1 j is a pair of the batch, i.e. some pair k has in0 k
    equal to in0 i and in1 k equal to in1 j (the diagonal is always true)."""
    group0 = _groups(in0)  # (B or D,)
    if in0_rows is not None:
        group0 = group0.index_select(0, in0_rows)  # (B,)
    group1 = _groups(in1)  # (B,)
    # The batch's (in0, in1) pairs as a table of distinct in0 x distinct in1, then looked up for
    # every (i, j): O(B^2) time and memory, as the margins themselves.
    pairs = torch.zeros(int(group0.max()) + 1, int(group1.max()) + 1, dtype=torch.bool, device=group0.device)
    pairs[group0, group1] = True  # (D0, D1)
    return pairs.index_select(0, group0).index_select(1, group1)  # (B, B)


def _groups(tokens: Tokens) -> torch.Tensor:
    """(B,) int64: equal ids for equal sequences (exact: a row-wise unique of length + ids)."""
    keys = torch.cat([tokens.lengths[:, None], tokens.padded_ids()], dim=1)  # (B, 1 + L)
    return torch.unique(keys, dim=0, return_inverse=True)[1]


def in_batch_step(outputs: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, B) margins of a batch -> (logits (B, B), targets (B,), mean loss)."""
    logits = ranking_logits(outputs, batch)
    targets = ranking_targets(logits)
    return logits, targets, F.cross_entropy(logits, targets)


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
