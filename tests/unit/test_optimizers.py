"""Optimizers for row_sparse token embeddings and frozen pretrained rows (training/optimizers.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from object2vec.config import Hyperparameters
from object2vec.data.batching import Tokens
from object2vec.data.vocab import FROZEN_ROWS
from object2vec.model.object2vec import Object2VecModel
from object2vec.training.optimizers import OptimizerGroup, eager, make_optimizer, token_embeddings
from object2vec.training.trainer import compute_loss


def make_hp(**changes: object) -> Hyperparameters:
    raw: dict[str, object] = {
        "enc0_network": "pooled_embedding",
        "enc0_max_seq_len": 5,
        "enc0_vocab_size": 30,
        "enc0_token_embedding_dim": 4,
        "enc_dim": 4,
        "mlp_dim": 4,
        "mlp_layers": 1,
        "learning_rate": 0.05,
    }
    raw.update(changes)
    return Hyperparameters.from_dict(raw)


def train_steps(model: Object2VecModel, optimizer: object, steps: int = 3) -> None:
    # Ids 0..9 only: rows 10..29 are never used by a batch.
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        ids0 = Tokens.from_lists(torch.randint(0, 10, (8, 5), generator=generator).tolist())
        ids1 = Tokens.from_lists(torch.randint(0, 10, (8, 5), generator=generator).tolist())
        labels = torch.randint(0, 2, (8,), generator=generator)
        loss = compute_loss(model(ids0, ids1), labels, True)
        optimizer.zero_grad(set_to_none=True)  # type: ignore[attr-defined]
        loss.backward()
        optimizer.step()  # type: ignore[attr-defined]


def freeze(model: Object2VecModel, rows: list[int]) -> None:
    for embedding in token_embeddings(model):
        mask = torch.zeros(embedding.num_embeddings, dtype=torch.bool)
        mask[rows] = True
        embedding.register_buffer(FROZEN_ROWS, mask, persistent=False)


# Every optimizer with dense tables; the three that config allows with row_sparse.
@pytest.mark.parametrize(
    ("optimizer", "storage"),
    [(name, "dense") for name in ("adam", "adagrad", "sgd", "rmsprop", "adadelta")]
    + [(name, "row_sparse") for name in ("adam", "adagrad", "sgd")],
)
def test_frozen_rows_stay_fixed_under_weight_decay(optimizer: str, storage: str) -> None:
    hp = make_hp(optimizer=optimizer, weight_decay=0.5, token_embedding_storage_type=storage)
    torch.manual_seed(0)
    model = Object2VecModel(hp)
    freeze(model, [1, 2, 3])
    before = model.token_embedding(0).weight.detach().clone()
    train_steps(model, make_optimizer(hp, model))
    after = model.token_embedding(0).weight.detach()
    assert torch.equal(after[[1, 2, 3]], before[[1, 2, 3]])
    assert not torch.equal(after[[0, 4, 5]], before[[0, 4, 5]])
    if storage == "row_sparse":  # lazy: rows no batch used keep even their weight decay
        assert torch.equal(after[10:], before[10:])
    else:
        assert not torch.equal(after[10:], before[10:])


@pytest.mark.parametrize("network", ["pooled_embedding", "hcnn", "bilstm"])
def test_row_sparse_gives_sparse_gradients(network: str) -> None:
    hp = make_hp(enc0_network=network, token_embedding_storage_type="row_sparse", tied_token_embedding_weight="true")
    model = Object2VecModel(hp)
    ids = Tokens.from_lists([[1, 2, 3]])
    compute_loss(model(ids, ids), torch.tensor([1]), True).backward()
    grad = model.token_embedding(0).weight.grad
    assert grad is not None and grad.is_sparse


@pytest.mark.parametrize("optimizer", ["adagrad", "sgd"])
def test_row_sparse_matches_dense_without_decay(optimizer: str) -> None:
    results = []
    for storage in ("dense", "row_sparse"):
        hp = make_hp(optimizer=optimizer, token_embedding_storage_type=storage)
        torch.manual_seed(0)
        model = Object2VecModel(hp)
        train_steps(model, make_optimizer(hp, model))
        results.append(model.token_embedding(0).weight.detach())
    torch.testing.assert_close(results[0], results[1])


def test_row_sparse_adam_is_sparse_adam_plus_adam_and_checkpoints() -> None:
    hp = make_hp(token_embedding_storage_type="row_sparse")
    torch.manual_seed(0)
    model = Object2VecModel(hp)
    optimizer = make_optimizer(hp, model)
    assert isinstance(optimizer, OptimizerGroup)
    assert isinstance(optimizer.optimizers[0], torch.optim.SparseAdam)
    before = model.token_embedding(0).weight.detach().clone()
    train_steps(model, optimizer)
    after = model.token_embedding(0).weight.detach()
    assert not torch.equal(after[:10], before[:10]) and torch.equal(after[10:], before[10:])
    state = optimizer.state_dict()
    copy = make_optimizer(hp, model)
    assert copy.state_dict() != state  # a new optimizer has no moments yet
    copy.load_state_dict(state)  # type: ignore[arg-type]
    assert len(copy.param_groups) == 2
    torch.testing.assert_close(copy.state_dict(), state)


def test_plain_dense_path_is_unchanged() -> None:
    hp = make_hp()
    optimizer = make_optimizer(hp, Object2VecModel(hp))
    assert isinstance(optimizer, torch.optim.Adam) and len(optimizer.param_groups) == 1


@pytest.mark.slow  # seconds: left out of `make test-unit`
def test_training_never_imports_torch_dynamo() -> None:
    # torch.optim would import it (and sympy, inductor) on the first optimizer: seconds of start-up.
    code = """
import sys, torch
from object2vec.config import Hyperparameters
from object2vec.data.records import PairDataset, TokenSequences
from object2vec.model.object2vec import Object2VecModel
from object2vec.training.signals import StopSignal
from object2vec.training.trainer import Trainer
for optimizer, storage in [("adam", "dense"), ("adam", "row_sparse"), ("adagrad", "dense"), ("sgd", "row_sparse"),
                           ("rmsprop", "dense"), ("adadelta", "dense")]:
    hp = Hyperparameters.from_dict({"enc0_network": "pooled_embedding", "enc0_vocab_size": 10, "enc0_max_seq_len": 2,
                                    "optimizer": optimizer, "token_embedding_storage_type": storage, "epochs": 1})
    in0, in1 = TokenSequences.from_lists([[1], [2, 3]]), TokenSequences.from_lists([[4], [5]])
    data = PairDataset(in0, in1, torch.tensor([0, 1]))
    trainer = Trainer(Object2VecModel(hp), hp, torch.device("cpu"), "algo-1", StopSignal())
    trainer.fit(data, data)
    trainer.optimizer.load_state_dict(trainer.optimizer.state_dict())
print("torch._dynamo" in sys.modules)
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "container")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "False"


def test_eager_optimizers_are_torch_optimizers_with_the_same_steps() -> None:
    torch.manual_seed(0)
    start = torch.randn(6)
    grads = [torch.randn(6) for _ in range(3)]
    for cls, options in [(torch.optim.Adam, {"fused": True}), (torch.optim.Adagrad, {}), (torch.optim.RMSprop, {})]:
        results = []
        for make in (cls, eager(cls)):
            weight = torch.nn.Parameter(start.clone())
            optimizer = make([weight], lr=0.1, **options)
            for grad in grads:
                weight.grad = grad.clone()
                optimizer.step()
            results.append(weight.detach())
            assert isinstance(optimizer, cls)
        assert torch.equal(results[0], results[1]), cls.__name__
    assert eager(torch.optim.Adam) is eager(torch.optim.Adam)
