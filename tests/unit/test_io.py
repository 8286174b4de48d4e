"""The model artifact: save-reload-allclose, model_config.json, permissions, no pickle, bad files."""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from object2vec import __version__
from object2vec.config import Hyperparameters
from object2vec.data.batching import Tokens
from object2vec.errors import ClientError
from object2vec.model.io import CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE, load_model, save_model, shapes_only
from object2vec.model.object2vec import Object2VecModel
from object2vec.model.transformer import TransformerSpec

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
    "attention-pooled": {"enc0_pooling": "attention", "comparator_list": "cosine", "mlp_layers": 0},
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


@pytest.mark.slow  # seconds (a fresh interpreter): left out of `make test-unit`
def test_loading_imports_neither_torch_dynamo_nor_sympy(tmp_path: Path) -> None:
    # Initialisers and empty_like on the meta device would: seconds of every serve start.
    for variant, changes in VARIANTS.items():
        save_model(make_model(**changes), tmp_path / variant)
    code = f"""
import sys
from pathlib import Path
from object2vec.model.io import load_model
for variant in {list(VARIANTS)!r}:
    load_model(Path({str(tmp_path)!r}) / variant)
print(sorted(name for name in ("torch._dynamo", "sympy") if name in sys.modules))
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "container")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_shapes_only_restores_the_initialisers() -> None:
    before = torch.nn.init.normal_
    with shapes_only():
        assert torch.nn.init.normal_ is not before
        embedding = torch.nn.Embedding(5, 3)
    assert embedding.weight.is_meta and torch.nn.init.normal_ is before


def test_tied_embedding_is_still_shared_after_reload(tmp_path: Path) -> None:
    save_model(make_model(**VARIANTS["tied"]), tmp_path)
    model = load_model(tmp_path).model
    assert model.token_embedding(0) is model.token_embedding(1)
    with safe_open(str(tmp_path / WEIGHTS_FILE), framework="pt") as f:
        embedding_keys = [key for key in f.keys() if key.endswith("embedding.weight")]
    assert len(embedding_keys) == 1  # stored once


@pytest.mark.parametrize("network", ["hcnn", "bilstm"])
def test_tied_encoders_are_still_one_encoder_after_reload(tmp_path: Path, network: str) -> None:
    model = make_model(enc0_network=network, enc0_layers=1, tied_encoders="true").eval()
    save_model(model, tmp_path)
    loaded = load_model(tmp_path).model
    assert loaded.siamese and loaded.hp.tied_encoders
    with safe_open(str(tmp_path / WEIGHTS_FILE), framework="pt") as f:
        assert not [key for key in f.keys() if key.startswith("encoders.1.")]  # noqa: SIM118 (stored once)
    tokens = Tokens.from_lists([[1, 2, 3], [4]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens, tokens), model(tokens, tokens))


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


# --- tampered files: refused from the safetensors header, before anything is allocated ----------


def test_a_config_claiming_a_huge_vocabulary_is_refused_from_the_header(saved: Path) -> None:
    edit_config(saved, hyperparameters={"enc0_vocab_size": 3_000_000, "enc0_token_embedding_dim": 100})
    with pytest.raises(ClientError, match=r"encoders.0.embedding.weight has shape \[25, 4\], the config implies "):
        load_model(saved)


@pytest.mark.slow  # seconds: left out of `make test-unit`
def test_the_largest_config_is_refused_without_allocating_it(saved: Path, tmp_path: Path) -> None:
    """Both tables at the largest sizes the parser allows (3,000,000 x 1000 float32: 12 GB each).
    In a child process whose data segment may grow by only 512 MiB, so that if the model were
    built before the check the test fails with an allocation error instead of taking the
    machine's memory."""
    edit_config(
        saved,
        hyperparameters={
            "enc0_vocab_size": 3_000_000,
            "enc0_token_embedding_dim": 1000,
            "enc1_network": "pooled_embedding",
            "enc1_vocab_size": 3_000_000,
            "enc1_token_embedding_dim": 1000,
            "enc1_max_seq_len": 6,
        },
    )
    script = f"""
import resource, sys
import torch
from object2vec.errors import ClientError
from object2vec.model.io import load_model
with open("/proc/self/status") as status:
    data_kib = next(int(line.split()[1]) for line in status if line.startswith("VmData:"))
limit = (data_kib << 10) + (512 << 20)
resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
try:
    load_model(__import__("pathlib").Path({str(saved)!r}))
except ClientError as err:
    print("ClientError:", err)
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "container"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ClientError:" in result.stdout and "[3000000, 1000]" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda tensors: {k: v.half() for k, v in tensors.items()}, "is F16, this release reads F32"),
        (lambda tensors: {**tensors, "extra.weight": torch.zeros(2)}, "extra.weight is not part of this model"),
        (
            lambda tensors: {k: v for k, v in tensors.items() if k != "mlp.0.bias"},
            "mlp.0.bias is missing",
        ),
        (
            lambda tensors: {**tensors, "mlp.0.bias": torch.zeros(7)},
            r"mlp.0.bias has shape \[7\], the config implies \[5\]",
        ),
    ],
    ids=["float16", "extra", "missing", "shape"],
)
def test_weights_that_differ_from_the_config_are_named(saved: Path, edit: Any, message: str) -> None:
    path = saved / WEIGHTS_FILE
    save_file(edit(load_file(str(path))), str(path), metadata={"format": "pt"})
    with pytest.raises(ClientError, match=message):
        load_model(saved)


def test_a_header_that_claims_more_than_the_file_holds(saved: Path) -> None:
    path = saved / WEIGHTS_FILE
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    name = next(key for key in header if key != "__metadata__")
    header[name]["shape"] = [3_000_000, 100]
    header[name]["data_offsets"][1] = header[name]["data_offsets"][0] + 3_000_000 * 100 * 4
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + size :])
    with pytest.raises(ClientError, match="is not a safetensors file that `train` wrote"):
        load_model(saved)


def test_deeply_nested_config_is_a_client_error(saved: Path) -> None:
    nested: Any = 1
    for _ in range(800):
        nested = [nested]
    edit_config(saved, hyperparameters={"enc_dim": nested})
    with pytest.raises(ClientError):
        load_model(saved)
    (saved / CONFIG_FILE).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ClientError, match="nests values too deeply"):
        load_model(saved)


# ---------------------------------------------------------------------------------------------
# Transformer encoders: the architecture travels in model_config.json, so serving needs no checkpoint.

SPEC = TransformerSpec(vocab_size=25, hidden_size=8, layers=2, heads=2, intermediate_size=12, max_positions=6,
                       type_vocab_size=2, pooling="cls", normalize=True)  # fmt: skip


def transformer_model(**changes: Any) -> Object2VecModel:
    torch.manual_seed(0)
    hp = Hyperparameters.from_dict({**BASE, "enc0_network": "transformer", "enc0_pretrained_model": "t", **changes})
    model = Object2VecModel(hp, {0: SPEC, 1: SPEC})
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return model.eval()


@pytest.mark.parametrize("tied", ["false", "true"])
def test_transformer_model_round_trips_without_its_checkpoint(tmp_path: Path, tied: str) -> None:
    model = transformer_model(tied_token_embedding_weight=tied, enc0_freeze_layers="1")
    save_model(model, tmp_path / "model")
    config = json.loads((tmp_path / "model" / CONFIG_FILE).read_text())
    assert config["transformers"] == {"enc0": SPEC.to_dict(), "enc1": SPEC.to_dict()}
    loaded = load_model(tmp_path / "model").model
    assert loaded.transformer_specs == {0: SPEC, 1: SPEC}
    assert loaded.siamese == (tied == "true")
    with torch.no_grad():
        torch.testing.assert_close(loaded.predict(*inputs(model)), model.predict(*inputs(model)))
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name


def test_models_without_transformers_write_no_architecture(saved: Path) -> None:
    assert "transformers" not in json.loads((saved / CONFIG_FILE).read_text())


@pytest.mark.parametrize(
    ("transformers", "message"),
    [
        ({"enc0": {**SPEC.to_dict(), "hidden_size": 10**7}}, "hidden_size=10000000 must be an integer"),
        # the weights hold 2 layers
        ({f"enc{i}": {**SPEC.to_dict(), "layers": 3} for i in (0, 1)}, f"{WEIGHTS_FILE} does not match"),
        ({"enc0": {**SPEC.to_dict(), "extra": 1}}, "unknown keys \\['extra'\\]"),
        ({"enc2": SPEC.to_dict()}, "must be an object with keys enc0 and/or enc1"),
        ({}, "network=transformer, but no transformer architecture"),
    ],
)
def test_a_tampered_transformer_architecture_is_refused(tmp_path: Path, transformers: dict, message: str) -> None:
    save_model(transformer_model(tied_token_embedding_weight="true"), tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    config["transformers"] = transformers
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ClientError, match=message):
        load_model(tmp_path)


def test_a_max_seq_len_beyond_the_positions_is_refused_on_load(tmp_path: Path) -> None:
    save_model(transformer_model(), tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    config["hyperparameters"]["enc1_max_seq_len"] = 7
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ClientError, match="enc1_max_seq_len=7 is more than the max_position_embeddings 6"):
        load_model(tmp_path)
