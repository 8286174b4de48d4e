"""The HTTP side of retrieval: how a request asks for neighbours, and how they are written back.

Asking: `top_k=K` as a parameter of the Accept header (`application/json; top_k=10`,
`application/jsonlines; top_k=10`: what a batch transform's Accept can carry) or in the
X-Amzn-SageMaker-Custom-Attributes header (`top_k=10`: InvokeEndpoint's CustomAttributes), with
optional `top_n=N` (re-rank depth), `exclude_self=true` (drop the candidate whose id is the
instance's "id") and `score_class=C` (softmax models: the class whose probability ranks). Custom
attributes are `key=value` pairs separated by "," or ";"; other keys there are left alone (the
header is free-form). Without top_k nothing changes: the answer is the usual scores or embeddings.

Answer: {"predictions": [{"neighbors": [{"id": "m12", "score": 4.71}, ...]}, ...]}, or in JSON Lines
one {"neighbors": [...]} line per instance. Ids are written as the catalogue gave them (string or
integer), scores in their shortest float32 form.

Pure functions, no faiss or torch: the retriever is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson

from object2vec.config import MAX_TOP_N
from object2vec.errors import RequestError
from object2vec.serving.codec import JSON, DecodedRequest, OutputFormat, parse_media_type

CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
MAX_TOP_K = 1000
PARAMETERS = ("top_k", "top_n", "exclude_self", "score_class")
NO_INDEX = (
    "this model has no retrieval index, so it cannot answer top_k: train it with a candidates channel, or "
    "build one with `python -m object2vec index --model-dir MODEL_DIR CANDIDATES...` and deploy that model dir"
)


@dataclass(frozen=True)
class RetrievalParams:
    """What a request asks of retrieval."""

    top_k: int
    top_n: int | None = None  # re-rank depth; None: the model's retrieval_top_n (at least top_k)
    exclude_self: bool = False  # drop the candidate whose id is the query instance's "id"
    score_class: int | None = None  # softmax: the class whose probability ranks; None: the model's


class NeighborSource(Protocol):
    """What answering needs of a retriever (object2vec.retrieval.retriever.Retriever)."""

    def neighbors(
        self, instances: list[Any], params: RetrievalParams, max_seqlens: Any, check_booleans: bool
    ) -> Any: ...

    def id_json(self, row: int) -> bytes: ...


def retrieval_params(accept: str | None, custom_attributes: str | None) -> RetrievalParams | None:
    """The retrieval parameters a request gives, or None when it gives no top_k (a plain request)."""
    found: dict[str, tuple[str, str]] = {}  # name -> (value, where)
    for item in (accept or "").split(","):
        _, params = parse_media_type(item)
        for name in PARAMETERS:
            if name in params:
                _merge(found, name, params[name], "Accept")
    for pair in (custom_attributes or "").replace(";", ",").split(","):
        name, sep, value = pair.partition("=")
        name = name.strip().lower()
        if sep and name in PARAMETERS:
            _merge(found, name, value.strip().strip('"'), CUSTOM_ATTRIBUTES_HEADER)
    if "top_k" not in found:
        if found:
            raise RequestError(400, f"{', '.join(sorted(found))} only mean(s) something with top_k: add top_k=K")
        return None
    top_k = _integer(found, "top_k", 1, MAX_TOP_K)
    assert top_k is not None
    return RetrievalParams(
        top_k=top_k,
        top_n=_integer(found, "top_n", 1, MAX_TOP_N),
        exclude_self=_boolean(found, "exclude_self"),
        score_class=_integer(found, "score_class", 0, 29),
    )


def _merge(found: dict[str, tuple[str, str]], name: str, value: str, where: str) -> None:
    if name in found and found[name][0] != value:
        raise RequestError(400, f"{name} is {found[name][0]} in {found[name][1]} but {value} in {where}: give it once")
    found.setdefault(name, (value, where))


def _integer(found: dict[str, tuple[str, str]], name: str, low: int, high: int) -> int | None:
    if name not in found:
        return None
    value, where = found[name]
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise RequestError(400, f"{name}={value} ({where}) is not valid: give an integer from {low} to {high}")
    return number


def _boolean(found: dict[str, tuple[str, str]], name: str) -> bool:
    if name not in found:
        return False
    value, where = found[name]
    if value.lower() not in ("true", "false", "1", "0"):
        raise RequestError(400, f"{name}={value} ({where}) is not valid: give true or false")
    return value.lower() in ("true", "1")


def answer_neighbors(
    retriever: NeighborSource | None, decoded: DecodedRequest, params: RetrievalParams, output: OutputFormat
) -> bytes:
    """The response body for a top_k request."""
    if retriever is None:
        raise RequestError(400, NO_INDEX)
    found = retriever.neighbors(decoded.instances, params, decoded.max_seqlens, decoded.may_contain_booleans)
    return encode_neighbors(retriever, found.rows, found.scores, output.media_type)


def encode_neighbors(
    retriever: NeighborSource, rows: list[np.ndarray], scores: list[np.ndarray], media_type: str
) -> bytes:
    """Splice the ids' JSON and the scores' float32 JSON into the answer, one object per instance."""
    objects = []
    for found, found_scores in zip(rows, scores, strict=True):
        numbers = orjson.dumps(np.asarray(found_scores, dtype=np.float32), option=orjson.OPT_SERIALIZE_NUMPY)
        texts = numbers[1:-1].split(b",") if len(found_scores) else []
        items = b",".join(
            b'{"id":' + retriever.id_json(int(row)) + b',"score":' + text + b"}"
            for row, text in zip(found, texts, strict=True)
        )
        objects.append(b'{"neighbors":[' + items + b"]}")
    if media_type == JSON:
        return b'{"predictions":[' + b",".join(objects) + b"]}"
    return b"".join(obj + b"\n" for obj in objects)
