"""Pretrained transformer checkpoints in the auxiliary channel (`encX_pretrained_model=<folder>`).

The folder sits at the top of the channel and holds a Hugging Face BERT checkpoint: config.json
and model.safetensors, plus sentence-transformers' modules.json and pooling config when it came
from there (model/transformer.py reads them). Training reads it twice: once before the data, to
fail fast on a missing or bad checkpoint (config and weights header only, nothing allocated), and
once to copy the weights into the freshly built model.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from object2vec.config import Hyperparameters
from object2vec.data.vocab import AUXILIARY, LISTED_FILES
from object2vec.environment import Channel
from object2vec.errors import ClientError
from object2vec.model.transformer import (
    PretrainedTransformer,
    TransformerCheckpoint,
    TransformerSpec,
    check_encoder_fits,
    read_checkpoint,
)

logger = logging.getLogger(__name__)


def read_transformer_checkpoints(hp: Hyperparameters, channel: Channel | None) -> dict[int, TransformerCheckpoint]:
    """The checked checkpoint of each transformer encoder, by encoder index (a folder named by both
    encoders is read once)."""
    found: dict[str, TransformerCheckpoint] = {}
    checkpoints: dict[int, TransformerCheckpoint] = {}
    for index in (0, 1):
        enc = hp.encoder(index)
        if not enc.is_transformer:
            continue
        key = f"enc{index}_pretrained_model"
        name = f"{key}={enc.pretrained_model}"
        if enc.pretrained_model not in found:
            found[enc.pretrained_model] = read_checkpoint(
                auxiliary_folder(channel, key, enc.pretrained_model, "config.json, model.safetensors"), name
            )
        checkpoint = found[enc.pretrained_model]
        check_encoder_fits(enc, checkpoint.spec, f"enc{index}_", f"checkpoint {enc.pretrained_model}")
        checkpoints[index] = checkpoint
    return checkpoints


def transformer_specs(checkpoints: dict[int, TransformerCheckpoint]) -> dict[int, TransformerSpec]:
    return {index: checkpoint.spec for index, checkpoint in checkpoints.items()}


def initialise_transformers(
    model: nn.Module, hp: Hyperparameters, checkpoints: dict[int, TransformerCheckpoint]
) -> None:
    """Copy each checkpoint's weights into its encoder's transformer and log what was built."""
    loaded: set[int] = set()
    for index, checkpoint in checkpoints.items():
        enc = hp.encoder(index)
        encoder = model.encoders[index]  # type: ignore[index]
        transformer: PretrainedTransformer = encoder.transformer
        if id(transformer) in loaded:  # siamese: enc1 is enc0
            logger.info("enc%d: the same encoder as enc0 (tied_token_embedding_weight=true: siamese)", index)
            continue
        transformer.load_checkpoint(checkpoint, f"enc{index}_pretrained_model={enc.pretrained_model}")
        loaded.add(id(transformer))
        spec = checkpoint.spec
        projection = (
            "no projection (enc_dim = hidden size)"
            if spec.hidden_size == hp.enc_dim
            else f"projected {spec.hidden_size} -> enc_dim {hp.enc_dim}"
        )
        if transformer.frozen_all:
            frozen = "all frozen (a fixed feature extractor)"
        elif transformer.frozen_layers:
            frozen = f"embeddings and the lowest {transformer.frozen_layers} of {spec.layers} layers frozen"
        else:
            frozen = "all trainable"
        logger.info(
            "enc%d: transformer from checkpoint %s (%s), %s; %s; %d parameters, learning rate x%g%s",
            index,
            enc.pretrained_model,
            spec.describe(),
            projection,
            frozen,
            spec.parameters,
            hp.transformer_learning_rate_multiplier,
            f" after {hp.transformer_warmup_steps} warm-up steps" if hp.transformer_warmup_steps else "",
        )


def auxiliary_folder(channel: Channel | None, key: str, name: str, contents: str) -> Path:
    """The folder named by hyperparameter `key`, checked to be a folder at the top of the auxiliary
    channel; `contents` (what it should hold) goes into the error when the channel is missing."""
    if channel is None:
        raise ClientError(
            f"{key}={name} names a checkpoint folder in the auxiliary channel, but the job has no channel named "
            f"{AUXILIARY}: add one holding the folder {name}/ ({contents})"
        )
    path = channel.path / name
    if not path.is_dir():
        present = sorted(p.name for p in channel.path.iterdir()) if channel.path.is_dir() else []
        listing = ", ".join(present[:LISTED_FILES]) + (", ..." if len(present) > LISTED_FILES else "")
        what = "is a file, not a folder" if path.exists() else "no such folder at the top of the auxiliary channel"
        raise ClientError(f"{key}={name}: {what} ({channel.path}); it holds: {listing or 'nothing'}")
    return path
