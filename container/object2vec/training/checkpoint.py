"""Checkpoints in /opt/ml/checkpoints: written each epoch and on SIGTERM, resumed from on start.

SageMaker syncs that folder to CheckpointConfig.S3Uri while the job runs and copies it back in
when a job (a managed-spot restart, or a new job given the same checkpoint_s3_uri) starts, so a
job that finds a checkpoint there continues from it instead of starting over.

A checkpoint is two files with host-unique names (hosts of one job may share the S3 prefix):
    <host>-<sequence>.safetensors   every tensor: weights, best weights, optimizer state, RNG states
    <host>-<sequence>.json          everything else, with each tensor replaced by its name, plus
                                    the size and SHA-256 of the tensor file
The tensor file is written first and the JSON last, each atomically (temp file + rename), so a
checkpoint without its JSON, or whose tensor file does not match it (a truncated copy), is not
valid: it is skipped with a warning and the next older one is tried. Nothing is unpickled.

What goes in (see `Trainer.state_dict`): the model and the best model so far, the optimizer,
the position (the epoch to run and how many of its steps are done: not 0 only for a checkpoint
written on SIGTERM), early-stopping state and history, the train metric sums of a partial epoch,
and the RNG states (each torch.Generator of the trainer as of the start of the epoch, and torch's
global CPU and CUDA generators), so a resumed run takes the same steps as one never stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from object2vec import __version__
from object2vec.config import default_value
from object2vec.files import atomic_path

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
KEEP = 2  # the newest two: if the newest is cut short while being synced, the one before is whole
MAX_JSON_BYTES = 256 << 20
# Hyperparameters that may change between the run that wrote a checkpoint and the one resuming it
# (the retrieval_* ones only shape the index built after training).
RESUMABLE_CHANGES = (
    "epochs",
    "_num_gpus",
    "_kvstore",
    "_num_kv_servers",
    "_tuning_objective_metric",
    "retrieval_index",
    "retrieval_exact_max",
    "retrieval_ivf_nlist",
    "retrieval_ivf_nprobe",
    "retrieval_top_n",
    "retrieval_score_class",
)


@dataclass(frozen=True)
class Position:
    """Where training resumes: `step` steps of `epoch` are done (0: the epoch has not started)."""

    epoch: int
    step: int

    @property
    def key(self) -> int:
        """One integer that orders positions (for agreeing on one across hosts)."""
        return self.epoch * 1_000_000_000 + self.step


class CheckpointStore:
    """The checkpoints of one host in one folder."""

    def __init__(self, directory: Path, host: str, keep: int = KEEP) -> None:
        self.directory = directory
        self.prefix = re.sub(r"[^A-Za-z0-9._-]", "_", host)
        self.keep = keep
        self.pattern = re.compile(rf"{re.escape(self.prefix)}-(\d+)\.json")

    def save(self, state: dict[str, Any], position: Position) -> Path:
        """Write a checkpoint of `state` (nested dicts and lists of tensors and JSON values)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        sequence = max((number for number, _ in self._existing()), default=0) + 1
        stem = f"{self.prefix}-{sequence:06d}"
        tensors: dict[str, torch.Tensor] = {}
        body = _encode(state, tensors)
        tensor_path = self.directory / f"{stem}.safetensors"
        with atomic_path(tensor_path, durable=True) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt"})
        document = {
            "format_version": FORMAT_VERSION,
            "object2vec_version": __version__,
            "position": {"epoch": position.epoch, "step": position.step},
            "tensors_file": tensor_path.name,
            "tensors_bytes": tensor_path.stat().st_size,
            "tensors_sha256": _sha256(tensor_path),
            "state": body,
        }
        json_path = self.directory / f"{stem}.json"
        with atomic_path(json_path, durable=True) as tmp:
            tmp.write_text(json.dumps(document))
        self._prune()
        logger.info("Checkpoint %s written (epoch %d, step %d)", json_path, position.epoch, position.step)
        return json_path

    def positions(self) -> list[tuple[Position, Path]]:
        """Valid-looking checkpoints (JSON readable), newest first; tensors are checked on load."""
        found = []
        for _, path in sorted(self._existing(), reverse=True):
            document = self._document(path)
            if document is not None:
                position = document["position"]
                found.append((Position(int(position["epoch"]), int(position["step"])), path))
        return found

    def load(self, path: Path) -> dict[str, Any] | None:
        """The state saved in `path`, or None (with a warning) when it is damaged."""
        document = self._document(path)
        if document is None:
            return None
        tensor_path = self.directory / document["tensors_file"]
        try:
            size = tensor_path.stat().st_size
            if size != document["tensors_bytes"] or _sha256(tensor_path) != document["tensors_sha256"]:
                raise ValueError(f"{tensor_path.name} has {size} bytes, not the {document['tensors_bytes']} written")
            with safe_open(str(tensor_path), framework="pt") as handle:
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
            return _decode(document["state"], tensors)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
            logger.warning("Ignoring checkpoint %s: %s", path, err)
            return None

    def _document(self, path: Path) -> dict[str, Any] | None:
        try:
            if path.stat().st_size > MAX_JSON_BYTES:
                raise ValueError("too large")
            document = json.loads(path.read_text())
            if document.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format_version {document.get('format_version')!r} is not {FORMAT_VERSION}")
            for key in ("position", "tensors_file", "tensors_bytes", "tensors_sha256", "state"):
                if key not in document:
                    raise ValueError(f"no {key}")
            return document
        except (OSError, ValueError, UnicodeDecodeError, AttributeError) as err:
            logger.warning("Ignoring checkpoint %s: it is damaged or incomplete (%s)", path, err)
            return None

    def _existing(self) -> list[tuple[int, Path]]:
        if not self.directory.is_dir():
            return []
        return [
            (int(match.group(1)), path)
            for path in self.directory.iterdir()
            if (match := self.pattern.fullmatch(path.name))
        ]

    def _prune(self) -> None:
        for _, path in sorted(self._existing(), reverse=True)[self.keep :]:
            path.unlink(missing_ok=True)
            path.with_suffix(".safetensors").unlink(missing_ok=True)


def compatible(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Hyperparameters that differ between a checkpoint and this run (apart from harmless ones). A
    key the checkpoint lacks (one added by a later release, e.g. ema_decay) counts as its default:
    a job resumed by a newer image continues when the new setting is left at its default."""
    keys = (set(saved) | set(current)) - set(RESUMABLE_CHANGES)
    return sorted(key for key in keys if saved.get(key, default_value(key)) != current.get(key))


# ---------------------------------------------------------------------------------------------
# Nested state <-> JSON + named tensors. Dicts keep their key types (optimizer states use int
# keys), tuples stay tuples; tensors are replaced by {"__tensor__": name}.


def _encode(value: Any, tensors: dict[str, torch.Tensor], path: str = "t", seen: dict | None = None) -> Any:
    seen = {} if seen is None else seen  # a tensor's identity -> the name it is stored under
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        identity = _identity(tensor)
        if identity in seen:  # a tied weight (one encoder under two names): stored once
            return {"__tensor__": seen[identity]}
        name = path
        if tensor.is_sparse:
            tensor = tensor.to_dense()
        tensors[name] = tensor.to("cpu").contiguous().clone()  # clone: safetensors refuses shared storage
        if identity is not None:
            seen[identity] = name
        return {"__tensor__": name}
    if isinstance(value, dict):
        return {"__dict__": [[key, _encode(item, tensors, f"{path}.{key}", seen)] for key, item in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(item, tensors, f"{path}.{i}", seen) for i, item in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(item, tensors, f"{path}.{i}", seen) for i, item in enumerate(value)]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot checkpoint a {type(value).__name__} at {path}")


def _identity(tensor: torch.Tensor) -> tuple | None:
    """Equal for two tensors that are the same values in the same memory (None: a sparse one)."""
    if tensor.is_sparse:
        return None
    return (
        tensor.device,
        tensor.untyped_storage().data_ptr(),
        tensor.storage_offset(),
        tensor.dtype,
        tuple(tensor.shape),
        tuple(tensor.stride()),
    )


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__dict__" in value:
            return {key: _decode(item, tensors) for key, item in value["__dict__"]}
        if "__tuple__" in value:
            return tuple(_decode(item, tensors) for item in value["__tuple__"])
        raise ValueError(f"unknown entry {sorted(value)}")
    if isinstance(value, list):
        return [_decode(item, tensors) for item in value]
    return value


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Agreeing on one checkpoint across the job


class Checkpointer:
    """Saves and finds a training state in a CheckpointStore; a no-op without one.

    What the state holds is the Trainer's (`Trainer.state_dict`); this adds the hyperparameters,
    so that a run with other values ignores the checkpoint. In a job of several processes, every
    process resumes from the same position (the newest that every host has) and one process per
    host writes (they all hold the same state).
    """

    def __init__(self, store: CheckpointStore | None, dist: Any, hyperparameters: dict[str, Any]) -> None:
        self.store = store
        self.dist = dist  # training.distributed.Distributed
        self.hyperparameters = hyperparameters

    @property
    def writes(self) -> bool:
        """Whether this process writes checkpoints (there is a store, and it writes its host's files)."""
        return self.store is not None and self.dist.writes_host_files

    def save(self, state: dict[str, Any], position: Position) -> None:
        if self.store is None or not self.writes:
            return
        self.store.save({"hyperparameters": self.hyperparameters, **state}, position)

    def load(self) -> tuple[Position, dict[str, Any]] | None:
        """The newest usable checkpoint that every process has; None when there is none."""
        loaded = self._newest() if self.store is not None else None
        mine = loaded[0].key if loaded else -1
        agreed = self.dist.agree_min(mine)
        if agreed != mine and loaded is not None:
            loaded = self._at(agreed)
        usable = self.dist.agree_min(int(loaded is not None and loaded[0].key == agreed))
        if agreed < 0 or not usable:
            if mine >= 0 or agreed >= 0:
                logger.warning("Not every host has a checkpoint of the same position: starting from scratch")
            return None
        return loaded

    def _newest(self) -> tuple[Position, dict[str, Any]] | None:
        assert self.store is not None
        for position, path in self.store.positions():
            state = self._usable(path)
            if state is not None:
                return position, state
        return None

    def _at(self, key: int) -> tuple[Position, dict[str, Any]] | None:
        assert self.store is not None
        for position, path in self.store.positions():
            if position.key == key:
                state = self._usable(path)
                return (position, state) if state is not None else None
        return None

    def _usable(self, path: Path) -> dict[str, Any] | None:
        assert self.store is not None
        state = self.store.load(path)
        if state is None:
            return None
        changed = compatible(state["hyperparameters"], self.hyperparameters)
        if changed:
            logger.warning("Ignoring checkpoint %s: it was written with other values of %s", path, ", ".join(changed))
            return None
        return state
