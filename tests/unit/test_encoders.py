"""Each encoder: shape, batch invariance, order behaviour, empty sequences, gradients, and the same
maths as the padded formulation the encoders had before flat batches (values and gradients)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from object2vec.config import EncoderConfig
from object2vec.data.batching import Tokens
from object2vec.model.encoders import ENCODERS, build_encoder, length_mask

# torch warns that an even filter width with padding="same" costs a padded copy: the padded
# reference below calls the convolutions that way on purpose.
pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning"),
]

VOCAB, DIM, ENC_DIM = 20, 4, 5

# (network, layers, cnn_filter_width): deep stacks and an even filter width ("same" padding is
# then asymmetric) are the cases most likely to let a neighbouring sequence in.
CASES = [
    ("pooled_embedding", 1, 3),
    ("hcnn", 1, 3),
    ("hcnn", 3, 2),
    ("bilstm", 1, 3),
    ("bilstm", 2, 3),
]
IDS = [f"{network}-{layers}x{width}" for network, layers, width in CASES]

SEQS = [[3, 1, 4, 1, 5], [9, 2], [6], [7, 7, 8, 19], [], [2, 2]]


def make_encoder(network: str, layers: int, width: int, dropout: float = 0.0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    config = EncoderConfig(
        network=network,
        max_seq_len=10,
        vocab_size=VOCAB,
        token_embedding_dim=DIM,
        layers=layers,
        cnn_filter_width=width,
    )
    encoder = build_encoder(config, nn.Embedding(VOCAB, DIM), ENC_DIM, dropout)
    return encoder.eval()


def padded_reference(encoder: nn.Module, seqs: list[list[int]]) -> torch.Tensor:
    """The encoder's maths on a zero-padded (B, L) batch, as the encoders computed it before flat
    batches: masked mean, conv1d on the masked padded batch with a masked amax, nn.LSTM over
    pack_padded_sequence."""
    tokens = Tokens.from_lists(seqs)
    ids, lengths = tokens.padded_ids(), tokens.lengths
    mask = length_mask(lengths, ids.shape[1])  # (B, L)
    x = encoder.dropout(encoder.embedding(ids))  # (B, L, D)
    if isinstance(encoder, ENCODERS["pooled_embedding"]):
        pooled = (x * mask[:, :, None]).sum(1) / lengths.clamp(min=1)[:, None]
        return encoder.project(pooled)
    if isinstance(encoder, ENCODERS["hcnn"]):
        x, mask3 = x.transpose(1, 2), mask[:, None, :]  # (B, D, L), (B, 1, L)
        levels = []
        for conv in encoder.convs:
            x = torch.relu(conv(x * mask3)) + x
            levels.append(x.masked_fill(~mask3, float("-inf")).amax(dim=2))
        features = torch.cat(levels, dim=1).masked_fill(lengths[:, None] == 0, 0.0)
        return encoder.project(features)
    packed = pack_padded_sequence(x, lengths.clamp(min=1), batch_first=True, enforce_sorted=False)
    _, (hidden, _) = encoder.lstm(packed)
    final = torch.cat([hidden[-2], hidden[-1]], dim=1) * (lengths > 0)[:, None]
    return encoder.project(final)


def test_registry_names_the_three_networks() -> None:
    assert set(ENCODERS) == {"pooled_embedding", "hcnn", "bilstm"}
    assert {name: cls.layout for name, cls in ENCODERS.items()} == {  # type: ignore[attr-defined]
        "pooled_embedding": "flat",
        "hcnn": "flat",
        "bilstm": "packed",
    }


def test_length_mask() -> None:
    assert length_mask(torch.tensor([2, 0, 3]), 3).tolist() == [
        [True, True, False],
        [False, False, False],
        [True, True, True],
    ]


@pytest.mark.parametrize(("network", "layers", "width"), CASES, ids=IDS)
def test_output_shape(network: str, layers: int, width: int) -> None:
    assert make_encoder(network, layers, width)(Tokens.from_lists(SEQS)).shape == (len(SEQS), ENC_DIM)


@pytest.mark.parametrize("seqs", [SEQS, [[3], [1], [4], [1]]], ids=["lengths-0-to-5", "one-id-each"])
@pytest.mark.parametrize(("network", "layers", "width"), CASES, ids=IDS)
def test_same_values_and_gradients_as_the_padded_formulation(
    network: str, layers: int, width: int, seqs: list[list[int]]
) -> None:
    # One id per sequence (users, items) takes a shorter path in pooled_embedding: same result.
    encoder = make_encoder(network, layers, width).train()
    weight = torch.randn(len(seqs), ENC_DIM, generator=torch.Generator().manual_seed(5))
    out = encoder(Tokens.from_lists(seqs))
    (out * weight).sum().backward()
    ours = {name: p.grad.clone() for name, p in encoder.named_parameters() if p.grad is not None}
    encoder.zero_grad()
    expected = padded_reference(encoder, seqs)
    (expected * weight).sum().backward()
    torch.testing.assert_close(out, expected)
    reference = {name: p.grad for name, p in encoder.named_parameters() if p.grad is not None}
    assert ours.keys() == reference.keys()
    for name, grad in ours.items():
        torch.testing.assert_close(grad, reference[name], msg=name)


@pytest.mark.parametrize(("network", "layers", "width"), CASES, ids=IDS)
def test_a_sequence_encodes_the_same_alone_or_in_any_batch(network: str, layers: int, width: int) -> None:
    encoder = make_encoder(network, layers, width)
    with torch.no_grad():
        batch = encoder(Tokens.from_lists(SEQS))
        alone = torch.cat([encoder(Tokens.from_lists([seq])) for seq in SEQS])
        reordered = encoder(Tokens.from_lists(SEQS[::-1]))
        views = Tokens.from_lists(SEQS).with_layout(encoder.layout)
        with_views = encoder(views)
    torch.testing.assert_close(alone, batch)
    torch.testing.assert_close(reordered, batch.flip(0))
    torch.testing.assert_close(with_views, batch)


@pytest.mark.parametrize(("network", "layers", "width"), CASES, ids=IDS)
def test_token_order(network: str, layers: int, width: int) -> None:
    encoder = make_encoder(network, layers, width)
    forward = [3, 1, 4, 15, 9]
    with torch.no_grad():
        a, b = encoder(Tokens.from_lists([forward, forward[::-1]]))
    if network == "pooled_embedding":
        torch.testing.assert_close(a, b)  # a mean is a bag of words
    else:
        assert not torch.allclose(a, b, atol=1e-4)  # convolutions and LSTMs read the order


@pytest.mark.parametrize(("network", "layers", "width"), CASES, ids=IDS)
def test_empty_sequence_encodes_to_the_projection_bias(network: str, layers: int, width: int) -> None:
    encoder = make_encoder(network, layers, width)
    with torch.no_grad():
        out = encoder(Tokens.from_lists([[], [4, 2], []]))
        only_empty = encoder(Tokens.from_lists([[]]))
        alone = encoder(Tokens.from_lists([[4, 2]]))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], encoder.project.bias)
    torch.testing.assert_close(out[2], encoder.project.bias)
    torch.testing.assert_close(only_empty[0], encoder.project.bias)
    torch.testing.assert_close(out[1:2], alone)


@pytest.mark.parametrize(("network", "layers", "width"), CASES, ids=IDS)
def test_only_empty_sequences_still_give_every_weight_a_gradient(network: str, layers: int, width: int) -> None:
    # A zero gradient, not None: optimizers and DDP must see every parameter at every step.
    encoder = make_encoder(network, layers, width).train()
    encoder(Tokens.from_lists([[], []])).sum().backward()
    missing = [name for name, p in encoder.named_parameters() if p.grad is None]
    assert missing == []


@pytest.mark.parametrize(("network", "layers", "width"), CASES, ids=IDS)
def test_gradient_reaches_used_embeddings_only(network: str, layers: int, width: int) -> None:
    encoder = make_encoder(network, layers, width).train()
    encoder(Tokens.from_lists([[3, 1, 4], [5]])).pow(2).sum().backward()
    grad = encoder.embedding.weight.grad
    assert grad is not None
    used = [1, 3, 4, 5]
    assert (grad[used].abs().sum(dim=1) > 0).all()
    unused = [i for i in range(VOCAB) if i not in used]
    assert (grad[unused] == 0).all()


@pytest.mark.parametrize(("network", "layers", "width"), CASES, ids=IDS)
def test_eval_mode_is_deterministic_with_dropout(network: str, layers: int, width: int) -> None:
    encoder = make_encoder(network, layers, width, dropout=0.5)
    tokens = Tokens.from_lists(SEQS)
    with torch.no_grad():
        torch.testing.assert_close(encoder(tokens), encoder(tokens))
        # The same encoder in training mode drops units, so the comparison above can fail.
        encoder.train()
        assert not torch.equal(encoder(tokens), encoder(tokens))
