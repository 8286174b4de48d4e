"""data/init_model.py: warm start from a trained model in the auxiliary channel (init_model)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from object2vec.config import Hyperparameters
from object2vec.data.init_model import initialise_from_model, read_init_model
from object2vec.environment import Channel
from object2vec.errors import ClientError
from object2vec.model.io import save_model
from object2vec.model.object2vec import Object2VecModel

BASE: dict[str, Any] = {
    "enc0_network": "hcnn",
    "enc0_layers": 2,
    "enc0_vocab_size": 30,
    "enc0_max_seq_len": 8,
    "enc0_token_embedding_dim": 6,
    "enc_dim": 8,
    "mlp_dim": 8,
    "mlp_layers": 1,
}


def channel(path: Path) -> Channel:
    return Channel("auxiliary", path, None, "File", "FullyReplicated")


def hyperparameters(**changes: Any) -> Hyperparameters:
    return Hyperparameters.from_dict({**BASE, **changes})


def saved(aux: Path, seed: int = 1, **changes: Any) -> Object2VecModel:
    """A model as `train` writes it, in the folder aux/previous."""
    torch.manual_seed(seed)
    model = Object2VecModel(hyperparameters(**changes))
    save_model(model, aux / "previous")
    return model


def fresh(**changes: Any) -> tuple[Object2VecModel, Hyperparameters]:
    hp = hyperparameters(init_model="previous", **changes)
    torch.manual_seed(2)
    return Object2VecModel(hp), hp


def test_every_tensor_is_taken_when_everything_matches(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    previous = saved(tmp_path)
    model, hp = fresh(enc0_max_seq_len=20)  # the sequence length shapes no weight
    loaded = read_init_model(hp, channel(tmp_path))
    assert loaded is not None
    caplog.set_level(logging.INFO, logger="object2vec.data.init_model")
    initialise_from_model(model, hp, loaded)
    want = previous.state_dict()
    assert all(torch.equal(tensor, want[name]) for name, tensor in model.state_dict().items())
    assert "enc0 starts from the init model's encoder, its token embedding table" in caplog.text
    assert "the comparator MLP and output layer start from the init model's" in caplog.text


def test_another_vocabulary_and_head_keep_their_own_initialisation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A model trained on unlabelled pairs (softmax, 2 classes, its own vocabulary) starting a
    # regression with a bigger vocabulary: the encoders' weights come over, nothing else.
    previous = saved(tmp_path)
    model, hp = fresh(enc0_vocab_size=40, output_layer="mean_squared_error", comparator_list="hadamard")
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    loaded = read_init_model(hp, channel(tmp_path))
    assert loaded is not None
    caplog.set_level(logging.INFO, logger="object2vec.data.init_model")
    initialise_from_model(model, hp, loaded)
    want = previous.state_dict()
    for name, tensor in model.state_dict().items():
        if name.startswith("encoders.") and not name.endswith(".embedding.weight"):
            assert torch.equal(tensor, want[name]), name
        else:
            assert torch.equal(tensor, before[name]), name
    assert "enc1 starts from the init model's encoder, not its token embedding table (30 rows there, 40 here" in (
        caplog.text
    )
    assert "the comparator MLP and output layer start fresh" in caplog.text


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"enc0_network": "bilstm"}, "enc0_network: 'hcnn' in the init model, 'bilstm' here"),
        ({"enc0_layers": 3}, "enc0_layers: 2 in the init model, 3 here"),
        ({"enc0_token_embedding_dim": 4}, "enc0_token_embedding_dim: 6 in the init model, 4 here"),
        ({"enc_dim": 16}, "enc_dim: 8 in the init model, 16 here"),
        (
            {"enc1_network": "pooled_embedding", "enc1_vocab_size": 30, "enc1_max_seq_len": 4},
            "its enc1 is not built like this job's (enc1_network: 'hcnn' in the init model, 'pooled_embedding' here)",
        ),
    ],
)
def test_an_encoder_built_otherwise_is_a_client_error(tmp_path: Path, changes: dict[str, Any], problem: str) -> None:
    saved(tmp_path)
    _, hp = fresh(**changes)
    with pytest.raises(ClientError, match="init_model=previous: its enc") as caught:
        read_init_model(hp, channel(tmp_path))
    assert problem in str(caught.value) and "or train without init_model" in str(caught.value)


def test_without_init_model_nothing_is_read(tmp_path: Path) -> None:
    assert read_init_model(hyperparameters(), channel(tmp_path / "absent")) is None


def test_a_missing_folder_or_channel_or_file_is_a_client_error(tmp_path: Path) -> None:
    _, hp = fresh()
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(ClientError, match=r"init_model=previous: no such folder .* it holds: vocab.json"):
        read_init_model(hp, channel(tmp_path))
    with pytest.raises(ClientError, match=r"no channel named auxiliary: .*previous/ \(model_config.json, model"):
        read_init_model(hp, None)
    (tmp_path / "previous").mkdir()
    with pytest.raises(ClientError, match="model_config.json is missing"):
        read_init_model(hp, channel(tmp_path))


def test_another_pooling_is_another_encoder(tmp_path: Path) -> None:
    pooled = {"enc0_network": "pooled_embedding", "enc0_layers": "auto"}
    saved(tmp_path, **pooled)
    _, hp = fresh(**pooled, enc0_pooling="attention")
    with pytest.raises(ClientError, match="enc0_pooling: 'mean' in the init model, 'attention' here"):
        read_init_model(hp, channel(tmp_path))
