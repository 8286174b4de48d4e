"""Warm start (`init_model=<folder>`): a new job's encoders start from a trained Object2Vec model.

The folder sits at the top of the auxiliary channel and holds what `train` wrote to the model dir
(model_config.json and model.safetensors: the contents of SageMaker's model.tar.gz). It is loaded
the way serving loads a model (config checked against the weights header first, no pickle).

What is copied, tensor by tensor, into the freshly built model:
- each encoder's weights (enc0 from the init model's enc0, enc1 from its enc1). The encoders must
  be built alike (network, layers, filter width, token dimension, pooling, enc_dim): anything else is a
  ClientError naming both, since a silently skipped encoder would train from scratch unnoticed;
- each token embedding table, when its shape matches (the same vocabulary size). Its rows are
  only meaningful when the token ids mean the same words in both jobs (prepare both data sets
  with the same --vocab); with another vocabulary size the table keeps this job's initialisation
  (random, or the pretrained embedding file's rows), and the log says so;
- the comparator MLP and output layer, when every shape matches (the same comparator_list, MLP
  and output): incremental training of the same task. Otherwise (e.g. a model trained on
  unlabelled pairs warm-starting a regression) they start fresh, and the log says so.

This is the seed's unlabelled recipe taken one step further: train encoders on adjacent sentences
without labels, then start a labelled job (STS-B) from them (benchmarks/sts.py --init-model).
A checkpoint to resume from still wins: it holds the whole training state.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from object2vec.config import TRANSFORMER, Hyperparameters
from object2vec.data.pretrained import auxiliary_folder
from object2vec.environment import Channel
from object2vec.errors import ClientError
from object2vec.model.io import LoadedModel, load_model

logger = logging.getLogger(__name__)

# What shapes each network's weights (max_seq_len and vocab_size do not: see the embedding table).
SHAPING_KEYS = {
    "hcnn": ("layers", "cnn_filter_width", "token_embedding_dim"),
    "bilstm": ("layers", "token_embedding_dim"),
    "pooled_embedding": ("token_embedding_dim", "pooling"),
    TRANSFORMER: ("pretrained_model",),
}
TOKEN_TABLE = ".embedding.weight"  # encoders.<i>.embedding.weight: a classic encoder's token table


def read_init_model(hp: Hyperparameters, channel: Channel | None) -> LoadedModel | None:
    """The checked init model (None without init_model); read before the data, to fail fast."""
    if not hp.init_model:
        return None
    folder = auxiliary_folder(channel, "init_model", hp.init_model, "model_config.json, model.safetensors")
    loaded = load_model(folder)
    for index in (0, 1):
        problems = _encoder_differences(hp, loaded.hyperparameters, index)
        if problems:
            raise ClientError(
                f"init_model={hp.init_model}: its enc{index} is not built like this job's ({'; '.join(problems)}); "
                f"set the enc{index}_* hyperparameters and enc_dim as the init model had them, or train without "
                "init_model"
            )
    return loaded


def _encoder_differences(hp: Hyperparameters, init: Hyperparameters, index: int) -> list[str]:
    ours, theirs = hp.encoder(index), init.encoder(index)
    keys = ("network", *SHAPING_KEYS[ours.network]) if ours.network == theirs.network else ("network",)
    problems = [
        f"enc{index}_{key}: {getattr(theirs, key)!r} in the init model, {getattr(ours, key)!r} here"
        for key in keys
        if getattr(ours, key) != getattr(theirs, key)
    ]
    if hp.enc_dim != init.enc_dim:
        problems.append(f"enc_dim: {init.enc_dim} in the init model, {hp.enc_dim} here")
    return problems


@torch.no_grad()
def initialise_from_model(model: nn.Module, hp: Hyperparameters, loaded: LoadedModel) -> None:
    """Copy the init model's tensors into `model` (see the module docstring) and log what was taken."""
    source, target = loaded.model.state_dict(), model.state_dict()

    def fits(name: str) -> bool:
        return name in source and source[name].shape == target[name].shape

    for name in [name for name in target if name.startswith("encoders.")]:
        if fits(name):
            target[name].copy_(source[name])
        elif not name.endswith(TOKEN_TABLE):  # read_init_model checked that the encoders are alike
            raise AssertionError(f"init model lacks {name} {tuple(target[name].shape)} though its encoders match")
    head = [name for name in target if not name.startswith("encoders.")]  # comparator MLP, output layer
    head_fits = all(fits(name) for name in head)
    for name in head if head_fits else []:
        target[name].copy_(source[name])
    for index in (0, 1):
        table = f"encoders.{index}{TOKEN_TABLE}"
        if table not in target:  # a transformer's tables are part of the encoder
            continue
        what = (
            "its token embedding table"
            if fits(table)
            else (
                f"not its token embedding table ({loaded.hyperparameters.encoder(index).vocab_size} rows there, "
                f"{hp.encoder(index).vocab_size} here: this job's own initialisation is kept)"
            )
        )
        logger.info("init_model=%s: enc%d starts from the init model's encoder, %s", hp.init_model, index, what)
    logger.info(
        "init_model=%s: the comparator MLP and output layer %s",
        hp.init_model,
        "start from the init model's" if head_fits else "start fresh (their shapes differ from the init model's)",
    )
