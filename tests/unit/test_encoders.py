"""Each encoder: shape, batch invariance, order behaviour, empty sequences, gradients, and the same
maths as the padded formulation the encoders had before flat batches (values and gradients);
AttentionPool: starts as the mean, weights by score, pools an empty sequence to zeros."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from object2vec.config import EncoderConfig
from object2vec.data.batching import Tokens
from object2vec.model.encoders import ENCODERS, AttentionPool, build_encoder, length_mask

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
    ("pooled_embedding+attention", 1, 3),  # encX_pooling=attention
    ("pooled_embedding+sqrt_n", 1, 3),  # encX_pooling=sqrt_n
    ("hcnn", 1, 3),
    ("hcnn", 3, 2),
    ("bilstm", 1, 3),
    ("bilstm", 2, 3),
]
IDS = [f"{network}-{layers}x{width}" for network, layers, width in CASES]

SEQS = [[3, 1, 4, 1, 5], [9, 2], [6], [7, 7, 8, 19], [], [2, 2]]


def make_encoder(network: str, layers: int, width: int, dropout: float = 0.0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    network, _, pooling = network.partition("+")
    config = EncoderConfig(
        network=network,
        max_seq_len=10,
        vocab_size=VOCAB,
        token_embedding_dim=DIM,
        layers=layers,
        cnn_filter_width=width,
        pooling=pooling or "mean",
    )
    encoder = build_encoder(config, nn.Embedding(VOCAB, DIM), ENC_DIM, dropout)
    return encoder.eval()


def padded_attention(pool: AttentionPool, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """AttentionPool on a padded batch: features (B, L, D), mask (B, L) -> (B, D)."""
    scores = pool.score(features).squeeze(2).masked_fill(~mask, torch.finfo(features.dtype).min)  # (B, L)
    weights = torch.softmax(scores, dim=1) * mask  # (B, L)
    return torch.bmm(weights.unsqueeze(1), features).squeeze(1)


def padded_reference(encoder: nn.Module, seqs: list[list[int]]) -> torch.Tensor:
    """The encoder's maths on a zero-padded (B, L) batch, as the encoders computed it before flat
    batches: masked mean; layer norm, conv1d on the masked padded batch and a masked attention pool
    of every level; layer norm, nn.LSTM over pack_padded_sequence and a masked attention pool of
    each token's vector and states."""
    tokens = Tokens.from_lists(seqs)
    ids, lengths = tokens.padded_ids(), tokens.lengths
    mask = length_mask(lengths, ids.shape[1])  # (B, L)
    x = encoder.dropout(encoder.embedding(ids))  # (B, L, D)
    if isinstance(encoder, ENCODERS["pooled_embedding"]):
        if encoder.pool is not None:  # pooling=attention: the attention pool on the raw vectors
            return encoder.project(padded_attention(encoder.pool, x, mask))
        counts = lengths.clamp(min=1)[:, None].to(x.dtype)  # (B, 1)
        pooled = (x * mask[:, :, None]).sum(1) / (counts.sqrt() if encoder.sqrt_n else counts)
        return encoder.project(pooled)
    x = encoder.norm(x)
    if isinstance(encoder, ENCODERS["hcnn"]):
        x, mask3 = x.transpose(1, 2), mask[:, None, :]  # (B, D, L), (B, 1, L)
        levels = []
        for conv, pool in zip(encoder.convs, encoder.pools, strict=True):
            x = torch.relu(conv(x * mask3)) + x
            levels.append(padded_attention(pool, x.transpose(1, 2), mask))
        return encoder.project(torch.cat(levels, dim=1))
    packed = pack_padded_sequence(x, lengths.clamp(min=1), batch_first=True, enforce_sorted=False)
    states, _ = pad_packed_sequence(encoder.lstm(packed)[0], batch_first=True, total_length=ids.shape[1])
    features = torch.cat([x, states], dim=2)  # (B, L, 3D)
    return encoder.project(padded_attention(encoder.pool, features, mask))


def scored(encoder: nn.Module) -> nn.Module:
    """The encoder with random attention scores (they start at zero: the plain mean)."""
    generator = torch.Generator().manual_seed(7)
    for module in encoder.modules():
        if isinstance(module, AttentionPool):
            with torch.no_grad():
                module.score.weight.copy_(torch.randn(module.score.weight.shape, generator=generator))
    return encoder


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
    encoder = scored(make_encoder(network, layers, width).train())
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
    encoder = scored(make_encoder(network, layers, width))
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
    encoder = scored(make_encoder(network, layers, width))
    forward = [3, 1, 4, 15, 9]
    with torch.no_grad():
        a, b = encoder(Tokens.from_lists([forward, forward[::-1]]))
    if network.startswith("pooled_embedding"):
        torch.testing.assert_close(a, b)  # a mean, or a weighted one, is a bag of words
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


def test_attention_pool_starts_as_the_mean_and_weights_by_score() -> None:
    features = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0], [7.0, 1.0]])  # (T, D)
    rows = torch.tensor([0, 0, 2, 2])  # sequence 1 is empty
    pool = AttentionPool(2)
    torch.testing.assert_close(pool(features, rows, 3), torch.tensor([[2.0, 1.0], [0.0, 0.0], [6.0, 2.5]]))
    with torch.no_grad():
        pool.score.weight.copy_(torch.tensor([[0.0, 1.0]]))  # weights exp(feature 1) within a sequence
    out = pool(features, rows, 3)
    first = torch.softmax(torch.tensor([0.0, 2.0]), 0)
    torch.testing.assert_close(out[0], first @ features[:2])
    torch.testing.assert_close(out[1], torch.zeros(2))
    # Large scores stay finite (each sequence's softmax is shifted by its own maximum).
    with torch.no_grad():
        pool.score.weight.mul_(1000.0)
    assert torch.isfinite(pool(features, rows, 3)).all()


@pytest.mark.parametrize("seqs", [SEQS, [[3, 1], [4]], [[], []]], ids=["with-empty", "no-empty", "only-empty"])
@pytest.mark.parametrize("layers", [1, 2])
def test_the_cudnn_path_gives_the_states_of_the_scan(layers: int, seqs: list[list[int]]) -> None:
    # On a GPU bilstm runs nn.LSTM on packed sequences (cuDNN); nn.LSTM runs them on the CPU too,
    # so its path is checked here against the hand-written scan: same states in the same order.
    encoder = make_encoder("bilstm", layers, 3)
    tokens = Tokens.from_lists(seqs)
    x = encoder.embedding(tokens.ids.index_select(0, tokens.packed().order))  # (T, D) slot order
    torch.testing.assert_close(encoder._cudnn(tokens, x), encoder._scan(tokens, x))
    encoder.train()
    encoder._cudnn(tokens, x).sum().backward()
    assert all(p.grad is not None for p in encoder.lstm.parameters())


def test_attention_pooling_starts_as_the_mean_and_learns_token_weights() -> None:
    """pooling=attention: the same output as the mean until the scores move, then a weighted mean."""
    mean, attention = make_encoder("pooled_embedding", 1, 3), make_encoder("pooled_embedding+attention", 1, 3)
    attention.load_state_dict(mean.state_dict(), strict=False)  # same table and projection
    tokens = Tokens.from_lists(SEQS)
    with torch.no_grad():
        torch.testing.assert_close(attention(tokens), mean(tokens))
        scored(attention)
        assert not torch.allclose(attention(tokens)[:2], mean(tokens)[:2])
        one_token = Tokens.from_lists([[3], [9], [6]])
        torch.testing.assert_close(attention(one_token), mean(one_token))  # one token: the row itself
    attention(tokens).sum().backward()
    assert attention.pool.score.weight.grad is not None and attention.pool.score.weight.grad.abs().sum() > 0


def test_sqrt_n_pooling_is_the_sum_over_the_square_root_of_the_length() -> None:
    """pooling=sqrt_n: sum / sqrt(n) (SVD++'s normalisation), so the pooled vector of n random token
    vectors keeps one vector's scale; one token: the row itself, as with the mean."""
    mean, sqrt_n = make_encoder("pooled_embedding", 1, 3), make_encoder("pooled_embedding+sqrt_n", 1, 3)
    sqrt_n.load_state_dict(mean.state_dict())  # same table and projection, no other parameters
    tokens = Tokens.from_lists(SEQS)
    lengths = tokens.lengths.clamp(min=1).to(torch.float32)[:, None]  # (B, 1)
    with torch.no_grad():
        bias = mean.project.bias
        torch.testing.assert_close(sqrt_n(tokens) - bias, (mean(tokens) - bias) * lengths.sqrt())
        one_token = Tokens.from_lists([[3], [9], [6], [1]])
        torch.testing.assert_close(sqrt_n(one_token), mean(one_token))
        long = Tokens.from_lists([list(range(VOCAB))])  # the whole table, 20 tokens
        rows = mean.embedding.weight
        torch.testing.assert_close(sqrt_n(long) - bias, mean.project(rows.sum(0, keepdim=True) / VOCAB**0.5) - bias)
