"""Generalisation: small synthetic pair tasks with a rule to learn, scored on test pairs none of
which occurs in training.

- The topic rule (a token's topic is its id modulo 4; a pair is positive when both sequences come
  from one topic) needs no order: every encoder, on both sides of the pair, must learn it as well
  as pooled_embedding does. Before attention pooling, hcnn (max-pool) and bilstm (final states)
  fitted the training pairs and stayed near 0.5 on these test pairs.
- The order rule (does the token in1 name the order in which the markers 1, 2, 3 stand in in0?) is
  invisible to a bag of tokens: hcnn and bilstm must learn it and beat pooled_embedding.

Each case trains the real model with the real Trainer (what `train` runs) in seconds.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from object2vec.config import Hyperparameters
from object2vec.data.records import PairDataset, TokenSequences
from object2vec.model.object2vec import Object2VecModel
from object2vec.training.signals import StopSignal
from object2vec.training.trainer import Trainer

Pairs = list[tuple[tuple[int, ...], tuple[int, ...], int]]
NETWORKS = ("pooled_embedding", "hcnn", "bilstm")
SETTINGS: dict[str, Any] = {
    "enc0_token_embedding_dim": 16,
    "enc0_layers": 1,
    "enc0_max_seq_len": 12,
    "enc_dim": 32,
    "mlp_dim": 32,
    "mlp_layers": 1,
    "learning_rate": 0.005,
    "mini_batch_size": 16,
    "epochs": 5,
    "early_stopping_patience": 3,
}
TOPICS, TOPIC_VOCAB = 4, 240
ORDERS = list(itertools.permutations((1, 2, 3)))  # the marker orders; in1 names one as token 4 + index
ORDER_VOCAB = 40  # fillers are 10..39


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models: intra-op threads would only add synchronisation on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def topic_pair(rng: random.Random) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    def sequence(topic: int) -> tuple[int, ...]:
        return tuple(rng.randrange(topic, TOPIC_VOCAB, TOPICS) for _ in range(rng.randint(2, 8)))

    topic, same = rng.randrange(TOPICS), rng.random() < 0.5
    other = topic if same else rng.choice([t for t in range(TOPICS) if t != topic])
    return sequence(topic), sequence(other), int(same)


def order_pair(rng: random.Random) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    order, same = rng.randrange(len(ORDERS)), rng.random() < 0.5
    named = order if same else rng.choice([k for k in range(len(ORDERS)) if k != order])
    fillers = [rng.randrange(10, ORDER_VOCAB) for _ in range(rng.randint(1, 6))]
    at = rng.randint(0, len(fillers))
    return (*fillers[:at], *ORDERS[order], *fillers[at:]), (4 + named,), int(same)


def split(make: Callable[[random.Random], Any], sizes: tuple[int, int, int], seed: int = 0) -> list[Pairs]:
    """Train, validation and test pairs; no pair (in0, in1) of validation or test is in training."""
    rng = random.Random(seed)
    train = [make(rng) for _ in range(sizes[0])]
    seen = {(a, b) for a, b, _ in train}
    held_out: list[Pairs] = []
    for size in sizes[1:]:
        pairs: Pairs = []
        while len(pairs) < size:
            pair = make(rng)
            if (pair[0], pair[1]) not in seen:
                pairs.append(pair)
        held_out.append(pairs)
    return [train, *held_out]


def dataset(pairs: Pairs) -> PairDataset:
    return PairDataset(
        TokenSequences.from_lists([list(a) for a, _, _ in pairs]),
        TokenSequences.from_lists([list(b) for _, b, _ in pairs]),
        torch.tensor([label for _, _, label in pairs]),
    )


def held_out_accuracy(network: str, vocab_size: int, data: list[Pairs]) -> float:
    """Train `network` on both sides (separate encoders, as enc1_network=enc0 gives); test accuracy."""
    network, _, pooling = network.partition("+")  # "pooled_embedding+attention": enc0_pooling=attention
    pooling_hp = {"enc0_pooling": pooling} if pooling else {}
    hp = Hyperparameters.from_dict({**SETTINGS, "enc0_network": network, "enc0_vocab_size": vocab_size, **pooling_hp})
    torch.manual_seed(hp.seed)
    model = Object2VecModel(hp)
    trainer = Trainer(model, hp, torch.device("cpu"), "algo-1", StopSignal())
    result = trainer.fit(dataset(data[0]), dataset(data[1]))
    assert result.best_state is not None
    model.load_state_dict(result.best_state)
    return trainer.evaluate(dataset(data[2]))["accuracy"]


@pytest.fixture(scope="module")
def topic_data() -> list[Pairs]:
    return split(topic_pair, (2000, 300, 500))


@pytest.fixture(scope="module")
def pooled_topic_accuracy(topic_data: list[Pairs]) -> float:
    return held_out_accuracy("pooled_embedding", TOPIC_VOCAB, topic_data)


def test_the_splits_are_disjoint_and_balanced(topic_data: list[Pairs]) -> None:
    train = {(a, b) for a, b, _ in topic_data[0]}
    assert not train & {(a, b) for a, b, _ in topic_data[2]}
    assert 0.4 < sum(label for *_, label in topic_data[2]) / len(topic_data[2]) < 0.6


@pytest.mark.parametrize("network", [*NETWORKS, "pooled_embedding+attention"])
def test_every_encoder_learns_the_topic_rule_as_pooled_does(
    network: str, topic_data: list[Pairs], pooled_topic_accuracy: float
) -> None:
    assert pooled_topic_accuracy >= 0.95
    accuracy = (
        pooled_topic_accuracy if network == "pooled_embedding" else held_out_accuracy(network, TOPIC_VOCAB, topic_data)
    )
    assert accuracy >= pooled_topic_accuracy - 0.04, f"{network}: {accuracy:.3f} vs pooled {pooled_topic_accuracy:.3f}"


def test_hcnn_and_bilstm_learn_an_order_rule_pooled_cannot_see() -> None:
    data = split(order_pair, (1500, 300, 500))
    accuracy = {network: held_out_accuracy(network, ORDER_VOCAB, data) for network in NETWORKS}
    assert accuracy["pooled_embedding"] < 0.6, accuracy  # the same bag of tokens either way
    assert accuracy["hcnn"] >= 0.95 and accuracy["bilstm"] >= 0.95, accuracy
