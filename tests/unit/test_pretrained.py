"""Transformer checkpoints in the auxiliary channel (data/pretrained.py): finding the folder,
checking it against the hyperparameters, loading its weights into the model."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from object2vec.config import Hyperparameters
from object2vec.data.batching import Tokens
from object2vec.data.pretrained import initialise_transformers, read_transformer_checkpoints, transformer_specs
from object2vec.environment import Channel
from object2vec.errors import ClientError
from object2vec.model.object2vec import Object2VecModel

pytestmark = pytest.mark.usefixtures("one_thread")


def channel(path: Path) -> Channel:
    return Channel("auxiliary", path, None, "File", "FullyReplicated")


def make_hp(**changes: object) -> Hyperparameters:
    raw = {
        "enc0_network": "transformer",
        "enc0_pretrained_model": "tiny-bert",
        "enc0_vocab_size": 200,
        "enc0_max_seq_len": 20,
        "enc_dim": 16,
        "mlp_layers": 0,
        **changes,
    }
    return Hyperparameters.from_dict(raw)


def test_reads_each_folder_once_and_checks_the_sizes(tiny_bert: Path) -> None:
    checkpoints = read_transformer_checkpoints(make_hp(), channel(tiny_bert.parent))
    assert set(checkpoints) == {0, 1} and checkpoints[0] is checkpoints[1]
    assert checkpoints[0].folder == tiny_bert and checkpoints[0].spec.hidden_size == 16


def test_no_auxiliary_channel(tiny_bert: Path) -> None:
    with pytest.raises(ClientError, match="but the job has no channel named auxiliary: add one holding the folder"):
        read_transformer_checkpoints(make_hp(), None)


def test_a_missing_folder_lists_what_the_channel_holds(tiny_bert: Path) -> None:
    with pytest.raises(ClientError, match="enc0_pretrained_model=minilm: no such folder .* it holds: tiny-bert"):
        read_transformer_checkpoints(make_hp(enc0_pretrained_model="minilm"), channel(tiny_bert.parent))


def test_a_file_is_not_a_checkpoint_folder(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ClientError, match="is a file, not a folder"):
        read_transformer_checkpoints(make_hp(enc0_pretrained_model="model.safetensors"), channel(tmp_path))


def test_sizes_beyond_the_checkpoint_name_both_numbers(tiny_bert: Path) -> None:
    with pytest.raises(ClientError) as err:
        read_transformer_checkpoints(make_hp(enc0_vocab_size=30522, enc0_max_seq_len=128), channel(tiny_bert.parent))
    text = str(err.value)
    assert "enc0_vocab_size=30522 is more than the vocab_size 200 of checkpoint tiny-bert" in text
    assert "enc0_max_seq_len=128 is more than the max_position_embeddings 32 of checkpoint tiny-bert" in text


def test_weights_are_copied_once_into_a_siamese_encoder(tiny_bert: Path, caplog: pytest.LogCaptureFixture) -> None:
    hp = make_hp(tied_token_embedding_weight=True, enc0_freeze_layers=1)
    checkpoints = read_transformer_checkpoints(hp, channel(tiny_bert.parent))
    model = Object2VecModel(hp, transformer_specs(checkpoints))
    with caplog.at_level(logging.INFO, logger="object2vec.data.pretrained"):
        initialise_transformers(model, hp, checkpoints)
    from safetensors import safe_open

    with safe_open(str(tiny_bert / "model.safetensors"), framework="pt") as f:
        expected = f.get_tensor("encoder.layer.1.output.dense.weight")
    assert torch.equal(model.encoders[1].transformer.encoder.layers[1].linear2.weight, expected)
    assert "enc0: transformer from checkpoint tiny-bert (BERT, 2 layers, hidden 16" in caplog.text
    assert "no projection (enc_dim = hidden size); embeddings and the lowest 1 of 2 layers frozen" in caplog.text
    assert "enc1: the same encoder as enc0 (tied_token_embedding_weight=true: siamese)" in caplog.text


def test_two_encoders_from_two_checkpoints(tiny_bert: Path, tmp_path: Path, bert_kit: Any) -> None:
    aux = tmp_path / "aux"
    shutil.copytree(tiny_bert, aux / "tiny-bert")
    bert_kit.write(aux / "other", config_changes={"hidden_size": 8, "num_attention_heads": 2}, seed=3)
    hp = make_hp(enc1_network="transformer", enc1_pretrained_model="other", enc1_vocab_size=200, enc1_max_seq_len=10)
    checkpoints = read_transformer_checkpoints(hp, channel(aux))
    model = Object2VecModel(hp, transformer_specs(checkpoints))
    initialise_transformers(model, hp, checkpoints)
    assert model.encoders[1].transformer.spec.hidden_size == 8
    tokens = Tokens.from_lists([[2, 5, 3]])
    assert model.encode(0, tokens).shape == model.encode(1, tokens).shape == (1, 16)
