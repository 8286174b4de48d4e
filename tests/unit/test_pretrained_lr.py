"""The pretrained transformer's learning rate: its own param group, the multiplier, the linear
warm-up, and the warm-up's position carried by the optimizer's state_dict (training/pretrained_lr.py)."""

from __future__ import annotations

import pytest
import torch

from object2vec.config import Hyperparameters
from object2vec.data.batching import Tokens
from object2vec.model.object2vec import Object2VecModel
from object2vec.model.transformer import TransformerSpec, transformer_parameters
from object2vec.training.optimizers import OptimizerGroup, make_optimizer, token_embeddings
from object2vec.training.pretrained_lr import STEPS_DONE, TARGET_LR, pretrained_param_groups
from object2vec.training.trainer import compute_loss

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = TransformerSpec(vocab_size=30, hidden_size=8, layers=2, heads=2, intermediate_size=12, max_positions=5,
                       type_vocab_size=2, dropout=0.0)  # fmt: skip


def make(**changes: object) -> tuple[Hyperparameters, Object2VecModel]:
    raw: dict[str, object] = {
        "enc0_network": "transformer",
        "enc0_pretrained_model": "t",
        "enc0_max_seq_len": 5,
        "enc0_vocab_size": 30,
        "tied_token_embedding_weight": True,
        "enc_dim": 8,
        "mlp_dim": 4,
        "mlp_layers": 1,
        "learning_rate": 0.01,
        **changes,
    }
    hp = Hyperparameters.from_dict(raw)
    torch.manual_seed(0)
    return hp, Object2VecModel(hp, {0: SPEC, 1: SPEC})


def step(model: Object2VecModel, optimizer: torch.optim.Optimizer) -> None:
    ids = torch.randint(0, 30, (4, 5), generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([5, 3, 1, 4])
    in0, in1 = Tokens.from_padded(ids, lengths), Tokens.from_padded(ids.flip(0), lengths.flip(0))
    loss = compute_loss(model(in0, in1), torch.tensor([0, 1, 1, 0]), True)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def pretrained_group(optimizer: torch.optim.Optimizer) -> dict:
    return next(group for group in optimizer.param_groups if TARGET_LR in group)


@pytest.mark.parametrize("name", ["adam", "adagrad", "sgd", "rmsprop", "adadelta"])
def test_the_transformer_gets_its_own_group_at_the_multiplied_rate(name: str) -> None:
    hp, model = make(optimizer=name, transformer_learning_rate_multiplier=0.2)
    optimizer = make_optimizer(hp, model)
    others, mine = optimizer.param_groups
    assert {id(p) for p in mine["params"]} == {id(p) for p in transformer_parameters(model)}
    assert not {id(p) for p in mine["params"]} & {id(p) for p in others["params"]}
    base = 1.0 if name == "adadelta" else 0.01  # AdaDelta takes no learning rate
    assert others["lr"] == pytest.approx(base) and mine["lr"] == pytest.approx(0.2 * base)


def test_frozen_parameters_are_in_no_group() -> None:
    hp, model = make(enc0_freeze_layers="all")
    optimizer = make_optimizer(hp, model)
    assert len(optimizer.param_groups) == 1  # no trainable transformer parameter: no group for it
    assert sum(p.numel() for p in optimizer.param_groups[0]["params"]) == sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )


def test_linear_warm_up_then_the_target_rate() -> None:
    hp, model = make(transformer_learning_rate_multiplier=0.5, transformer_warmup_steps=4)
    optimizer = make_optimizer(hp, model)
    rates = []
    for _ in range(6):
        rates.append((optimizer.param_groups[0]["lr"], pretrained_group(optimizer)["lr"]))
        step(model, optimizer)
    target = 0.005
    assert [mine for _, mine in rates] == pytest.approx([target * k / 4 for k in (1, 2, 3, 4)] + [target, target])
    assert all(other == 0.01 for other, _ in rates)  # the rest starts at full rate


def test_the_warm_up_position_travels_in_the_state_dict() -> None:
    hp, model = make(transformer_warmup_steps=10)
    optimizer = make_optimizer(hp, model)
    for _ in range(3):
        step(model, optimizer)
    state = optimizer.state_dict()
    resumed = make_optimizer(hp, model)
    resumed.load_state_dict(state)
    assert pretrained_group(resumed)[STEPS_DONE] == 3
    assert pretrained_group(resumed)["lr"] == pytest.approx(0.001 * 4 / 10)
    step(model, resumed)
    assert pretrained_group(resumed)["lr"] == pytest.approx(0.001 * 5 / 10)


def test_no_warm_up_hook_without_warm_up_steps() -> None:
    hp, model = make()
    optimizer = make_optimizer(hp, model)
    step(model, optimizer)
    assert pretrained_group(optimizer)["lr"] == pytest.approx(0.001) and not optimizer._optimizer_step_post_hooks


def test_the_transformer_trains_slower_than_the_head() -> None:
    hp, model = make(optimizer="sgd", learning_rate=0.1, transformer_learning_rate_multiplier=0.0)
    before = {id(p): p.detach().clone() for p in model.parameters()}
    step(model, make_optimizer(hp, model))
    moved = {id(p) for p in model.parameters() if not torch.equal(p, before[id(p)])}
    inside = {id(p) for p in transformer_parameters(model)}
    assert moved and not moved & inside  # multiplier 0: the transformer keeps its weights


def test_a_transformer_beside_frozen_pretrained_rows() -> None:
    """The embedding optimizer path (frozen GloVe rows in enc1) splits the transformer off too, and
    never counts the transformer's own embeddings among the token tables."""
    hp, model = make(
        tied_token_embedding_weight=False,
        enc1_network="pooled_embedding",
        enc1_vocab_size=20,
        enc1_max_seq_len=5,
        enc1_token_embedding_dim=4,
    )
    table = model.token_embedding(1)
    assert token_embeddings(model) == [table]
    table.register_buffer("frozen_rows", torch.zeros(20, dtype=torch.bool), persistent=False)
    optimizer = make_optimizer(hp, model)
    assert not isinstance(optimizer, OptimizerGroup)
    mine = pretrained_group(optimizer)
    assert {id(p) for p in mine["params"]} == {id(p) for p in transformer_parameters(model)}
    assert mine["lr"] == pytest.approx(0.001) and mine["weight_decay"] == 0.0


def test_groups_without_a_transformer_are_one_plain_group() -> None:
    hp = Hyperparameters.from_dict({"enc0_network": "pooled_embedding", "enc0_max_seq_len": 2, "enc0_vocab_size": 5})
    model = Object2VecModel(hp)
    groups = pretrained_param_groups(hp, model, model.parameters())
    assert len(groups) == 1 and set(groups[0]) == {"params"}
