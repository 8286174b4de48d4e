"""In-batch negatives (training/in_batch.py): which pairs of a batch are positives, the ranking
logits and loss, and the positive-only checks of the channels."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from object2vec.config import Hyperparameters
from object2vec.data.batching import Batch, make_batch
from object2vec.data.records import PairDataset, TokenSequences
from object2vec.errors import ClientError
from object2vec.model.object2vec import Object2VecModel
from object2vec.training.distributed import Distributed
from object2vec.training.in_batch import (
    balanced_shift,
    batch_positives,
    calibrate,
    check_positives,
    in_batch_step,
    positives_only,
    ranking_logits,
)
from object2vec.training.sharding import slice_batch


def dataset(in0: list[list[int]], in1: list[list[int]], labels: list[int] | None = None) -> PairDataset:
    labels = labels if labels is not None else [1] * len(in0)
    return PairDataset(
        TokenSequences.from_lists(in0), TokenSequences.from_lists(in1), torch.tensor(labels, dtype=torch.int64)
    )


# Pairs 0 and 2 share their in0 (one document, two labels); pairs 1 and 3 share their in1 (one
# label of two documents); pair 4 is alone. [3] and [3, 0] differ (length counts), as [] and [0].
IN0 = [[1, 2], [5], [1, 2], [6, 7], [3]]
IN1 = [[10], [20, 21], [11], [20, 21], [3, 0]]


def test_batch_positives_links_equal_in0_and_equal_in1_exactly() -> None:
    batch = make_batch(dataset(IN0, IN1), torch.arange(5))
    known, first = batch_positives(batch.in0, batch.in1)
    assert first == 0
    expected = torch.eye(5, dtype=torch.bool)
    expected[0, 2] = expected[2, 0] = True  # in1 of pair 2 is a label of document 0, and back
    expected[1, 3] = expected[3, 1] = True  # in1 of pair 3 is pair 1's in1
    assert torch.equal(known, expected)


def test_batch_positives_follow_through_a_shared_row() -> None:
    # Pair 0 (a, x), pair 1 (a, y), pair 2 (b, y): (b, x) is not known, (a, y) is.
    batch = make_batch(dataset([[1], [1], [2]], [[10], [11], [11]]), torch.arange(3))
    known, _ = batch_positives(batch.in0, batch.in1)
    assert known.tolist() == [[True, True, True], [True, True, True], [False, True, True]]


def test_batch_positives_with_grouped_in0_rows() -> None:
    # The grouped layout holds each distinct in0 once and in0_rows maps pairs to it.
    data = dataset([[1, 2], [1, 2], [3]], [[10], [11], [12]])
    group = torch.tensor([0, 0, 1])
    batch = make_batch(data, torch.arange(3), group)
    assert batch.in0_rows is not None
    known, _ = batch_positives(batch.in0, batch.in1, batch.in0_rows)
    assert known.tolist() == [[True, True, False], [True, True, False], [False, False, True]]


def test_ranking_logits_mask_other_positives_but_never_the_pair_itself() -> None:
    batch = make_batch(dataset(IN0, IN1), torch.arange(5))
    margins = torch.arange(25, dtype=torch.float32).view(5, 5)
    logits, targets = ranking_logits(margins, batch)
    assert targets.tolist() == [0, 1, 2, 3, 4]
    assert torch.equal(logits.diagonal(), margins.diagonal())
    assert logits[0, 2] == -math.inf and logits[2, 0] == -math.inf
    assert logits[1, 3] == -math.inf and logits[3, 1] == -math.inf
    assert logits[4].isfinite().all()


def test_in_batch_step_is_the_cross_entropy_of_picking_the_own_in1() -> None:
    batch = make_batch(dataset([[1], [2], [3]], [[4], [5], [6]]), torch.arange(3))
    margins = torch.tensor([[2.0, 0.0, 1.0], [0.5, 0.0, 3.0], [0.0, 0.0, 1.0]])
    logits, targets, loss = in_batch_step(margins, batch)
    assert targets.tolist() == [0, 1, 2]
    expected = -(F.log_softmax(margins, dim=1).diagonal()).mean()
    assert loss.item() == pytest.approx(expected.item())
    assert (logits.argmax(dim=1) == targets).tolist() == [True, False, True]


def test_check_positives_names_the_first_other_label() -> None:
    check_positives(dataset([[1], [2]], [[3], [4]], [1, 1]))
    with pytest.raises(ClientError) as err:
        check_positives(dataset([[1], [2], [3]], [[3], [4], [5]], [1, 0, 0]))
    text = str(err.value)
    assert "in_batch_negatives=true trains on positive pairs only (label 1)" in text
    assert "2 record(s) with another label (the first is record 2, label 0)" in text
    assert "negative_sampling_rate" in text


def test_positives_only_keeps_the_positive_pairs() -> None:
    assert positives_only(None, "validation") is None
    data = dataset([[1], [2], [3], [4]], [[5], [6, 7], [8], [9]], [0, 1, 0, 1])
    kept = positives_only(data, "validation")
    assert kept is not None and len(kept) == 2
    assert kept.labels.tolist() == [1, 1]
    batch = make_batch(kept, torch.arange(2))
    assert batch.in0.ids.tolist() == [2, 4] and batch.in1.ids.tolist() == [6, 7, 9]
    same = dataset([[1]], [[2]])
    assert positives_only(same, "test") is same
    with pytest.raises(ClientError, match="the test channel by ranking its positive pairs"):
        positives_only(dataset([[1]], [[2]], [0]), "test")


# A global mini-batch whose positives cross the processes' shares (rows 0-2 and 3-5 of two):
# pairs 0 and 5 share their in0, pairs 1 and 4 their in1.
GLOBAL_IN0 = [[1, 2], [3], [4, 5, 6], [7], [8, 9], [1, 2]]
GLOBAL_IN1 = [[10], [11, 12], [13], [14, 15, 16], [11, 12], [17]]
RANKING_MODEL = {
    "enc0_network": "pooled_embedding",
    "enc0_vocab_size": 20,
    "enc0_max_seq_len": 4,
    "enc0_token_embedding_dim": 4,
    "enc_dim": 6,
    "comparator_list": "hadamard,abs_diff",  # the general path: every pair through the MLP
    "mlp_layers": 1,
    "mlp_dim": 5,
    "num_classes": 2,
    "dropout": 0.0,
    "in_batch_negatives": "true",
}


def ranking_model() -> Object2VecModel:
    torch.manual_seed(0)
    return Object2VecModel(Hyperparameters.from_dict(RANKING_MODEL))


def global_batch() -> Batch:
    return make_batch(dataset(GLOBAL_IN0, GLOBAL_IN1), torch.arange(len(GLOBAL_IN0)))


def one_step(model: torch.nn.Module, batch: Batch, job: Distributed | None) -> dict:
    """What Trainer.scored and a training step do: margins against the candidates, the loss, its
    gradients (averaged over the processes by DDP)."""
    gather = None if job is None else (lambda rows: job.gather_rows(rows)[0])
    margins = model(batch.in0, batch.in1, all_pairs=True, gather=gather)
    logits, targets, loss = in_batch_step(margins, batch, job)
    loss.backward()
    module = model.module if hasattr(model, "module") else model
    return {
        "logits": logits.tolist(),
        "targets": targets.tolist(),
        "loss": loss.item(),
        "grads": {name: p.grad.flatten().tolist() for name, p in module.named_parameters() if p.grad is not None},
    }


def _process_step(rank: int, port: int, out: str) -> None:
    """One of two processes (spawned): its contiguous share of the global batch, as sharding gives."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        job = Distributed(rank, 2, rank, 2, torch.device("cpu"))
        step = one_step(job.wrap(ranking_model()), slice_batch(global_batch(), 2, rank), job)
        Path(out, f"rank{rank}.json").write_text(json.dumps(step))
    finally:
        dist.destroy_process_group()


def test_two_processes_rank_among_the_whole_global_batch_as_one_process(tmp_path: Path) -> None:
    """Each process's pairs are ranked against every in1 of the global mini-batch (gathered with
    their gradients), the positives of the other process's share masked: the logits, the loss and
    the DDP-averaged gradients are those of one process taking the whole batch."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_process_step, args=(port, str(tmp_path)), nprocs=2)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    alone = one_step(ranking_model(), global_batch(), None)
    logits = torch.tensor(ranks[0]["logits"] + ranks[1]["logits"])  # (6, 6): rows of rank 0, then of rank 1
    torch.testing.assert_close(logits, torch.tensor(alone["logits"]))
    assert logits[0, 5] == -math.inf and logits[5, 0] == -math.inf  # positives across the shares
    assert logits[1, 4] == -math.inf and logits[4, 1] == -math.inf
    assert ranks[0]["targets"] == [0, 1, 2] and ranks[1]["targets"] == [3, 4, 5]
    assert (ranks[0]["loss"] + ranks[1]["loss"]) / 2 == pytest.approx(alone["loss"], rel=1e-5)
    for rank in ranks:
        assert rank["grads"].keys() == alone["grads"].keys()
        for name, grad in alone["grads"].items():
            torch.testing.assert_close(torch.tensor(rank["grads"][name]), torch.tensor(grad), msg=name)


def test_balanced_shift_is_the_midpoint_of_mirrored_margins() -> None:
    # Positives and negatives mirrored around 4: the equal-weight logistic fit puts 0.5 at 4.
    shift = balanced_shift(torch.tensor([5.0, 7.0], dtype=torch.float64), torch.tensor([1.0, 3.0], dtype=torch.float64))
    assert shift == pytest.approx(-4.0, abs=1e-9)


def test_balanced_shift_equals_a_missed_pair_and_a_false_alarm_on_average() -> None:
    generator = torch.Generator().manual_seed(0)
    positives = torch.randn(50, generator=generator, dtype=torch.float64) * 3 + 12  # a scale-20 cosine's margins
    negatives = torch.randn(900, generator=generator, dtype=torch.float64) * 2 + 3
    shift = balanced_shift(positives, negatives)
    missed, false_alarm = 1 - torch.sigmoid(positives + shift).mean(), torch.sigmoid(negatives + shift).mean()
    assert float(missed) == pytest.approx(float(false_alarm), abs=1e-9)
    assert 3 < -shift < 12


def test_calibrate_moves_the_class_1_bias_only_and_keeps_the_ranking() -> None:
    model = ranking_model()
    data = dataset([[i % 19 + 1] for i in range(40)], [[(3 * i) % 19 + 1, 2] for i in range(40)])
    hp = model.hp
    batch = make_batch(data, torch.arange(40))
    with torch.no_grad():
        before = model(batch.in0, batch.in1, all_pairs=True)  # (40, 40)
        weights = {name: p.clone() for name, p in model.named_parameters()}
    calibration = calibrate(model, data, hp, torch.device("cpu"))
    assert calibration is not None and calibration.positives == 40
    with torch.no_grad():
        after = model(batch.in0, batch.in1, all_pairs=True)
    torch.testing.assert_close(after, before + calibration.shift)  # every margin shifted alike
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, weights[name])]
    assert changed == [f"mlp.{len(model.mlp) - 1}.bias"]  # the output layer's bias (its class-1 entry)
    assert calibration.positive_score == pytest.approx(1 - calibration.negative_score, abs=1e-6)


def test_calibrate_leaves_a_model_without_negatives_alone() -> None:
    model = ranking_model()
    bias = model.mlp[-1].bias.detach().clone()
    assert calibrate(model, dataset([[1]], [[2]]), model.hp, torch.device("cpu")) is None
    assert torch.equal(model.mlp[-1].bias, bias)
