"""Object2VecModel: output shapes, the MLP, tied and copied embeddings, predict."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from object2vec.config import Hyperparameters
from object2vec.data.batching import Tokens
from object2vec.errors import ClientError
from object2vec.model.object2vec import EMBEDDING_INIT_STD, Object2VecModel
from object2vec.model.transformer import TransformerEncoder, TransformerSpec

BASE: dict[str, Any] = {
    "enc0_network": "pooled_embedding",
    "enc0_vocab_size": 30,
    "enc0_max_seq_len": 6,
    "enc0_token_embedding_dim": 4,
    "enc_dim": 6,
    "mlp_dim": 5,
    "mlp_layers": 2,
    "num_classes": 3,
}


pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(**changes: Any) -> Object2VecModel:
    torch.manual_seed(0)
    return Object2VecModel(Hyperparameters.from_dict({**BASE, **changes})).eval()


def inputs(batch: int = 4) -> tuple[Tokens, Tokens]:
    generator = torch.Generator().manual_seed(1)
    in0 = torch.randint(0, 30, (batch, 6), generator=generator).tolist()
    in1 = torch.randint(0, 30, (batch, 5), generator=generator).tolist()
    len0, len1 = [6, 1, 0, 3][:batch], [5, 5, 2, 0][:batch]
    return (
        Tokens.from_lists([row[:n] for row, n in zip(in0, len0, strict=True)]),
        Tokens.from_lists([row[:n] for row, n in zip(in1, len1, strict=True)]),
    )


def linear_widths(model: Object2VecModel) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in model.mlp if isinstance(m, nn.Linear)]


@pytest.mark.parametrize("network", ["pooled_embedding", "hcnn", "bilstm"])
@pytest.mark.parametrize(("output_layer", "width"), [("softmax", 3), ("mean_squared_error", 1)])
def test_forward_shapes(network: str, output_layer: str, width: int) -> None:
    model = make_model(enc0_network=network, enc0_layers=1, output_layer=output_layer)
    with torch.no_grad():
        out = model(*inputs())
        embedding = model.encode(1, inputs()[1])
    assert out.shape == (4, width) and torch.isfinite(out).all()
    assert embedding.shape == (4, 6)


@pytest.mark.parametrize(
    ("mlp_layers", "comparators", "widths"),
    [
        (0, "hadamard", [(6, 3)]),
        (0, "concat,abs_diff", [(18, 3)]),
        (1, "hadamard,concat,abs_diff", [(24, 5), (5, 3)]),
        (3, "abs_diff", [(6, 5), (5, 5), (5, 5), (5, 3)]),
    ],
)
def test_mlp_layers_and_comparator_width(mlp_layers: int, comparators: str, widths: list[tuple[int, int]]) -> None:
    model = make_model(mlp_layers=mlp_layers, comparator_list=comparators)
    assert linear_widths(model) == widths
    assert model(*inputs()).shape == (4, 3)


@pytest.mark.parametrize(("activation", "kind"), [("tanh", nn.Tanh), ("relu", nn.ReLU), ("linear", nn.Identity)])
def test_mlp_activation_and_dropout(activation: str, kind: type[nn.Module]) -> None:
    model = make_model(mlp_activation=activation, mlp_layers=2, dropout=0.25)
    kinds = [type(m) for m in model.mlp]
    assert kinds == [nn.Linear, kind, nn.Dropout, nn.Linear, kind, nn.Dropout, nn.Linear]
    assert all(m.p == 0.25 for m in model.mlp if isinstance(m, nn.Dropout))


def test_relu_mlp_outputs_depend_on_the_activation() -> None:
    x = inputs()
    with torch.no_grad():
        assert not torch.allclose(make_model(mlp_activation="relu")(*x), make_model(mlp_activation="linear")(*x))


def test_tied_token_embedding_is_one_shared_tensor() -> None:
    model = make_model(tied_token_embedding_weight="true")
    assert model.token_embedding(0) is model.token_embedding(1)
    tables = [p for name, p in model.named_parameters() if "embedding" in name]
    assert len(tables) == 1  # named_parameters lists a shared tensor once
    # Changing one encoder's table changes the other's: they are the same storage.
    with torch.no_grad():
        model.token_embedding(0).weight.add_(1.0)
    assert torch.equal(model.token_embedding(1).weight, model.token_embedding(0).weight)


def test_enc1_network_enc0_copies_settings_not_weights() -> None:
    model = make_model()  # enc1_network defaults to enc0
    emb0, emb1 = model.token_embedding(0), model.token_embedding(1)
    assert emb0 is not emb1
    assert emb0.weight.data_ptr() != emb1.weight.data_ptr()
    assert emb0.weight.shape == emb1.weight.shape == (30, 4)
    assert not torch.equal(emb0.weight, emb1.weight)  # drawn independently
    assert type(model.encoders[0]) is type(model.encoders[1])


@pytest.mark.parametrize("network", ["pooled_embedding", "hcnn", "bilstm"])
def test_tied_encoders_are_one_siamese_encoder(network: str) -> None:
    model = make_model(enc0_network=network, enc0_layers=1, tied_encoders="true")
    untied = make_model(enc0_network=network, enc0_layers=1)
    assert model.siamese and model.encoders[0] is model.encoders[1]
    assert model.token_embedding(0) is model.token_embedding(1)
    encoder_size = sum(p.numel() for p in untied.encoders[1].parameters())
    size = sum(p.numel() for p in model.parameters())  # a shared tensor counts once
    assert size == sum(p.numel() for p in untied.parameters()) - encoder_size
    # Both sides go through the one encoder: the model's output is that of enc0 on either side.
    in0, in1 = inputs()
    with torch.no_grad():
        expected = model.score_encodings(model.encode(0, in0), model.encode(0, in1))
        torch.testing.assert_close(model(in0, in1), expected)


@pytest.mark.parametrize(
    ("comparators", "mlp_layers"),
    [("cosine", 0), ("cosine", 1), ("hadamard,abs_diff", 1), ("hadamard,concat,abs_diff,cosine", 0)],
)
def test_pair_margins_score_every_pair_as_alone(comparators: str, mlp_layers: int, monkeypatch: Any) -> None:
    """All B x B' margins (class 1 minus class 0) at once, in one product or in chunks of pairs."""
    monkeypatch.setattr("object2vec.model.object2vec.PAIR_CHUNK", 8)  # several chunks, a partial one
    model = make_model(num_classes=2, comparator_list=comparators, mlp_layers=mlp_layers, in_batch_negatives="true")
    generator = torch.Generator().manual_seed(2)
    a, b = torch.randn(5, 6, generator=generator), torch.randn(3, 6, generator=generator)
    a[1] = 0.0  # an empty sequence's encoding: cosine 0, as for the pair alone
    with torch.no_grad():
        margins = model.pair_margins(a, b)
        alone = torch.stack([model.score_encodings(a[i].expand(3, -1), b) for i in range(5)])  # (5, 3, 2)
    torch.testing.assert_close(margins, alone[..., 1] - alone[..., 0])
    in0, in1 = inputs()
    with torch.no_grad():
        expected = model.pair_margins(model.encode(0, in0), model.encode(1, in1))
        torch.testing.assert_close(model(in0, in1, all_pairs=True), expected)


def test_a_cosine_regression_starts_spanning_the_label_range() -> None:
    """comparator_list=cosine, mlp_layers=0 on a regression: cosine 0..1 starts as labels low..high."""
    model = make_model(output_layer="mean_squared_error", comparator_list="cosine", mlp_layers=0, tied_encoders="true")
    model.start_cosine_regression(0.0, 5.0)
    in0, in1 = inputs()
    with torch.no_grad():
        cosine = torch.nn.functional.cosine_similarity(model.encode(0, in0), model.encode(0, in1))
        torch.testing.assert_close(model(in0, in1)[:, 0], 5.0 * cosine)
    model.start_cosine_regression(2.0, 2.0)  # one label value: a unit scale, not zero (it would never learn)
    assert model.mlp[-1].weight.item() == 1.0 and model.mlp[-1].bias.item() == 2.0


def test_in_batch_cosine_margin_starts_at_the_ranking_scale() -> None:
    """With in-batch negatives a cosine feeds the softmax at scale 20 (temperature 0.05)."""
    model = make_model(num_classes=2, comparator_list="cosine", mlp_layers=0, in_batch_negatives="true")
    last = model.mlp[-1]
    assert last.weight.flatten().tolist() == [-10.0, 10.0] and last.bias.tolist() == [0.0, 0.0]
    assert make_model(num_classes=2, comparator_list="cosine", mlp_layers=0).mlp[-1].weight.abs().max() <= 1


@pytest.mark.parametrize(
    ("enc0", "enc1", "layouts"), [("hcnn", "bilstm", ("flat", "packed")), ("bilstm", "enc0", ("packed", "packed"))]
)
def test_layouts_name_the_view_each_encoder_reads(enc0: str, enc1: str, layouts: tuple[str, str]) -> None:
    sizes = {"enc1_vocab_size": 30, "enc1_max_seq_len": 6} if enc1 != "enc0" else {}
    model = make_model(enc0_network=enc0, enc1_network=enc1, enc0_layers=1, enc1_layers=1, **sizes)
    assert model.layouts == layouts
    with torch.no_grad():
        plain = model(*inputs())
        viewed = model(*(side.with_layout(layout) for side, layout in zip(inputs(), layouts, strict=True)))
    torch.testing.assert_close(viewed, plain)


def test_untied_encoders_have_their_own_sizes() -> None:
    model = make_model(enc1_network="bilstm", enc1_vocab_size=12, enc1_max_seq_len=4, enc1_token_embedding_dim=3)
    assert model.token_embedding(0).weight.shape == (30, 4)
    assert model.token_embedding(1).weight.shape == (12, 3)
    assert type(model.encoders[0]).__name__ == "PooledEmbeddingEncoder"
    assert type(model.encoders[1]).__name__ == "BiLSTMEncoder"


def test_token_embeddings_start_small() -> None:
    weight = make_model(enc0_vocab_size=2000, enc0_token_embedding_dim=50).token_embedding(0).weight.detach()
    assert abs(float(weight.std()) - EMBEDDING_INIT_STD) < 0.01


def test_predict_gives_probabilities_for_softmax() -> None:
    model = make_model()
    with torch.no_grad():
        scores = model.predict(*inputs())
        logits = model(*inputs())
    assert scores.shape == (4, 3) and (scores >= 0).all()
    torch.testing.assert_close(scores.sum(dim=1), torch.ones(4))
    torch.testing.assert_close(scores, torch.softmax(logits, dim=1))


def test_predict_gives_raw_values_for_regression() -> None:
    model = make_model(output_layer="mean_squared_error")
    with torch.no_grad():
        torch.testing.assert_close(model.predict(*inputs()), model(*inputs()))


# ---------------------------------------------------------------------------------------------
# Transformer encoders

TRANSFORMER_SPEC = TransformerSpec(
    vocab_size=30, hidden_size=8, layers=2, heads=2, intermediate_size=12, max_positions=6, type_vocab_size=2
)


def transformer_model(**changes: Any) -> Object2VecModel:
    torch.manual_seed(0)
    hp = Hyperparameters.from_dict({**BASE, "enc0_network": "transformer", "enc0_pretrained_model": "t", **changes})
    return Object2VecModel(hp, {0: TRANSFORMER_SPEC, 1: TRANSFORMER_SPEC}).eval()


def test_tied_transformers_are_one_siamese_encoder() -> None:
    model = transformer_model(tied_token_embedding_weight="true")
    assert model.siamese and model.encoders[0] is model.encoders[1]
    in0, _ = inputs()
    with torch.inference_mode():
        torch.testing.assert_close(model.encode(0, in0), model.encode(1, in0))
    assert model.predict(*inputs()).shape == (4, 3)


def test_a_siamese_pair_is_encoded_in_one_forward_with_the_same_result() -> None:
    model = transformer_model(tied_token_embedding_weight="true")
    calls = []
    model.encoders[0].register_forward_hook(lambda module, args, out: calls.append(args[0].padded_ids().shape))
    in0, in1 = inputs()
    rows, lengths = in1.padded_ids().tolist(), in1.lengths.tolist()
    in1 = Tokens.from_lists([row[: min(n, 3)] for row, n in zip(rows, lengths, strict=True)])  # shorter than in0
    with torch.inference_mode():
        joint = model(in0, in1)
        assert calls == [(8, 6)]  # both sides, padded to the wider one
        a, b = model.encode(0, in0), model.encode(1, in1)
        torch.testing.assert_close(joint, model.mlp(model.comparator(a, b)), atol=1e-5, rtol=1e-5)


TYING = {"none": {}, "table": {"tied_token_embedding_weight": "true"}, "siamese": {"tied_encoders": "true"}}


@pytest.mark.parametrize("tying", TYING)
@pytest.mark.parametrize("network", ["pooled_embedding", "hcnn", "bilstm"])
def test_a_shared_in0_gives_the_outputs_and_gradients_of_repeated_copies(network: str, tying: str) -> None:
    """A grouped batch holds each in0 once (in0_rows picks it per pair): the same outputs and the
    same gradients as the batch with every copy, with the encoder run on 2 sequences instead of 4."""
    model = make_model(enc0_network=network, enc0_layers=1, **TYING[tying])
    assert model.siamese == (tying == "siamese")
    in0, in1 = inputs()
    lists = [in0.ids[int(o) : int(o) + int(n)].tolist() for o, n in zip(in0.offsets, in0.lengths, strict=True)]
    rows = torch.tensor([0, 0, 1, 1])
    distinct = Tokens.from_lists([lists[0], lists[2]])
    repeated = Tokens.from_lists([lists[0], lists[0], lists[2], lists[2]])
    outputs, gradients = [], []
    for args in ((repeated, in1), (distinct, in1, rows)):
        model.zero_grad()
        out = model(*args)
        out.square().sum().backward()
        outputs.append(out.detach())
        gradients.append(model.token_embedding(0).weight.grad.clone())
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gradients[1], gradients[0], atol=1e-5, rtol=1e-5)


def test_untied_transformers_are_two_copies_of_the_architecture() -> None:
    model = transformer_model()
    assert not model.siamese and isinstance(model.encoders[1], TransformerEncoder)
    assert model.encoders[0].transformer is not model.encoders[1].transformer


def test_a_transformer_beside_a_pooled_encoder() -> None:
    torch.manual_seed(0)
    hp = Hyperparameters.from_dict(
        {**BASE, "enc0_network": "transformer", "enc0_pretrained_model": "t", "enc1_network": "pooled_embedding"}
        | {"enc1_vocab_size": 30, "enc1_max_seq_len": 5}
    )
    model = Object2VecModel(hp, {0: TRANSFORMER_SPEC, 1: TRANSFORMER_SPEC})
    assert set(model.transformer_specs) == {0}  # a spec for a non-transformer encoder is not kept
    assert isinstance(model.encoders[1].embedding, nn.Embedding)
    assert model(*inputs()).shape == (4, 3)


def test_a_transformer_needs_its_architecture() -> None:
    hp = Hyperparameters.from_dict({**BASE, "enc0_network": "transformer", "enc0_pretrained_model": "t"})
    with pytest.raises(ClientError, match="enc0, enc1: network=transformer, but no transformer architecture"):
        Object2VecModel(hp)


def test_sizes_beyond_the_architecture_are_refused_before_building() -> None:
    with pytest.raises(ClientError, match="enc0_max_seq_len=7 is more than the max_position_embeddings 6"):
        transformer_model(enc0_max_seq_len=7)
