"""A pretrained BERT-family transformer as an Object2Vec encoder (`encX_network=transformer`).

The architecture comes from a Hugging Face-format checkpoint folder (config.json + model.safetensors,
and sentence-transformers' modules.json / pooling config when present) and is kept as a
`TransformerSpec`: in model_config.json after training, so serving needs nothing but the model dir.

It is built from torch's own modules. A BERT layer is a post-norm `nn.TransformerEncoderLayer` with
GELU: self-attention -> dropout -> add & LayerNorm -> Linear -> GELU -> Linear -> dropout -> add &
LayerNorm. So a mapping of weight names is all it takes (`CHECKPOINT_NAMES`: the checkpoint's
separate query/key/value projections are concatenated into torch's in_proj), and torch's fused
attention applies; in inference (or with the whole transformer frozen) `nn.TransformerEncoder`
takes its fast path, which packs the batch into a nested tensor so padding costs no compute.
torch's layer also has a dropout between the two feed-forward Linears, which BERT has not; it is
replaced by an identity, so that training sees exactly the checkpoint's dropouts (embeddings,
attention probabilities, attention output, feed-forward output).

Loading a checkpoint never runs code from it: config.json is bounded JSON (`TransformerSpec.from_
hf_config`: every size range-checked, the parameter count capped, all before any allocation),
the weights are safetensors only, and every tensor's shape and dtype in the file's header is checked
against the spec before a byte of weights is read (`check_checkpoint_header`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import nn

from object2vec.config import FREEZE_ALL, EncoderConfig
from object2vec.data.batching import Tokens
from object2vec.errors import ClientError

logger = logging.getLogger(__name__)

HF_CONFIG_FILE = "config.json"
HF_WEIGHTS_FILE = "model.safetensors"
MODULES_FILE = "modules.json"  # sentence-transformers: the module pipeline (Transformer, Pooling, Normalize)
MAX_JSON_BYTES = 1 << 20  # config.json and the sentence-transformers files are a few hundred bytes
MODEL_TYPES = ("bert",)
ACTIVATIONS = ("gelu", "relu")  # exact (erf) GELU, as BERT's "gelu"; both run torch's fast path
POOLINGS = ("mean", "cls", "max")
# sentence-transformers pooling flags -> our pooling; any other flag set is refused.
POOLING_FLAGS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max"}
UNSUPPORTED_POOLING_FLAGS = (
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)
WEIGHT_DTYPES = ("F32", "F16", "BF16")  # converted to float32 on load
WEIGHT_PREFIXES = ("", "bert.")  # BertModel checkpoints, and BertFor*-task checkpoints
# Bounds on a checkpoint's sizes: above BERT-large / XLM-R sizes, far below what would exhaust a host.
LIMITS: dict[str, tuple[int, int]] = {
    "vocab_size": (2, 3_000_000),
    "hidden_size": (2, 8192),
    "layers": (1, 64),
    "heads": (1, 128),
    "intermediate_size": (1, 65536),
    "max_positions": (1, 8192),
    "type_vocab_size": (1, 64),
}
MAX_PARAMETERS = 2_000_000_000  # 8 GB of float32 weights
# config.json key of each spec field
HF_KEYS = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "layers": "num_hidden_layers",
    "heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "max_positions": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
    "layer_norm_eps": "layer_norm_eps",
    "dropout": "hidden_dropout_prob",
    "activation": "hidden_act",
}
HF_DEFAULTS: dict[str, Any] = {"type_vocab_size": 2, "layer_norm_eps": 1e-12, "dropout": 0.1, "activation": "gelu"}


@dataclass(frozen=True)
class TransformerSpec:
    """The architecture of a pretrained BERT-family transformer and how its output is pooled."""

    vocab_size: int  # rows of the word embedding
    hidden_size: int
    layers: int
    heads: int  # hidden_size is a multiple of it
    intermediate_size: int  # feed-forward width
    max_positions: int  # absolute position embeddings: the longest sequence it can encode
    type_vocab_size: int  # segment embeddings; every token is segment 0 here
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1  # hidden_dropout_prob: embeddings, attention and feed-forward (training only)
    activation: str = "gelu"
    pooling: str = "mean"  # masked mean of the last layer, or its first ([CLS]) position, or masked max
    normalize: bool = False  # L2-normalise the pooled vector (sentence-transformers' Normalize module)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> TransformerSpec:
        """A spec as `to_dict` wrote it (model_config.json), every value checked."""
        if not isinstance(raw, dict):
            raise ClientError(f"{where}: the transformer architecture must be a JSON object")
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        missing = sorted(names - set(raw))
        if unknown or missing:
            raise ClientError(
                f"{where}: the transformer architecture has unknown keys {unknown} or lacks keys {missing}"
            )
        return _checked(dict(raw), where)

    @classmethod
    def from_hf_config(cls, raw: Any, where: str, pooling: str = "mean", normalize: bool = False) -> TransformerSpec:
        """The spec of a Hugging Face BERT config.json (already parsed), every value checked."""
        if not isinstance(raw, dict):
            raise ClientError(f"{where}: must be a JSON object (a Hugging Face model config)")
        problems = []
        model_type = raw.get("model_type")
        if model_type not in MODEL_TYPES:
            problems.append(f"model_type is {model_type!r}; supported: {', '.join(MODEL_TYPES)} (BERT-family encoders)")
        if raw.get("position_embedding_type", "absolute") != "absolute":
            kind = raw.get("position_embedding_type")
            problems.append(f"position_embedding_type is {kind!r}; only absolute is supported")
        if raw.get("is_decoder") or raw.get("add_cross_attention"):
            problems.append("it is a decoder (is_decoder / add_cross_attention): only encoders are supported")
        values: dict[str, Any] = {"pooling": pooling, "normalize": normalize}
        for name, key in HF_KEYS.items():
            if key in raw:
                values[name] = raw[key]
            elif name in HF_DEFAULTS:
                values[name] = HF_DEFAULTS[name]
            else:
                problems.append(f"{key} is missing")
        return _checked(values, where, problems, HF_KEYS)

    @property
    def parameters(self) -> int:
        """Weights of the embeddings and layers (what `PretrainedTransformer` allocates)."""
        h, i = self.hidden_size, self.intermediate_size
        embeddings = (self.vocab_size + self.max_positions + self.type_vocab_size) * h + 2 * h
        layer = 4 * h * h + 4 * h + 2 * h * i + i + h + 4 * h
        return embeddings + self.layers * layer

    def describe(self) -> str:
        norm = ", normalised" if self.normalize else ""
        return (
            f"BERT, {self.layers} layers, hidden {self.hidden_size}, {self.heads} heads, vocab {self.vocab_size}, "
            f"max positions {self.max_positions}; {self.pooling} pooling{norm}"
        )


def _checked(
    values: dict[str, Any], where: str, problems: list[str] | None = None, keys: Mapping[str, str] | None = None
) -> TransformerSpec:
    """A spec of `values` after checking every value present; all problems (with `problems` found
    before) in one ClientError. `keys` names the fields as the file does (config.json's names)."""
    problems = list(problems or [])
    keys = keys or {}

    def show(name: str) -> str:
        return f"{keys.get(name, name)}={values[name]!r}"

    for name, (lo, hi) in LIMITS.items():
        if name in values and (type(values[name]) is not int or not lo <= values[name] <= hi):
            problems.append(f"{show(name)} must be an integer in [{lo}, {hi}]")
    eps, dropout = values.get("layer_norm_eps"), values.get("dropout")
    if "layer_norm_eps" in values and (type(eps) not in (int, float) or not 0 < eps <= 0.1):
        problems.append(f"{show('layer_norm_eps')} must be a number in (0, 0.1]")
    if "dropout" in values and (type(dropout) not in (int, float) or not 0 <= dropout < 1):
        problems.append(f"{show('dropout')} must be a number in [0, 1)")
    if "activation" in values and values["activation"] not in ACTIVATIONS:
        problems.append(f"{show('activation')}: supported are {', '.join(ACTIVATIONS)}")
    if values.get("pooling") not in POOLINGS:
        problems.append(f"pooling={values.get('pooling')!r}: supported are {', '.join(POOLINGS)}")
    if type(values.get("normalize")) is not bool:
        problems.append(f"normalize={values.get('normalize')!r} must be true or false")
    if not problems and values["hidden_size"] % values["heads"]:
        problems.append(f"{show('hidden_size')} is not a multiple of {show('heads')}")
    if problems:
        raise ClientError(f"{where}: " + "; ".join(problems))
    spec = TransformerSpec(**{**values, "layer_norm_eps": float(eps), "dropout": float(dropout)})  # type: ignore[arg-type]
    if spec.parameters > MAX_PARAMETERS:
        raise ClientError(
            f"{where}: the architecture has {spec.parameters:,} parameters, more than the {MAX_PARAMETERS:,} "
            "this encoder loads"
        )
    return spec


def check_encoder_fits(enc: EncoderConfig, spec: TransformerSpec, prefix: str, source: str) -> None:
    """encX_vocab_size, encX_max_seq_len and encX_freeze_layers against the architecture, all at once."""
    problems = []
    if enc.vocab_size > spec.vocab_size:
        problems.append(
            f"{prefix}vocab_size={enc.vocab_size} is more than the vocab_size {spec.vocab_size} of {source}: ids "
            f"past it have no embedding; set {prefix}vocab_size to {spec.vocab_size} (the tokenizer's ids lie below it)"
        )
    if enc.max_seq_len > spec.max_positions:
        problems.append(
            f"{prefix}max_seq_len={enc.max_seq_len} is more than the max_position_embeddings {spec.max_positions} of "
            f"{source}: set {prefix}max_seq_len to at most {spec.max_positions}"
        )
    if enc.freeze_layers > spec.layers:
        problems.append(
            f"{prefix}freeze_layers={enc.freeze_layers} is more than the {spec.layers} layers of {source}: use at "
            f"most {spec.layers}, or all"
        )
    if problems:
        raise ClientError("; ".join(problems))


# ---------------------------------------------------------------------------------------------
# Reading a checkpoint folder


@dataclass(frozen=True)
class TransformerCheckpoint:
    """A checkpoint folder whose config and weights header were checked; nothing allocated yet."""

    folder: Path
    spec: TransformerSpec
    weights: Path
    prefix: str  # what the weight names start with ("" or "bert.")


def read_json(path: Path, what: str) -> Any:
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise ClientError(f"{what} {path} has {size} bytes, more than {MAX_JSON_BYTES}: not a model config")
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise ClientError(f"{what} {path} cannot be read as JSON: {err}") from err


def read_checkpoint(folder: Path, name: str) -> TransformerCheckpoint:
    """Check a Hugging Face / sentence-transformers folder: config, pooling and weights header.

    `name` says where it came from in messages (e.g. "enc0_pretrained_model=minilm").
    """
    base, pooling, normalize = _sentence_transformers_modules(folder, name)
    config_path, weights = base / HF_CONFIG_FILE, base / HF_WEIGHTS_FILE
    for path in (config_path, weights):
        if not path.is_file():
            present = sorted(p.name for p in base.iterdir())[:12] if base.is_dir() else []
            pickled = "pytorch_model.bin" in present
            other = " (pytorch_model.bin is a pickle, never loaded: convert it to safetensors)" if pickled else ""
            raise ClientError(
                f"{name}: {path.name} is missing from {base}; a checkpoint folder holds config.json and "
                f"model.safetensors{other}; it holds: {', '.join(present) or 'nothing'}"
            )
    spec = TransformerSpec.from_hf_config(read_json(config_path, name), f"{name}: {HF_CONFIG_FILE}", pooling, normalize)
    prefix = check_checkpoint_header(weights, spec, name)
    return TransformerCheckpoint(folder=folder, spec=spec, weights=weights, prefix=prefix)


def _sentence_transformers_modules(folder: Path, name: str) -> tuple[Path, str, bool]:
    """(folder of the transformer's files, pooling, normalize) from modules.json when present.

    Only the module types are read (never imported): Transformer, Pooling and Normalize are
    understood; any other module (a Dense head, say) would change the embedding, so it is refused.
    Without modules.json (a plain BERT checkpoint) the pooling is the masked mean.
    """
    modules_path = folder / MODULES_FILE
    if not modules_path.is_file():
        return folder, "mean", False
    modules = read_json(modules_path, f"{name}: {MODULES_FILE}")
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ClientError(f"{name}: {MODULES_FILE} must be a list of module objects")
    base, pooling, normalize = folder, "mean", False
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        path = str(module.get("path", ""))
        if path and (not path.replace("_", "").replace("-", "").isalnum()):
            raise ClientError(f"{name}: {MODULES_FILE} names the module folder {path!r}: not a plain folder name")
        if kind == "Transformer":
            base = folder / path if path else folder
        elif kind == "Pooling":
            pooling = _pooling_mode(read_json(folder / path / "config.json", f"{name}: pooling config"), name)
        elif kind == "Normalize":
            normalize = True
        else:
            raise ClientError(
                f"{name}: {MODULES_FILE} lists a {module.get('type')!r} module; supported are Transformer, "
                "Pooling (mean, cls or max) and Normalize"
            )
    return base, pooling, normalize


def _pooling_mode(config: Any, name: str) -> str:
    if not isinstance(config, dict):
        raise ClientError(f"{name}: the pooling config must be a JSON object")
    chosen = [mode for flag, mode in POOLING_FLAGS.items() if config.get(flag) is True]
    other = [flag for flag in UNSUPPORTED_POOLING_FLAGS if config.get(flag) is True]
    if other or len(chosen) != 1:
        raise ClientError(
            f"{name}: the pooling config sets {', '.join(other + chosen) or 'no mode'}; exactly one of "
            f"{', '.join(POOLING_FLAGS)} is supported"
        )
    return chosen[0]


def checkpoint_shapes(spec: TransformerSpec) -> dict[str, tuple[int, ...]]:
    """The tensors this encoder reads from a BERT checkpoint (names without prefix) and their shapes."""
    h, i = spec.hidden_size, spec.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (spec.vocab_size, h),
        "embeddings.position_embeddings.weight": (spec.max_positions, h),
        "embeddings.token_type_embeddings.weight": (spec.type_vocab_size, h),
        "embeddings.LayerNorm.weight": (h,),
        "embeddings.LayerNorm.bias": (h,),
    }
    for n in range(spec.layers):
        layer = f"encoder.layer.{n}."
        for part in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            shapes[f"{layer}{part}.weight"] = (h, h)
            shapes[f"{layer}{part}.bias"] = (h,)
        for part in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[f"{layer}{part}.weight"] = (h,)
            shapes[f"{layer}{part}.bias"] = (h,)
        shapes[f"{layer}intermediate.dense.weight"] = (i, h)
        shapes[f"{layer}intermediate.dense.bias"] = (i,)
        shapes[f"{layer}output.dense.weight"] = (h, i)
        shapes[f"{layer}output.dense.bias"] = (h,)
    return shapes


@contextlib.contextmanager
def _open_weights(path: Path, name: str) -> Iterator[Any]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            yield handle
    except (SafetensorError, OSError) as err:
        raise ClientError(f"{name}: {path.name} is not a readable safetensors file: {err}") from err


def check_checkpoint_header(path: Path, spec: TransformerSpec, name: str) -> str:
    """Check the safetensors header against the spec (names, shapes, dtypes) without reading weights.

    safetensors itself bounds the header and checks that every tensor's byte range lies in the file.
    Returns the prefix of the weight names. Tensors this encoder does not use (a pooler, a
    masked-LM head, position_ids) are ignored.
    """
    expected = checkpoint_shapes(spec)
    with _open_weights(path, name) as handle:
        names = set(handle.keys())
        prefix = next((p for p in WEIGHT_PREFIXES if f"{p}embeddings.word_embeddings.weight" in names), None)
        if prefix is None:
            shown = ", ".join(sorted(names)[:5])
            raise ClientError(
                f"{name}: {path.name} has no embeddings.word_embeddings.weight (nor bert.embeddings...): not a BERT "
                f"checkpoint; it holds {len(names)} tensors, e.g. {shown}"
            )
        problems = []
        for key, shape in expected.items():
            full = prefix + key
            if full not in names:
                problems.append(f"{full} is missing")
                continue
            view = handle.get_slice(full)
            found, dtype = tuple(view.get_shape()), view.get_dtype()
            if found != shape:
                problems.append(f"{full} has shape {list(found)}, config.json implies {list(shape)}")
            elif dtype not in WEIGHT_DTYPES:
                problems.append(f"{full} has dtype {dtype}; supported: {', '.join(WEIGHT_DTYPES)}")
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise ClientError(f"{name}: {path.name} does not match {HF_CONFIG_FILE}: {'; '.join(problems[:8])}{more}")
    return prefix


# ---------------------------------------------------------------------------------------------
# The modules


class PretrainedTransformer(nn.Module):
    """BERT's embeddings (word + position + segment 0, LayerNorm, dropout) and encoder stack."""

    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        self.spec = spec
        h = spec.hidden_size
        self.word_embeddings = nn.Embedding(spec.vocab_size, h)
        self.position_embeddings = nn.Embedding(spec.max_positions, h)
        self.token_type_embeddings = nn.Embedding(spec.type_vocab_size, h)
        self.embedding_norm = nn.LayerNorm(h, eps=spec.layer_norm_eps)
        self.dropout = nn.Dropout(spec.dropout)
        layer = nn.TransformerEncoderLayer(
            h,
            spec.heads,
            spec.intermediate_size,
            dropout=spec.dropout,
            activation=spec.activation,
            layer_norm_eps=spec.layer_norm_eps,
            batch_first=True,
            norm_first=False,  # BERT is post-norm
        )
        # BERT drops nothing between its two feed-forward Linears; torch's layer would (at the
        # hidden dropout rate), adding noise the checkpoint was never trained with to every
        # fine-tuning step. The inference fast path never applies it, so only training changes.
        layer.dropout = nn.Identity()
        # The nested-tensor fast path needs an even head count; asking for it otherwise only warns.
        self.encoder = nn.TransformerEncoder(layer, spec.layers, enable_nested_tensor=spec.heads % 2 == 0)
        # torch's own fast path builds nested tensors and warns that their API is a prototype:
        # internal to torch, nothing a user can act on (the filter is idempotent).
        warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors is in prototype stage")
        self.frozen_layers = 0
        self.frozen_all = False

    def freeze(self, layers: int) -> None:
        """Fix the embeddings and the lowest `layers` layers (FREEZE_ALL: everything)."""
        count = self.spec.layers if layers == FREEZE_ALL else min(layers, self.spec.layers)
        frozen: list[nn.Module] = []
        if count > 0:
            frozen = [self.word_embeddings, self.position_embeddings, self.token_type_embeddings, self.embedding_norm]
            frozen += list(self.encoder.layers[:count])
        for module in frozen:
            module.requires_grad_(False)
        self.frozen_layers = count
        self.frozen_all = count == self.spec.layers

    def train(self, mode: bool = True) -> PretrainedTransformer:
        # Wholly frozen, it is a fixed feature extractor: no dropout, and the fast path in training too.
        return super().train(mode and not self.frozen_all)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids (B, L), mask (B, L) True at real tokens (left-aligned) -> last hidden states (B, L, H)."""
        positions = torch.arange(ids.shape[1], device=ids.device)  # (L,)
        x = self.word_embeddings(ids) + self.position_embeddings(positions)  # (B, L, H)
        x = x + self.token_type_embeddings.weight[0]  # every token is in segment 0
        x = self.dropout(self.embedding_norm(x))
        # In eval mode without gradients torch packs the rows into a nested tensor (no padding
        # compute) and hands back zeros at padded positions; in training they hold values that
        # the pooling masks out.
        return self.encoder(x, src_key_padding_mask=~mask)  # (B, L, H)

    def load_checkpoint(self, checkpoint: TransformerCheckpoint, name: str) -> None:
        """Copy the checkpoint's weights in (float32); the header was checked by read_checkpoint."""
        p = checkpoint.prefix
        with _open_weights(checkpoint.weights, name) as handle, torch.no_grad():

            def read(key: str) -> torch.Tensor:
                return handle.get_tensor(p + key).float()

            self.word_embeddings.weight.copy_(read("embeddings.word_embeddings.weight"))
            self.position_embeddings.weight.copy_(read("embeddings.position_embeddings.weight"))
            self.token_type_embeddings.weight.copy_(read("embeddings.token_type_embeddings.weight"))
            self.embedding_norm.weight.copy_(read("embeddings.LayerNorm.weight"))
            self.embedding_norm.bias.copy_(read("embeddings.LayerNorm.bias"))
            for n, layer in enumerate(self.encoder.layers):
                for ours, theirs in _layer_names(n).items():
                    target = layer.get_parameter(ours)
                    if isinstance(theirs, tuple):  # query, key and value, stacked as torch's in_proj
                        target.copy_(torch.cat([read(key) for key in theirs]))
                    else:
                        target.copy_(read(theirs))


def _layer_names(n: int) -> dict[str, str | tuple[str, ...]]:
    """Parameter of nn.TransformerEncoderLayer -> checkpoint name(s) of layer n."""
    layer = f"encoder.layer.{n}."
    attention = f"{layer}attention.self."
    names: dict[str, str | tuple[str, ...]] = {
        "self_attn.in_proj_weight": tuple(f"{attention}{part}.weight" for part in ("query", "key", "value")),
        "self_attn.in_proj_bias": tuple(f"{attention}{part}.bias" for part in ("query", "key", "value")),
    }
    for ours, theirs in (
        ("self_attn.out_proj", "attention.output.dense"),
        ("norm1", "attention.output.LayerNorm"),
        ("linear1", "intermediate.dense"),
        ("linear2", "output.dense"),
        ("norm2", "output.LayerNorm"),
    ):
        names[f"{ours}.weight"] = f"{layer}{theirs}.weight"
        names[f"{ours}.bias"] = f"{layer}{theirs}.bias"
    return names


def bf16_autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast on a GPU that has it (training and serving); nothing on the CPU, where
    autocast would also switch off the encoder's fast path."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class TransformerEncoder(nn.Module):
    """A batch side (Tokens, read as its padded (B, L) view) -> the pooled last layer of a pretrained
    transformer (B, enc_dim).

    Pooled as the checkpoint says (masked mean, [CLS] or masked max; L2-normalised when it has a
    Normalize module), then projected to enc_dim, or not at all when enc_dim is the hidden size,
    so that the embedding is the checkpoint's own sentence embedding before any training. An empty
    sequence encodes to the projection of a zero vector, as with the other encoders.
    """

    def __init__(self, config: EncoderConfig, spec: TransformerSpec, enc_dim: int) -> None:
        super().__init__()
        self.spec = spec
        self.transformer = PretrainedTransformer(spec)
        self.transformer.freeze(config.freeze_layers)
        self.project: nn.Module = nn.Identity() if enc_dim == spec.hidden_size else nn.Linear(spec.hidden_size, enc_dim)
        # Per-token activation memory of a forward, for the predictor's chunking: the feed-forward
        # width plus one attention row per head.
        self.token_cost = spec.intermediate_size + spec.heads * config.max_seq_len

    layout: ClassVar[str] = "padded"  # attention runs over a (B, L) rectangle of ids

    def forward(self, tokens: Tokens) -> torch.Tensor:
        ids, lengths = tokens.padded_ids(), tokens.lengths  # (B, L) padded with 0, (B,)
        # An empty row attends to its first (padding) position instead of to nothing (NaN); its
        # pooled vector is zeroed below.
        mask = torch.arange(ids.shape[1], device=ids.device) < lengths.clamp(min=1)[:, None]  # (B, L)
        with bf16_autocast(ids.device):
            hidden = self.transformer(ids, mask)  # (B, L, H)
        hidden = hidden.float()
        if self.spec.pooling == "cls":
            pooled = hidden[:, 0]  # (B, H)
        elif self.spec.pooling == "max":
            pooled = hidden.masked_fill(~mask[:, :, None], float("-inf")).amax(dim=1)  # (B, H)
        else:
            weights = mask.to(hidden.dtype)[:, :, None]  # (B, L, 1)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1)  # (B, H); rows have >= 1 token
        if self.spec.normalize:
            pooled = F.normalize(pooled, dim=1)
        pooled = pooled * (lengths > 0).to(pooled.dtype)[:, None]  # empty sequences -> zeros
        return self.project(pooled)  # (B, enc_dim)


def transformer_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every distinct parameter of the pretrained transformers in `model` (shared ones once)."""
    seen: dict[int, nn.Parameter] = {}
    for module in model.modules():
        if isinstance(module, PretrainedTransformer):
            for parameter in module.parameters():
                seen.setdefault(id(parameter), parameter)
    return list(seen.values())


def specs_to_dict(specs: Mapping[int, TransformerSpec]) -> dict[str, Any]:
    return {f"enc{index}": spec.to_dict() for index, spec in sorted(specs.items())}


def specs_from_dict(raw: Any, where: str) -> dict[int, TransformerSpec]:
    if not isinstance(raw, dict) or not set(raw) <= {"enc0", "enc1"}:
        raise ClientError(f'{where}: "transformers" must be an object with keys enc0 and/or enc1')
    return {int(key[3]): TransformerSpec.from_dict(value, f"{where}, transformers.{key}") for key, value in raw.items()}
