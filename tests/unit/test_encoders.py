"""Each encoder: shape, padding invariance, order behaviour, empty sequences, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from object2vec.config import EncoderConfig
from object2vec.model.encoders import ENCODERS, build_encoder, length_mask

VOCAB, DIM, ENC_DIM = 20, 4, 5

# (network, layers, cnn_filter_width): deep stacks and an even filter width ("same" padding is
# then asymmetric) are the cases most likely to let padding in.
CASES = [
    ("pooled_embedding", 1, 3),
    ("hcnn", 1, 3),
    ("hcnn", 3, 2),
    ("bilstm", 1, 3),
    ("bilstm", 2, 3),
]
IDS = [f"{network}-{layers}x{width}" for network, layers, width in CASES]


pytestmark = pytest.mark.usefixtures("one_thread")


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


def padded(seqs: list[list[int]], width: int, fill: int | list[int] = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, width) ids with `fill` after each sequence, and the lengths."""
    rows = []
    for i, seq in enumerate(seqs):
        value = fill if isinstance(fill, int) else fill[i]
        rows.append(seq + [value] * (width - len(seq)))
    return torch.tensor(rows), torch.tensor([len(s) for s in seqs])


SEQS = [[3, 1, 4, 1, 5], [9, 2], [6], [7, 7, 8, 19]]


def test_registry_names_the_three_networks() -> None:
    assert set(ENCODERS) == {"pooled_embedding", "hcnn", "bilstm"}


def test_length_mask() -> None:
    assert length_mask(torch.tensor([2, 0, 3]), 3).tolist() == [
        [True, True, False],
        [False, False, False],
        [True, True, True],
    ]


@pytest.mark.parametrize(("network", "layers", "width"), CASES, ids=IDS)
def test_output_shape(network: str, layers: int, width: int) -> None:
    ids, lengths = padded(SEQS, 5)
    assert make_encoder(network, layers, width)(ids, lengths).shape == (len(SEQS), ENC_DIM)


@pytest.mark.parametrize(("network", "layers", "width"), CASES, ids=IDS)
def test_padding_never_leaks(network: str, layers: int, width: int) -> None:
    encoder = make_encoder(network, layers, width)
    with torch.no_grad():
        reference = encoder(*padded(SEQS, 5))
        wider = encoder(*padded(SEQS, 9))
        # The pad value is a real token id: whatever it is, it must not matter.
        other_fill = encoder(*padded(SEQS, 8, fill=[13, 17, 11, 19]))
        alone = torch.cat([encoder(*padded([seq], len(seq))) for seq in SEQS])
    torch.testing.assert_close(wider, reference)
    torch.testing.assert_close(other_fill, reference)
    torch.testing.assert_close(alone, reference)


@pytest.mark.parametrize(("network", "layers", "width"), CASES, ids=IDS)
def test_token_order(network: str, layers: int, width: int) -> None:
    encoder = make_encoder(network, layers, width)
    forward = [[3, 1, 4, 15, 9]]
    backward = [list(reversed(forward[0]))]
    with torch.no_grad():
        a = encoder(*padded(forward, 5))
        b = encoder(*padded(backward, 5))
    if network == "pooled_embedding":
        torch.testing.assert_close(a, b)  # a mean is a bag of words
    else:
        assert not torch.allclose(a, b, atol=1e-4)  # convolutions and LSTMs read the order


@pytest.mark.parametrize(("network", "layers", "width"), CASES, ids=IDS)
def test_empty_sequence_encodes_to_the_projection_bias(network: str, layers: int, width: int) -> None:
    encoder = make_encoder(network, layers, width)
    seqs = [[], [4, 2], []]
    with torch.no_grad():
        out = encoder(*padded(seqs, 3, fill=[5, 6, 7]))
        only_empty = encoder(*padded([[]], 1))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], encoder.project.bias)
    torch.testing.assert_close(out[2], encoder.project.bias)
    torch.testing.assert_close(only_empty[0], encoder.project.bias)
    torch.testing.assert_close(out[1:2], encoder(*padded([[4, 2]], 2)).detach())


@pytest.mark.parametrize(("network", "layers", "width"), CASES, ids=IDS)
def test_gradient_reaches_used_embeddings_only(network: str, layers: int, width: int) -> None:
    encoder = make_encoder(network, layers, width).train()
    ids, lengths = padded([[3, 1, 4], [5]], 6)  # padded with id 0, which no sequence uses
    encoder(ids, lengths).pow(2).sum().backward()
    grad = encoder.embedding.weight.grad
    assert grad is not None
    used = [1, 3, 4, 5]
    assert (grad[used].abs().sum(dim=1) > 0).all()
    unused = [i for i in range(VOCAB) if i not in used]
    assert (grad[unused] == 0).all()  # id 0 (the padding) included


@pytest.mark.parametrize(("network", "layers", "width"), CASES, ids=IDS)
def test_eval_mode_is_deterministic_with_dropout(network: str, layers: int, width: int) -> None:
    encoder = make_encoder(network, layers, width, dropout=0.5)
    ids, lengths = padded(SEQS, 5)
    with torch.no_grad():
        torch.testing.assert_close(encoder(ids, lengths), encoder(ids, lengths))
