"""The model artifact: model_config.json (format version + every resolved hyperparameter) and
model.safetensors (weights). Loading runs no code from the files (no pickle), and allocates
nothing before the config has been checked against the weights file's header: the tensor names,
shapes and dtypes the hyperparameters imply (worked out on the meta device, where tensors have
no storage) must be exactly those in the header, whose offsets safetensors checks against the
file's size. So a config edited to claim a huge vocabulary is refused before any table of that
size is made, and a model can never need much more memory than its files take on disk. The model
that passed is then given uninitialised storage and filled from the file: no time goes into a
random initialisation that the weights replace (1.8 s for a 1M-row token table)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model as load_safetensors
from safetensors.torch import save_model as save_safetensors

from object2vec import __version__
from object2vec.config import Hyperparameters
from object2vec.errors import ClientError
from object2vec.files import atomic_path
from object2vec.model.object2vec import Object2VecModel
from object2vec.model.transformer import TransformerSpec, specs_from_dict, specs_to_dict

CONFIG_FILE = "model_config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1
MAX_CONFIG_BYTES = 1 << 20
# The safetensors dtype names of the torch dtypes a model can hold (train writes float32 only).
SAFETENSORS_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
}
MAX_PROBLEMS_SHOWN = 5


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
    config = read_config(config_path)
    try:
        hp = Hyperparameters.from_dict(config["hyperparameters"])
        specs = specs_from_dict(config.get("transformers", {}), str(config_path))
    except RecursionError:
        raise ClientError(f"{config_path} nests its hyperparameters too deeply: not a model config") from None
    with shapes_only():
        model = Object2VecModel(hp, specs)  # shapes only: no storage, no initialisation
    check_weights_header(weights_path, tensors_of(model), config_path)
    # strict loading below sets every tensor of the state dict; a buffer outside it (none today)
    # would keep the uninitialised values, so such a model is built the ordinary way.
    if set(dict(model.named_buffers(remove_duplicate=False))) <= set(model.state_dict()):
        # Module.to_empty's empty_like runs torch's Python reference for meta tensors, which imports
        # sympy (0.7 s); torch.empty of the same shape and dtype is the same uninitialised storage.
        model._apply(lambda t: torch.empty(t.shape, dtype=t.dtype, device=device))
    else:
        model = Object2VecModel(hp, specs)
    try:
        load_safetensors(model, str(weights_path), strict=True, device=str(device))
    except (RuntimeError, OSError, ValueError, SafetensorError) as err:
        raise ClientError(f"{weights_path} does not match {config_path}: {err}") from err
    model.to(device).eval()
    info = {k: v for k, v in config.items() if k != "hyperparameters"}
    return LoadedModel(model=model, hyperparameters=hp, info=info)


def read_config(config_path: Path) -> dict[str, Any]:
    """model_config.json, bounded in size and nesting, with a supported format_version."""
    if config_path.stat().st_size > MAX_CONFIG_BYTES:
        raise ClientError(f"{config_path} is larger than {MAX_CONFIG_BYTES} bytes: not a model config")
    try:
        config = json.loads(config_path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ClientError(f"{config_path} is not valid JSON: {err}") from err
    except RecursionError:
        raise ClientError(f"{config_path} is not valid JSON: it nests values too deeply") from None
    if not isinstance(config, dict) or not isinstance(config.get("hyperparameters"), dict):
        raise ClientError(f'{config_path} is not a model config: it has no "hyperparameters" object')
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise ClientError(f"{config_path} has format_version {version!r}; this release reads version {FORMAT_VERSION}")
    return config


def expected_tensors(
    hp: Hyperparameters, specs: dict[int, TransformerSpec] | None = None
) -> list[tuple[list[str], tuple[int, ...], str]]:
    """The tensors a model with these hyperparameters holds: (names, shape, dtype) per storage.

    Built on the meta device, so no memory is allocated however large the config claims the
    model to be. Tied parameters are one storage under several names; safetensors writes one of
    them."""
    with shapes_only():
        model = Object2VecModel(hp, specs or {})
    return tensors_of(model)


@contextlib.contextmanager
def shapes_only() -> Iterator[None]:
    """Modules built inside have meta tensors (no storage) and skip their random initialisation.

    Initialising a meta tensor computes nothing, but torch runs some initialisers there (normal_)
    through its Python reference kernels, whose first use imports torch._dynamo: 1.7 s of every
    `serve` start and `index` run on a 2-core machine, for values that are never used."""
    names = [name for name in dir(torch.nn.init) if name.endswith("_") and not name.startswith("_")]
    saved = {name: getattr(torch.nn.init, name) for name in names}
    try:
        for name in names:
            setattr(torch.nn.init, name, _keep)
        with torch.device("meta"):
            yield
    finally:
        for name, function in saved.items():
            setattr(torch.nn.init, name, function)


def _keep(tensor: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
    """An initialiser that leaves the tensor as it is (the signature of torch.nn.init's)."""
    return tensor


def tensors_of(model: Object2VecModel) -> list[tuple[list[str], tuple[int, ...], str]]:
    """(names, shape, dtype) per storage of the model's state dict (expected_tensors)."""
    storages: dict[int, tuple[list[str], tuple[int, ...], str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        dtype = SAFETENSORS_DTYPES.get(tensor.dtype, str(tensor.dtype))
        storages.setdefault(id(tensor), ([], tuple(tensor.shape), dtype))[0].append(name)
    return list(storages.values())


def check_weights_header(
    weights_path: Path, expected: list[tuple[list[str], tuple[int, ...], str]], config_path: Path
) -> None:
    """ClientError unless the header of weights_path lists exactly the expected tensors.

    Reading the header maps the file but copies no tensor data; safetensors refuses a header
    whose offsets do not fit the file."""
    try:
        with safe_open(str(weights_path), framework="pt") as weights:
            slices = {name: weights.get_slice(name) for name in weights.keys()}
            found = {name: (tuple(part.get_shape()), part.get_dtype()) for name, part in slices.items()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ClientError(f"{weights_path} is not a safetensors file that `train` wrote: {err}") from err
    problems = []
    claimed: set[str] = set()
    for names, shape, dtype in expected:
        present = [name for name in names if name in found]
        claimed.update(present)
        if not present:
            problems.append(f"{' or '.join(names)} is missing")
        for name in present:
            found_shape, found_dtype = found[name]
            if found_shape != shape:
                problems.append(f"{name} has shape {list(found_shape)}, the config implies {list(shape)}")
            if found_dtype != dtype:
                problems.append(f"{name} is {found_dtype}, this release reads {dtype} (as `train` writes it)")
    problems += [f"{name} is not part of this model" for name in sorted(set(found) - claimed)]
    if problems:
        shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
        more = f" (and {len(problems) - MAX_PROBLEMS_SHOWN} more)" if len(problems) > MAX_PROBLEMS_SHOWN else ""
        raise ClientError(
            f"{weights_path} does not match {config_path}: {shown}{more}. Serve the two files that one "
            "`train` run wrote, unchanged"
        )
