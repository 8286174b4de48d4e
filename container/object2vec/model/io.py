"""The model artifact: model_config.json (format version + every resolved hyperparameter) and
model.safetensors (weights). Loading runs no code from the files (no pickle)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model as load_safetensors
from safetensors.torch import save_model as save_safetensors

from object2vec import __version__
from object2vec.config import Hyperparameters
from object2vec.errors import ClientError
from object2vec.files import atomic_path
from object2vec.model.object2vec import Object2VecModel
from object2vec.model.transformer import specs_from_dict, specs_to_dict

CONFIG_FILE = "model_config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1
MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class LoadedModel:
    model: Object2VecModel  # in eval mode
    hyperparameters: Hyperparameters
    info: dict[str, Any]  # the rest of model_config.json (training summary)


def save_model(model: Object2VecModel, model_dir: Path, info: dict[str, Any] | None = None) -> None:
    """Write both files, each atomically (temp file + rename), weights first."""
    model_dir.mkdir(parents=True, exist_ok=True)
    hp = model.hp
    config = {
        "format_version": FORMAT_VERSION,
        "object2vec_version": __version__,
        "hyperparameters": hp.to_dict(),
        "vocab_sizes": {"enc0": hp.enc0.vocab_size, "enc1": hp.enc1.vocab_size},
        "embedding_dim": hp.enc_dim,
        "output": {"layer": hp.output_layer, "dim": hp.output_dim},
        **(info or {}),
    }
    if model.transformer_specs:  # the architecture of each transformer encoder, so serving needs no checkpoint
        config["transformers"] = specs_to_dict(model.transformer_specs)
    with atomic_path(model_dir / WEIGHTS_FILE) as tmp:
        # save_model (not save_file) handles the shared table of tied token embeddings.
        save_safetensors(model, str(tmp), metadata={"format": "pt", "object2vec_format_version": str(FORMAT_VERSION)})
    with atomic_path(model_dir / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_model(model_dir: Path, device: str | torch.device = "cpu") -> LoadedModel:
    config_path = model_dir / CONFIG_FILE
    weights_path = model_dir / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ClientError(f"{path} is missing: the model dir must hold what `train` wrote there")
    if config_path.stat().st_size > MAX_CONFIG_BYTES:
        raise ClientError(f"{config_path} is larger than {MAX_CONFIG_BYTES} bytes: not a model config")
    try:
        config = json.loads(config_path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ClientError(f"{config_path} is not valid JSON: {err}") from err
    if not isinstance(config, dict) or not isinstance(config.get("hyperparameters"), dict):
        raise ClientError(f'{config_path} is not a model config: it has no "hyperparameters" object')
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise ClientError(f"{config_path} has format_version {version!r}; this release reads version {FORMAT_VERSION}")
    hp = Hyperparameters.from_dict(config["hyperparameters"])
    specs = specs_from_dict(config.get("transformers", {}), str(config_path))
    model = Object2VecModel(hp, specs)
    try:
        load_safetensors(model, str(weights_path), strict=True, device=str(device))
    except (RuntimeError, OSError, ValueError, SafetensorError) as err:
        raise ClientError(f"{weights_path} does not match {config_path}: {err}") from err
    model.to(device).eval()
    info = {k: v for k, v in config.items() if k != "hyperparameters"}
    return LoadedModel(model=model, hyperparameters=hp, info=info)
