"""The model artifact: save-reload-allclose, model_config.json, permissions, no pickle, bad files."""

from __future__ import annotations

import json
import os
import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from object2vec import __version__
from object2vec.config import Hyperparameters
from object2vec.data.batching import Tokens
from object2vec.errors import ClientError
from object2vec.model.io import CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE, load_model, save_model
from object2vec.model.object2vec import Object2VecModel

BASE: dict[str, Any] = {
    "enc0_network": "pooled_embedding",
    "enc0_vocab_size": 25,
    "enc0_max_seq_len": 6,
    "enc0_token_embedding_dim": 4,
    "enc_dim": 6,
    "mlp_dim": 5,
    "mlp_layers": 1,
    "num_classes": 3,
}
VARIANTS = {
    "pooled_embedding": {},
    "hcnn": {"enc0_network": "hcnn", "enc0_layers": 2, "mlp_activation": "tanh"},
    "bilstm+hcnn": {
        "enc0_network": "bilstm",
        "enc0_layers": 2,
        "enc1_network": "hcnn",
        "enc1_vocab_size": 9,
        "enc1_max_seq_len": 4,
        "enc1_token_embedding_dim": 3,
        "enc1_cnn_filter_width": 5,
    },
    "tied": {"tied_token_embedding_weight": "true", "comparator_list": "abs_diff,hadamard"},
    "regression": {"output_layer": "mean_squared_error", "mlp_layers": 0, "enc0_network": "bilstm"},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(**changes: Any) -> Object2VecModel:
    torch.manual_seed(0)
    model = Object2VecModel(Hyperparameters.from_dict({**BASE, **changes}))
    with torch.no_grad():  # move away from the initial values, so a reload that re-initialises fails
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return model.eval()


def inputs(model: Object2VecModel) -> tuple[Tokens, Tokens]:
    generator = torch.Generator().manual_seed(1)
    in0 = torch.randint(0, model.hp.enc0.vocab_size, (3, 6), generator=generator).tolist()
    in1 = torch.randint(0, model.hp.enc1.vocab_size, (3, 4), generator=generator).tolist()
    return (
        Tokens.from_lists([row[:length] for row, length in zip(in0, [6, 2, 0], strict=True)]),
        Tokens.from_lists([row[:length] for row, length in zip(in1, [1, 4, 3], strict=True)]),
    )


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    save_model(make_model(), tmp_path / "model")
    return tmp_path / "model"


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_save_reload_allclose(tmp_path: Path, variant: str) -> None:
    model = make_model(**VARIANTS[variant])
    save_model(model, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    # enc1_network is stored as the network enc1 really has ("enc0" resolved), the rest as given.
    assert loaded.hyperparameters.to_dict() == model.hp.to_dict()
    assert (loaded.hyperparameters.enc0, loaded.hyperparameters.enc1) == (model.hp.enc0, model.hp.enc1)
    assert not loaded.model.training
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.predict(*inputs(model)), model.predict(*inputs(model)))
        for index in (0, 1):
            x = inputs(model)[index]
            torch.testing.assert_close(loaded.model.encode(index, x), model.encode(index, x))
    expected = model.state_dict()
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


def test_tied_embedding_is_still_shared_after_reload(tmp_path: Path) -> None:
    save_model(make_model(**VARIANTS["tied"]), tmp_path)
    model = load_model(tmp_path).model
    assert model.token_embedding(0) is model.token_embedding(1)
    with safe_open(str(tmp_path / WEIGHTS_FILE), framework="pt") as f:
        embedding_keys = [key for key in f.keys() if key.endswith("embedding.weight")]
    assert len(embedding_keys) == 1  # stored once


def test_model_config_content(tmp_path: Path) -> None:
    model = make_model(**VARIANTS["bilstm+hcnn"])
    save_model(model, tmp_path, info={"training": {"best_epoch": 2}})
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config["format_version"] == FORMAT_VERSION == 1
    assert config["object2vec_version"] == __version__
    assert config["vocab_sizes"] == {"enc0": 25, "enc1": 9}
    assert config["embedding_dim"] == 6
    assert config["output"] == {"layer": "softmax", "dim": 3}
    assert config["training"] == {"best_epoch": 2}
    assert config["hyperparameters"] == model.hp.to_dict()
    assert Hyperparameters.from_dict(config["hyperparameters"]) == model.hp  # round trip
    assert load_model(tmp_path).info["training"] == {"best_epoch": 2}
    assert "hyperparameters" not in load_model(tmp_path).info


def test_only_the_two_files_are_written(saved: Path) -> None:
    assert sorted(p.name for p in saved.iterdir()) == [WEIGHTS_FILE, CONFIG_FILE]


def test_saving_again_replaces_the_model(tmp_path: Path) -> None:
    save_model(make_model(), tmp_path)
    save_model(make_model(output_layer="mean_squared_error"), tmp_path)
    assert not load_model(tmp_path).hyperparameters.is_classification
    assert sorted(p.name for p in tmp_path.iterdir()) == [WEIGHTS_FILE, CONFIG_FILE]


def test_weights_are_readable_by_other_users(tmp_path: Path, umask_022: None) -> None:
    save_model(make_model(), tmp_path / "model")
    assert stat.S_IMODE((tmp_path / "model" / WEIGHTS_FILE).stat().st_mode) == 0o644


def test_config_is_readable_by_other_users(tmp_path: Path, umask_022: None) -> None:
    save_model(make_model(), tmp_path / "model")
    assert stat.S_IMODE((tmp_path / "model" / CONFIG_FILE).stat().st_mode) == 0o644


def test_no_pickle_only_safetensors_and_json(saved: Path) -> None:
    data = (saved / WEIGHTS_FILE).read_bytes()
    # safetensors: an 8-byte little-endian header size, a JSON header, then raw tensor bytes.
    (header_size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_size])
    assert header["__metadata__"]["object2vec_format_version"] == str(FORMAT_VERSION)
    assert all(entry["dtype"] == "F32" for key, entry in header.items() if key != "__metadata__")
    assert not data.startswith(b"\x80") and not data.startswith(b"PK")  # neither pickle nor torch.save zip
    json.loads((saved / CONFIG_FILE).read_text())


@pytest.mark.parametrize("missing", [CONFIG_FILE, WEIGHTS_FILE])
def test_missing_file(saved: Path, missing: str) -> None:
    (saved / missing).unlink()
    with pytest.raises(ClientError, match=f"{missing} is missing: the model dir must hold what `train` wrote"):
        load_model(saved)


def test_missing_model_dir(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match="is missing"):
        load_model(tmp_path / "nowhere")


def edit_config(model_dir: Path, **changes: Any) -> None:
    path = model_dir / CONFIG_FILE
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if key == "hyperparameters":
            config["hyperparameters"].update(value)
        else:
            config[key] = value
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_wrong_format_version(saved: Path, version: Any) -> None:
    edit_config(saved, format_version=version)
    with pytest.raises(ClientError, match=f"has format_version {version!r}; this release reads version 1"):
        load_model(saved)


@pytest.mark.parametrize("text", ["{", "", "\xff"])
def test_config_not_json(saved: Path, text: str) -> None:
    (saved / CONFIG_FILE).write_text(text, errors="surrogateescape")
    with pytest.raises(ClientError, match="is not valid JSON"):
        load_model(saved)


def test_config_too_large(saved: Path) -> None:
    (saved / CONFIG_FILE).write_text(" " * (1 << 20) + "{}")
    with pytest.raises(ClientError, match="is larger than 1048576 bytes"):
        load_model(saved)


def test_invalid_hyperparameters_in_config(saved: Path) -> None:
    edit_config(saved, hyperparameters={"enc_dim": 1})
    with pytest.raises(ClientError, match="enc_dim=1 is out of range"):
        load_model(saved)


@pytest.mark.parametrize(
    "changes",
    [{"enc_dim": 8}, {"mlp_layers": 2}, {"enc0_network": "hcnn"}, {"enc0_vocab_size": 26}, {"num_classes": 2}],
)
def test_weights_that_do_not_match_the_config(saved: Path, changes: dict[str, Any]) -> None:
    edit_config(saved, hyperparameters=changes)
    with pytest.raises(ClientError, match=f"{WEIGHTS_FILE} does not match .*{CONFIG_FILE}"):
        load_model(saved)


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda data: b"garbage" * 10, id="garbage"),
        pytest.param(lambda data: data[:-20], id="truncated"),
        pytest.param(lambda data: b"", id="empty"),
    ],
)
def test_corrupt_weights(saved: Path, corrupt: Any) -> None:
    path = saved / WEIGHTS_FILE
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(ClientError, match=f"{WEIGHTS_FILE}"):
        load_model(saved)


@pytest.mark.parametrize("text", ["[1]", json.dumps({"format_version": 1})])
def test_config_without_hyperparameters(saved: Path, text: str) -> None:
    (saved / CONFIG_FILE).write_text(text)
    with pytest.raises(ClientError):
        load_model(saved)
