"""Hyperparameters: one frozen, typed config, parsed and validated in a single pass.

SageMaker hands hyperparameters over as strings, but which strings depends on the client: the
SDK's generic Estimator sends ``str(value)`` ("True", "[1, 2]"), framework estimators send
``json.dumps(value)`` ("true", "\\"abc\\""), and sagemaker-training's Environment has already
``json.loads``-ed whatever it could. Every parser below therefore accepts the Python value as well
as each string spelling of it.

Every problem found is collected and reported in one ClientError, so a user fixes them all in
one run instead of one per run.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from object2vec.errors import ClientError

logger = logging.getLogger(__name__)

# "transformer" is an extension beyond the original algorithm's list: a pretrained BERT-family
# checkpoint from the auxiliary channel (model/transformer.py).
TRANSFORMER = "transformer"
NETWORKS = ("hcnn", "bilstm", "pooled_embedding", TRANSFORMER)
ENC1_NETWORKS = ("enc0", *NETWORKS)
OPTIMIZERS = ("adadelta", "adagrad", "adam", "sgd", "rmsprop")
SPARSE_OPTIMIZERS = ("adam", "adagrad", "sgd")
COMPARATORS = ("hadamard", "concat", "abs_diff")  # the original's, and the default list
# An extension: the cosine of the two encodings, one value (model/comparator.py).
ALLOWED_COMPARATORS = (*COMPARATORS, "cosine")
# How many enc_dim-wide sub-vectors each operator contributes; cosine adds one value.
COMPARATOR_WIDTHS = {"hadamard": 1, "concat": 2, "abs_diff": 1}
COMPARATOR_SCALARS = {"cosine": 1}


def comparator_width(operator: str, enc_dim: int) -> int:
    """The comparator output values one operator contributes."""
    return COMPARATOR_SCALARS[operator] if operator in COMPARATOR_SCALARS else COMPARATOR_WIDTHS[operator] * enc_dim


MLP_ACTIVATIONS = ("tanh", "relu", "linear")
OUTPUT_LAYERS = ("softmax", "mean_squared_error")
STORAGE_TYPES = ("dense", "row_sparse")
RETRIEVAL_INDEXES = ("auto", "exact", "ivf")
MAX_TOP_N = 10_000  # re-rank depth bound: each hit costs one comparator + MLP row per query
# "auto" layers, as the documentation defines them: hcnn 4, bilstm 1 (pooled_embedding has none).
AUTO_LAYERS = {"hcnn": 4, "bilstm": 1, "pooled_embedding": 1, TRANSFORMER: 1}
# encX_freeze_layers=all: the whole transformer (embeddings and every layer) stays fixed.
FREEZE_ALL = -1
MAX_FREEZE_LAYERS = 64
# File names in the auxiliary channel: the documented character set, so no path can escape it.
AUX_FILE_NAME = re.compile(r"[A-Za-z0-9._]*")
# Checkpoint folder names (encX_pretrained_model) may also use '-', as Hugging Face model names do.
AUX_FOLDER_NAME = re.compile(r"[A-Za-z0-9._-]+")
OBJECTIVE_METRICS = {
    "softmax": (
        "validation:accuracy",
        "validation:cross_entropy",
        "test:accuracy",
        "test:cross_entropy",
    ),
    "mean_squared_error": ("validation:mean_squared_error", "test:mean_squared_error"),
}
# Keys SageMaker or the SDK may add that mean nothing to this algorithm: accepted and ignored.
IGNORED_KEYS = ("_log_level", "_enable_profiler", "feature_dim")

ENCODER_FIELDS = (
    "network",
    "max_seq_len",
    "vocab_size",
    "token_embedding_dim",
    "layers",
    "cnn_filter_width",
    "pretrained_embedding_file",
    "vocab_file",
    "freeze_pretrained_embedding",
    "pretrained_model",
    "freeze_layers",
    "pooling",
)
POOLINGS = ("mean", "attention", "sqrt_n")  # encX_pooling (an extension): how pooled_embedding pools its tokens


@dataclass(frozen=True)
class EncoderConfig:
    """Settings of one encoder (enc0 or enc1), fully resolved."""

    network: str  # "hcnn" | "bilstm" | "pooled_embedding" | "transformer"
    max_seq_len: int  # longer sequences are truncated to their first max_seq_len tokens
    vocab_size: int  # token ids must lie in [0, vocab_size)
    token_embedding_dim: int = 300
    layers: int = 4  # "auto" resolved: hcnn 4, bilstm 1, pooled_embedding 1 (unused)
    cnn_filter_width: int = 3  # hcnn only
    pretrained_embedding_file: str = ""  # file name in the auxiliary channel ("" = none)
    vocab_file: str = ""  # token -> id JSON map in the auxiliary channel
    freeze_pretrained_embedding: bool = True  # keep rows from the pretrained file fixed
    pretrained_model: str = ""  # transformer only: checkpoint folder in the auxiliary channel
    freeze_layers: int = 0  # transformer only: embeddings + lowest N layers fixed; FREEZE_ALL: all
    # pooled_embedding only (an extension): "mean" (the original), "attention", a learnt weighted
    # mean (model/encoders.py AttentionPool, the pool hcnn and bilstm use), or "sqrt_n", the sum over
    # sqrt(length) (SVD++'s scale for a set of items)
    pooling: str = "mean"

    @property
    def is_transformer(self) -> bool:
        return self.network == TRANSFORMER


@dataclass(frozen=True)
class Hyperparameters:
    """Every Object2Vec hyperparameter, typed, range-checked and resolved."""

    enc0: EncoderConfig
    enc1: EncoderConfig
    enc1_network: str = "enc0"  # as given: "enc0" means enc1 copied enc0's settings
    enc_dim: int = 4096  # output size of both encoders
    mlp_dim: int = 512
    mlp_layers: int = 2  # 0: the comparator output feeds the output layer directly
    mlp_activation: str = "linear"
    output_layer: str = "softmax"  # softmax: classification; mean_squared_error: regression
    num_classes: int = 2  # softmax only
    optimizer: str = "adam"
    learning_rate: float = 0.0004
    weight_decay: float = 0.0
    mini_batch_size: int = 32
    epochs: int = 30
    early_stopping_patience: int = 3
    early_stopping_tolerance: float = 0.01
    # An extension: each epoch whose monitored loss does not improve by early_stopping_tolerance
    # multiplies every learning rate by this (a decay on plateau); 1.0 (the default): constant.
    learning_rate_plateau_factor: float = 1.0
    # An extension: evaluate, keep and save an exponential moving average of the weights, updated
    # after every optimizer step (ema = decay x ema + (1 - decay) x weights); 0.0 (the default): off.
    ema_decay: float = 0.0
    dropout: float = 0.0
    comparator_list: tuple[str, ...] = COMPARATORS  # order sets the sub-vector order
    tied_token_embedding_weight: bool = False  # two transformers: one shared encoder (siamese)
    # An extension: one encoder (network, weights and token table) for both sides: a siamese model,
    # for pairs of the same kind of object (two sentences), whose enc0 embeddings are then compared
    # with each other as they were trained to be. Needs enc1's settings equal to enc0's.
    tied_encoders: bool = False
    # The pretrained transformer's parameters learn at learning_rate x this (0.1: 4e-5 with the
    # default 0.0004, a usual fine-tuning rate), ramped up linearly over the first warm-up steps.
    transformer_learning_rate_multiplier: float = 0.1
    transformer_warmup_steps: int = 0  # optimizer steps; 0: no warm-up
    # An extension: a trained model's folder in the auxiliary channel to start from (data/init_model.py).
    init_model: str = ""
    bucket_width: int = 0  # 0: no bucketing
    negative_sampling_rate: int = 0  # 0: off
    # An extension: a record and its negatives in one batch, its in0 encoded once for all of them.
    negative_sampling_grouped: bool = False
    # An extension: positive pairs only, each ranked against the other pairs' in1 of its mini-batch
    # (training/in_batch.py).
    in_batch_negatives: bool = False
    token_embedding_storage_type: str = "dense"
    kvstore: str = "device"  # _kvstore: accepted for compatibility (an MXNet knob)
    num_gpus: int | None = None  # _num_gpus: None means "auto" (all visible GPUs)
    num_kv_servers: int | None = None  # _num_kv_servers: accepted, unused
    tuning_objective_metric: str = ""  # _tuning_objective_metric: set by tuning jobs
    seed: int = 0  # _seed: makes a run reproducible
    # Nearest-neighbour retrieval over the candidates channel (object2vec.retrieval).
    retrieval_index: str = "auto"  # auto: exact up to retrieval_exact_max candidates, ivf above; or exact / ivf
    retrieval_exact_max: int = 50_000  # catalogue size up to which "auto" searches every candidate
    retrieval_ivf_nlist: int | None = None  # IVF cells; None ("auto"): about 4 * sqrt(candidates)
    retrieval_ivf_nprobe: int | None = None  # cells searched per query; None ("auto"): a tenth of nlist
    retrieval_top_n: int = 100  # re-rank depth: this many hits are re-scored with the full pair model
    retrieval_score_class: int | None = None  # softmax class whose probability ranks; None ("auto"): the last

    @property
    def is_classification(self) -> bool:
        return self.output_layer == "softmax"

    @property
    def output_dim(self) -> int:
        return self.num_classes if self.is_classification else 1

    @property
    def scores_by_cosine(self) -> bool:
        """The score is affine in the two encodings' cosine (comparator_list=cosine, mlp_layers=0):
        every pair of a batch is then scored by one matrix product (in-batch negatives)."""
        return self.comparator_list == ("cosine",) and self.mlp_layers == 0

    def encoder(self, index: int) -> EncoderConfig:
        return self.enc0 if index == 0 else self.enc1

    def to_dict(self) -> dict[str, Any]:
        """Resolved values under their public names; `from_dict` of it rebuilds an equal config.

        enc1_network is written as the network enc1 really has, so reloading does not copy again.
        """
        out: dict[str, Any] = {}
        for index, enc in ((0, self.enc0), (1, self.enc1)):
            for name in ENCODER_FIELDS:
                value = getattr(enc, name)
                out[f"enc{index}_{name}"] = "all" if name == "freeze_layers" and value == FREEZE_ALL else value
        for field in dataclasses.fields(self):
            if field.name in ("enc0", "enc1", "enc1_network"):
                continue
            value = getattr(self, field.name)
            key = field.name if field.name in _PUBLIC_KEYS else f"_{field.name}"
            if field.name == "comparator_list":
                value = ",".join(value)
            elif field.name in _AUTO_FIELDS and value is None:
                value = "auto"
            out[key] = value
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Hyperparameters:
        """Parse hyperparameters as SageMaker delivers them; raise one ClientError listing all problems."""
        return _Parser(raw).parse()


# ---------------------------------------------------------------------------------------------
# Value parsers. Each takes the raw value and returns the typed value or raises ValueError with
# the text that follows "<name>=<value> " in the user's message.


def _unquote(value: Any) -> Any:
    """Undo one level of JSON encoding of a string ("\\"abc\\"" -> "abc", "5" stays "5")."""
    if isinstance(value, str):
        text = value.strip()
        if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
            try:
                return json.loads(text)
            except ValueError:
                return text
        return text
    return value


def _as_int(value: Any) -> int:
    value = _unquote(value)
    if isinstance(value, bool):
        raise ValueError("must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if number.is_integer():
                return int(number)
    raise ValueError("must be an integer")


def _as_float(value: Any) -> float:
    value = _unquote(value)
    if isinstance(value, bool):
        raise ValueError("must be a number")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise ValueError("must be a number") from None
    else:
        raise ValueError("must be a number")
    if not math.isfinite(number):
        raise ValueError("must be a finite number")
    return number


def _as_bool(value: Any) -> bool:
    value = _unquote(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError("must be true or false")


def _as_str(value: Any) -> str:
    value = _unquote(value)
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _int_in(lo: int, hi: int | None) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        number = _as_int(value)
        if number < lo or (hi is not None and number > hi):
            bound = f"{lo} <= x <= {hi}" if hi is not None else f"x >= {lo}"
            raise ValueError(f"is out of range: must be an integer {bound}")
        return number

    return parse


def _float_in(lo: float, hi: float) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        number = _as_float(value)
        if not lo <= number <= hi:
            raise ValueError(f"is out of range: must be a number {lo:g} <= x <= {hi:g}")
        return number

    return parse


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _unquote(value)
        text = text.strip().lower() if isinstance(text, str) else text
        if text not in choices:
            raise ValueError(f"is not valid: allowed values are {', '.join(choices)}")
        return text

    return parse


def _auto_or_int(lo: int, hi: int | None) -> Callable[[Any], int | None]:
    """None stands for "auto"."""
    parse_int = _int_in(lo, hi)

    def parse(value: Any) -> int | None:
        text = _unquote(value)
        if isinstance(text, str) and text.strip().lower() == "auto":
            return None
        try:
            return parse_int(text)
        except ValueError as err:
            raise ValueError(f"{err} or auto") from None

    return parse


def _aux_file_name(value: Any) -> str:
    name = _as_str(value)
    if not AUX_FILE_NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(
            "is not a plain file name: use only letters, digits, '.' and '_' "
            "(the file must sit at the top of the auxiliary channel)"
        )
    return name


def _aux_folder_name(value: Any) -> str:
    name = _as_str(value)
    if name and (not AUX_FOLDER_NAME.fullmatch(name) or name in (".", "..")):
        raise ValueError(
            "is not a plain folder name: use only letters, digits, '.', '_' and '-' "
            "(the folder must sit at the top of the auxiliary channel)"
        )
    return name


def _freeze_layers(value: Any) -> int:
    text = _unquote(value)
    if isinstance(text, str) and text.strip().lower() == "all":
        return FREEZE_ALL
    try:
        return _int_in(0, MAX_FREEZE_LAYERS)(text)
    except ValueError as err:
        raise ValueError(f"{err} or all") from None


def _encoder_differences(hp: Hyperparameters, names: list[str]) -> list[str]:
    """'name (enc0 X, enc1 Y)' for each of `names` whose value differs between the encoders."""
    return [
        f"{name} (enc0 {getattr(hp.enc0, name)}, enc1 {getattr(hp.enc1, name)})"
        for name in names
        if getattr(hp.enc0, name) != getattr(hp.enc1, name)
    ]


def _comparators(value: Any) -> tuple[str, ...]:
    value = _unquote(value)
    if isinstance(value, str):
        items = [item.strip().lower() for item in value.split(",")]
    elif isinstance(value, list | tuple):
        items = [str(item).strip().lower() for item in value]
    else:
        raise ValueError("must be a comma-separated list")
    items = [item for item in items if item]
    if not items:
        raise ValueError(f"is empty: list one or more of {', '.join(ALLOWED_COMPARATORS)}")
    bad = [item for item in items if item not in ALLOWED_COMPARATORS]
    if bad:
        raise ValueError(
            f"has unknown comparator(s) {', '.join(bad)}: allowed values are {', '.join(ALLOWED_COMPARATORS)}"
        )
    if len(set(items)) != len(items):
        raise ValueError("lists a comparator twice")
    return tuple(items)


MAX_SEQ_LEN_LIMIT = 5000  # the largest encX_max_seq_len (and infer_max_seqlens value) accepted
MAX_VOCAB_SIZE = 3_000_000  # the largest encX_vocab_size accepted
MAX_NUM_CLASSES = 30  # num_classes lies in 2..30
MAX_EMA_DECAY = 0.9999  # ema_decay: an average over about 1 / (1 - decay) = 10,000 steps at most
# in_batch_negatives through a comparator + MLP: the most pair activations a step may hold (1 GiB of float32)
IN_BATCH_ACTIVATIONS = 2**28

# name -> (parser, default). Encoder keys are listed once with the "encX_" prefix stripped.
_ENCODER_SPECS: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "max_seq_len": (_int_in(1, MAX_SEQ_LEN_LIMIT), None),
    "vocab_size": (_int_in(2, MAX_VOCAB_SIZE), None),
    "cnn_filter_width": (_int_in(1, 9), 3),
    "layers": (_auto_or_int(1, 4), None),
    "token_embedding_dim": (_int_in(2, 1000), 300),
    "pretrained_embedding_file": (_aux_file_name, ""),
    "vocab_file": (_aux_file_name, ""),
    "freeze_pretrained_embedding": (_as_bool, True),
    "pretrained_model": (_aux_folder_name, ""),
    "freeze_layers": (_freeze_layers, 0),
    "pooling": (_one_of(POOLINGS), "mean"),
}
_SPECS: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "enc_dim": (_int_in(4, 10000), 4096),
    "mlp_dim": (_int_in(2, 10000), 512),
    "mlp_layers": (_int_in(0, 10), 2),
    "mlp_activation": (_one_of(MLP_ACTIVATIONS), "linear"),
    "output_layer": (_one_of(OUTPUT_LAYERS), "softmax"),
    "num_classes": (_int_in(2, MAX_NUM_CLASSES), 2),
    "optimizer": (_one_of(OPTIMIZERS), "adam"),
    "learning_rate": (_float_in(1e-6, 1.0), 0.0004),
    "weight_decay": (_float_in(0.0, 10000.0), 0.0),
    "mini_batch_size": (_int_in(1, 10000), 32),
    "epochs": (_int_in(1, 100), 30),
    "early_stopping_patience": (_int_in(1, 5), 3),
    "early_stopping_tolerance": (_float_in(1e-6, 0.1), 0.01),
    "learning_rate_plateau_factor": (_float_in(0.01, 1.0), 1.0),
    "ema_decay": (_float_in(0.0, MAX_EMA_DECAY), 0.0),
    "dropout": (_float_in(0.0, 1.0), 0.0),
    "comparator_list": (_comparators, COMPARATORS),
    "tied_token_embedding_weight": (_as_bool, False),
    "tied_encoders": (_as_bool, False),
    "transformer_learning_rate_multiplier": (_float_in(0.0, 100.0), 0.1),
    "transformer_warmup_steps": (_int_in(0, 1_000_000), 0),
    "init_model": (_aux_folder_name, ""),
    "bucket_width": (_int_in(0, 100), 0),
    "negative_sampling_rate": (_int_in(0, 100), 0),
    "negative_sampling_grouped": (_as_bool, False),
    "in_batch_negatives": (_as_bool, False),
    "token_embedding_storage_type": (_one_of(STORAGE_TYPES), "dense"),
    "_kvstore": (_as_str, "device"),
    "_num_gpus": (_auto_or_int(0, 1024), None),
    "_num_kv_servers": (_auto_or_int(0, 1024), None),
    "_tuning_objective_metric": (_as_str, ""),
    "_seed": (_int_in(0, 2**31 - 1), 0),
    "retrieval_index": (_one_of(RETRIEVAL_INDEXES), "auto"),
    "retrieval_exact_max": (_int_in(0, 100_000_000), 50_000),
    "retrieval_ivf_nlist": (_auto_or_int(1, 1_000_000), None),
    "retrieval_ivf_nprobe": (_auto_or_int(1, 1_000_000), None),
    "retrieval_top_n": (_int_in(1, MAX_TOP_N), 100),
    "retrieval_score_class": (_auto_or_int(0, MAX_NUM_CLASSES - 1), None),
}
_PUBLIC_KEYS = {name for name in _SPECS if not name.startswith("_")}
# Fields whose None stands for "auto" (written as "auto" by to_dict).
_AUTO_FIELDS = ("num_gpus", "num_kv_servers", "retrieval_ivf_nlist", "retrieval_ivf_nprobe", "retrieval_score_class")


def default_value(key: str) -> Any:
    """The default of a hyperparameter as `Hyperparameters.to_dict` writes it; None when it has none
    (a required key, an unknown one, or one resolved from others, such as encX_layers)."""
    spec = _SPECS.get(key)
    if spec is None and key[:5] in ("enc0_", "enc1_"):
        spec = _ENCODER_SPECS.get(key[5:])
    if spec is None:
        return None
    value = spec[1]
    if key == "comparator_list":
        return ",".join(value)
    if value is None and key.lstrip("_") in _AUTO_FIELDS:
        return "auto"
    return value


def valid_keys() -> list[str]:
    """Every hyperparameter name this algorithm accepts."""
    keys = [f"enc{i}_{name}" for i in (0, 1) for name in (*_ENCODER_SPECS, "network")]
    return sorted([*keys, *_SPECS, *IGNORED_KEYS])


class _Parser:
    """Parses a raw mapping, collecting every problem instead of stopping at the first."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = dict(raw)
        self.problems: list[str] = []

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def value(self, key: str, parser: Callable[[Any], Any], default: Any) -> Any:
        if key not in self.raw:
            return default
        raw = self.raw[key]
        try:
            return parser(raw)
        except ValueError as err:
            self.problem(f"{key}={_show(raw)} {err}")
            return default

    def required(self, key: str, parser: Callable[[Any], Any], why: str) -> Any:
        if key not in self.raw:
            self.problem(f"{key} is required{why}")
            return None
        return self.value(key, parser, None)

    def parse(self) -> Hyperparameters:
        self.check_unknown_keys()
        enc0_network = self.value("enc0_network", _one_of(NETWORKS), "hcnn")
        enc1_network = self.value("enc1_network", _one_of(ENC1_NETWORKS), "enc0")
        enc0 = self.encoder(0, enc0_network, "")
        if enc1_network == "enc0":
            enc1 = enc0
            overridden = sorted(k for k in self.raw if k.startswith("enc1_") and k != "enc1_network")
            if overridden:
                logger.warning(
                    "enc1_network=enc0 copies every enc0 setting, so %s %s ignored; set "
                    "enc1_network to hcnn, bilstm, pooled_embedding or transformer to give enc1 its own settings",
                    ", ".join(overridden),
                    "is" if len(overridden) == 1 else "are",
                )
        else:
            enc1 = self.encoder(1, enc1_network, f" because enc1_network={enc1_network}")
        values = {key.lstrip("_"): self.value(key, *spec) for key, spec in _SPECS.items()}
        for key in IGNORED_KEYS:
            if key in self.raw:
                logger.info("Ignoring hyperparameter %s (not used by Object2Vec)", key)
        if enc0 is None or enc1 is None:
            raise ClientError(self.message())
        hp = Hyperparameters(enc0=enc0, enc1=enc1, enc1_network=enc1_network, **values)
        hp = self.check_combinations(hp)
        if self.problems:
            raise ClientError(self.message())
        return hp

    def check_unknown_keys(self) -> None:
        known = valid_keys()
        for key in self.raw:
            if key in known:
                continue
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            self.problem(f"unknown hyperparameter {key}{hint}")

    def encoder(self, index: int, network: str, why: str) -> EncoderConfig | None:
        prefix = f"enc{index}_"
        values: dict[str, Any] = {}
        for name, (parser, default) in _ENCODER_SPECS.items():
            key = prefix + name
            if name in ("max_seq_len", "vocab_size"):
                values[name] = self.required(key, parser, why)
            else:
                values[name] = self.value(key, parser, default)
        if values["layers"] is None:
            values["layers"] = AUTO_LAYERS[network]
        self.check_transformer_settings(prefix, network, values)
        if values["pooling"] != "mean" and network != "pooled_embedding":
            self.problem(
                f"{prefix}pooling={values['pooling']} applies to {prefix}network=pooled_embedding only: hcnn "
                "and bilstm always pool with attention, a transformer as its checkpoint says"
            )
        if values["pretrained_embedding_file"] and not values["vocab_file"]:
            self.problem(
                f"{prefix}pretrained_embedding_file needs {prefix}vocab_file: the vocab file maps "
                "the tokens of the embedding file to the ids used in the data"
            )
        if values["max_seq_len"] is None or values["vocab_size"] is None:
            return None
        return EncoderConfig(network=network, **values)

    def check_transformer_settings(self, prefix: str, network: str, values: dict[str, Any]) -> None:
        if network != TRANSFORMER:
            for name in ("pretrained_model", "freeze_layers"):
                if values[name] != _ENCODER_SPECS[name][1]:  # to_dict writes the defaults of every encoder
                    self.problem(f"{prefix}{name} applies to {prefix}network=transformer only, not {network}")
            return
        if not values["pretrained_model"]:
            self.problem(
                f"{prefix}network=transformer needs {prefix}pretrained_model: the name of the checkpoint folder "
                "(config.json + model.safetensors) at the top of the auxiliary channel"
            )
        for name in ("pretrained_embedding_file", "vocab_file"):
            if values[name]:
                self.problem(
                    f"{prefix}{name} does not apply to {prefix}network=transformer: the transformer's token "
                    f"embeddings come from its checkpoint ({prefix}pretrained_model)"
                )

    def check_transformers(self, hp: Hyperparameters) -> None:
        transformers = [index for index in (0, 1) if hp.encoder(index).is_transformer]
        if not transformers:
            for key in ("transformer_learning_rate_multiplier", "transformer_warmup_steps"):
                if getattr(hp, key) != _SPECS[key][1]:
                    logger.warning("%s is ignored: no encoder is a transformer", key)
            return
        if hp.token_embedding_storage_type == "row_sparse":
            self.problem(
                "token_embedding_storage_type=row_sparse does not apply to a transformer encoder (its embeddings "
                "feed every position's attention): use dense"
            )
        if hp.tied_token_embedding_weight and (
            len(transformers) == 1 or hp.enc0.pretrained_model != hp.enc1.pretrained_model
        ):
            networks = ", ".join(f"enc{i} {_describe_network(hp.encoder(i))}" for i in (0, 1))
            self.problem(
                "tied_token_embedding_weight=true with a transformer shares the whole encoder (siamese), so both "
                f"encoders must be transformers of the same pretrained_model, but they are: {networks}"
            )

    def check_combinations(self, hp: Hyperparameters) -> Hyperparameters:
        self.check_transformers(hp)
        if hp.tied_encoders:
            # max_seq_len may differ: each side's sequences are truncated when read, before the encoder.
            differ = _encoder_differences(hp, [name for name in ENCODER_FIELDS if name != "max_seq_len"])
            if differ:
                self.problem(
                    "tied_encoders=true makes one encoder of enc0 and enc1, so they need equal settings "
                    f"(enc1_network=enc0 copies them), but these differ: {'; '.join(differ)}"
                )
        elif hp.tied_token_embedding_weight:
            differ = _encoder_differences(hp, ["vocab_size", "token_embedding_dim"])
            if differ:
                self.problem(
                    "tied_token_embedding_weight=true shares one token embedding between the "
                    f"encoders, so they need equal settings, but these differ: {'; '.join(differ)}"
                )
        if hp.token_embedding_storage_type == "row_sparse":
            if hp.ema_decay:
                self.problem(
                    f"ema_decay={hp.ema_decay:g} averages every weight after every step, which row_sparse exists "
                    "to avoid for large token tables: use ema_decay=0 with row_sparse, or dense storage"
                )
            if hp.optimizer not in SPARSE_OPTIMIZERS:
                self.problem(
                    f"token_embedding_storage_type=row_sparse needs an optimizer with sparse "
                    f"gradients: use one of {', '.join(SPARSE_OPTIMIZERS)}, not {hp.optimizer}"
                )
            if hp.bucket_width:
                logger.warning(
                    "token_embedding_storage_type=row_sparse switches bucketing off "
                    "(bucket_width=%d ignored), as the SageMaker algorithm does",
                    hp.bucket_width,
                )
                hp = dataclasses.replace(hp, bucket_width=0)
        if hp.negative_sampling_grouped and not hp.negative_sampling_rate:
            logger.warning("negative_sampling_grouped=true has no effect without negative_sampling_rate: ignored")
        elif hp.negative_sampling_grouped and hp.bucket_width:
            logger.warning(
                "negative_sampling_grouped=true keeps each record beside its negatives, so batches are not "
                "bucketed by length (bucket_width=%d ignored)",
                hp.bucket_width,
            )
        self.check_in_batch_negatives(hp)
        self.check_retrieval(hp)
        metric = hp.tuning_objective_metric
        if metric and metric not in OBJECTIVE_METRICS[hp.output_layer]:
            self.problem(
                f"_tuning_objective_metric={metric} is not emitted with output_layer="
                f"{hp.output_layer}: use one of {', '.join(OBJECTIVE_METRICS[hp.output_layer])}"
            )
        return hp

    def check_in_batch_negatives(self, hp: Hyperparameters) -> None:
        if not hp.in_batch_negatives:
            return
        if not hp.is_classification or hp.num_classes != 2:
            self.problem(
                "in_batch_negatives=true ranks pairs by their score for class 1 against class 0, so it needs "
                f"output_layer=softmax and num_classes=2, not output_layer={hp.output_layer}"
                + (f" with num_classes={hp.num_classes}" if hp.is_classification else "")
            )
        if hp.negative_sampling_rate:
            self.problem(
                f"in_batch_negatives=true takes its negatives from the mini-batch, so negative_sampling_rate="
                f"{hp.negative_sampling_rate} must be 0: use one or the other"
            )
        if hp.scores_by_cosine:
            return  # one (B, B) matrix product
        # Any other comparator scores B x B pairs through the MLP, whose activations the backward keeps.
        width = sum(comparator_width(op, hp.enc_dim) for op in hp.comparator_list) + hp.mlp_layers * hp.mlp_dim
        largest = math.isqrt(IN_BATCH_ACTIVATIONS // width)
        if hp.mini_batch_size > largest:
            self.problem(
                f"in_batch_negatives=true with comparator_list={','.join(hp.comparator_list)} and mlp_layers="
                f"{hp.mlp_layers} scores mini_batch_size^2 pairs through the MLP ({width} activations each), so "
                f"mini_batch_size={hp.mini_batch_size} is too large: use at most {largest}, or comparator_list="
                "cosine with mlp_layers=0 (one matrix product, any batch size)"
            )

    def check_retrieval(self, hp: Hyperparameters) -> None:
        nlist, nprobe = hp.retrieval_ivf_nlist, hp.retrieval_ivf_nprobe
        if nlist is not None and nprobe is not None and nprobe > nlist:
            self.problem(
                f"retrieval_ivf_nprobe={nprobe} is larger than retrieval_ivf_nlist={nlist}: a query can search "
                "at most every cell; lower nprobe or leave it auto"
            )
        score_class = hp.retrieval_score_class
        if score_class is not None:
            if not hp.is_classification:
                self.problem(
                    f"retrieval_score_class={score_class} applies to output_layer=softmax only: a regression "
                    "model ranks candidates by its prediction; remove it"
                )
            elif score_class >= hp.num_classes:
                self.problem(
                    f"retrieval_score_class={score_class} is not a class of this model: use 0..{hp.num_classes - 1} "
                    f"(num_classes={hp.num_classes}) or auto"
                )

    def message(self) -> str:
        count = len(self.problems)
        head = "Invalid hyperparameter" if count == 1 else f"{count} invalid hyperparameters"
        return f"{head}: " + "; ".join(self.problems)


def _describe_network(enc: EncoderConfig) -> str:
    return f"transformer {enc.pretrained_model}" if enc.is_transformer else enc.network


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."
