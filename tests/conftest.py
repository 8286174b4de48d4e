"""Shared fixtures. Add new fixtures below; keep each group's names prefixed by its area."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

# ---------------------------------------------------------------------------------------------
# Serving: small saved models (no training), one per output layer. enc0 and enc1 differ in
# network, vocab_size and max_seq_len so tests can tell the encoders apart. The vocab sizes admit
# the ids of the documented request examples (tests/fixtures/requests), enc_dim and num_classes
# match the documented responses (16-dim embeddings, 3 scores).

SERVING_ENC0_VOCAB, SERVING_ENC1_VOCAB = 11000, 4000
SERVING_ENC0_MAX_LEN, SERVING_ENC1_MAX_LEN = 20, 8
SERVING_ENC_DIM, SERVING_NUM_CLASSES = 16, 3


def serving_hyperparameters(output_layer: str) -> dict[str, Any]:
    return {
        "enc0_network": "pooled_embedding",
        "enc0_vocab_size": SERVING_ENC0_VOCAB,
        "enc0_max_seq_len": SERVING_ENC0_MAX_LEN,
        "enc0_token_embedding_dim": 8,
        "enc1_network": "hcnn" if output_layer == "softmax" else "bilstm",
        "enc1_vocab_size": SERVING_ENC1_VOCAB,
        "enc1_max_seq_len": SERVING_ENC1_MAX_LEN,
        "enc1_token_embedding_dim": 6,
        "enc1_layers": 2,
        "enc_dim": SERVING_ENC_DIM,
        "mlp_dim": 8,
        "mlp_layers": 1,
        "output_layer": output_layer,
        "num_classes": SERVING_NUM_CLASSES,
    }


@pytest.fixture(scope="session")
def serving_base_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"softmax": base, "regression": base}: folders laid out like /opt/ml with only model/."""
    import torch

    from object2vec.config import Hyperparameters
    from object2vec.model.io import save_model
    from object2vec.model.object2vec import Object2VecModel

    bases = {}
    for seed, output_layer in enumerate(("softmax", "mean_squared_error")):
        torch.manual_seed(seed)
        model = Object2VecModel(Hyperparameters.from_dict(serving_hyperparameters(output_layer)))
        name = "softmax" if output_layer == "softmax" else "regression"
        base = tmp_path_factory.mktemp(f"opt_ml_{name}")
        save_model(model, base / "model")
        bases[name] = base
    return bases


# ---------------------------------------------------------------------------------------------
# Retrieval: small saved models (no training) to build indexes for, and catalogues for them.
# Queries are "in0" (a user: up to 4 ids of 60), candidates "in1" (an item: two ids of 5000).

RETRIEVAL_QUERY_VOCAB, RETRIEVAL_ITEM_VOCAB = 60, 5000


def retrieval_hyperparameters(**overrides: Any) -> dict[str, Any]:
    return {
        "enc0_network": "pooled_embedding",
        "enc1_network": "pooled_embedding",
        "enc0_vocab_size": RETRIEVAL_QUERY_VOCAB,
        "enc1_vocab_size": RETRIEVAL_ITEM_VOCAB,
        "enc0_max_seq_len": 4,
        "enc1_max_seq_len": 3,
        "enc0_token_embedding_dim": 8,
        "enc1_token_embedding_dim": 8,
        "enc_dim": 8,
        "mlp_dim": 8,
        **overrides,
    }


def _catalogue(count: int, start: int = 0) -> list[dict[str, Any]]:
    vocab = RETRIEVAL_ITEM_VOCAB
    return [{"id": f"c{i}", "in1": [i % vocab, (7 * i + 3) % vocab]} for i in range(start, start + count)]


def _queries(count: int, seed: int = 0) -> list[dict[str, Any]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [{"in0": rng.integers(0, RETRIEVAL_QUERY_VOCAB, int(rng.integers(1, 5))).tolist()} for _ in range(count)]


@pytest.fixture
def retrieval_catalogue() -> Any:
    """make(count, start=0) -> candidates {"id": "c<i>", "in1": [i, 7i + 3] (mod the vocabulary)}: distinct."""
    return _catalogue


@pytest.fixture
def retrieval_queries() -> Any:
    """make(count, seed=0) -> query instances {"in0": [1 to 4 ids]}."""
    return _queries


@pytest.fixture
def retrieval_model_dir(tmp_path: Path) -> Any:
    """make(seed=0, **hyperparameters) -> a model dir holding a freshly initialised, saved model."""
    import torch

    from object2vec.config import Hyperparameters
    from object2vec.model.io import save_model
    from object2vec.model.object2vec import Object2VecModel

    made = []

    def make(seed: int = 0, **overrides: Any) -> Path:
        torch.manual_seed(seed)
        model = Object2VecModel(Hyperparameters.from_dict(retrieval_hyperparameters(**overrides)))
        path = tmp_path / f"model{len(made)}"
        save_model(model, path)
        made.append(path)
        return path

    return make
