"""Request decoding and response encoding: pure functions looked up by media type.

Requests are application/json ({"instances": [...]}) or application/jsonlines (one instance per
line). Blank (whitespace-only) lines in JSON Lines are skipped, as training skips them: they are
not records, so they get no output line, and a trailing newline never adds a record. Media-type
parameters are parsed; charset and infer_max_seqlens are honoured, any other is ignored.

Responses are built from the (N, D) float32 array in one orjson call plus byte splicing, never a
Python dict per record, unless verbose output (predicted_label) is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from object2vec.errors import RequestError

JSON = "application/json"
JSONLINES = "application/jsonlines"
# Other spellings of JSON Lines seen in the wild; answers always use JSONLINES.
JSONLINES_ALIASES = ("application/jsonl", "application/x-jsonlines", "application/json-lines")
MIN_SEQLEN, MAX_SEQLEN = 1, 5000  # infer_max_seqlens bounds, as documented
UTF8_CHARSETS = ("utf-8", "utf8", "us-ascii", "ascii")


@dataclass(frozen=True)
class DecodedRequest:
    instances: list[Any]
    max_seqlens: tuple[int, int] | None = None  # infer_max_seqlens=<enc0>,<enc1>
    # False when the body cannot hold a JSON boolean, so the predictor may skip that type check.
    may_contain_booleans: bool = True


@dataclass(frozen=True)
class OutputFormat:
    media_type: str  # JSON or JSONLINES
    verbose: bool = False  # add predicted_label (classification scores only)


@dataclass(frozen=True)
class Prediction:
    """What the predictor returns: one row per instance."""

    key: str  # "scores" or "embeddings"
    values: np.ndarray  # (N, D) float32
    labels: np.ndarray | None = None  # (N,) argmax class for classification scores, else None

    def __len__(self) -> int:
        return int(self.values.shape[0])


def parse_media_type(header: str | None) -> tuple[str, dict[str, str]]:
    """'Application/JSON; charset=UTF-8' -> ('application/json', {'charset': 'UTF-8'})."""
    if not header:
        return "", {}
    media_type, *rest = header.split(";")
    params: dict[str, str] = {}
    for part in rest:
        name, _, value = part.partition("=")
        if name.strip():
            params[name.strip().lower()] = value.strip().strip('"')
    return media_type.strip().lower(), params


# ---------------------------------------------------------------------------------------------
# Decoding


def decode_request(body: bytes, content_type: str | None) -> DecodedRequest:
    media_type, params = parse_media_type(content_type)
    media_type = JSONLINES if media_type in JSONLINES_ALIASES else media_type
    decoder = DECODERS.get(media_type)
    if decoder is None:
        shown = content_type or "(none)"
        raise RequestError(
            415, f"Content-Type {shown} is not supported: send {JSON} or {JSONLINES} (one instance per line)"
        )
    body = _to_utf8(body, params.get("charset"))
    return DecodedRequest(
        instances=decoder(body),
        max_seqlens=_max_seqlens(params.get("infer_max_seqlens")),
        may_contain_booleans=b"true" in body or b"false" in body,
    )


def _to_utf8(body: bytes, charset: str | None) -> bytes:
    if charset is None or charset.lower() in UTF8_CHARSETS:
        return body
    try:
        return body.decode(charset).encode("utf-8")
    except LookupError:
        raise RequestError(415, f"charset={charset} is not supported: send UTF-8") from None
    except UnicodeDecodeError as err:
        raise RequestError(400, f"the body is not valid {charset}: {err}") from None


def _max_seqlens(raw: str | None) -> tuple[int, int] | None:
    if raw is None:
        return None
    parts = [part.strip() for part in raw.split(",")]
    try:
        values = [int(part) for part in parts]
    except ValueError:
        values = []
    if len(values) != 2 or not all(MIN_SEQLEN <= value <= MAX_SEQLEN for value in values):
        raise RequestError(
            400,
            f"infer_max_seqlens={raw} is not valid: give two integers in [{MIN_SEQLEN}, {MAX_SEQLEN}], "
            "the maximum sequence lengths of enc0 and enc1, like infer_max_seqlens=50,50",
        )
    return values[0], values[1]


def _decode_json(body: bytes) -> list[Any]:
    if not body.strip():
        raise RequestError(400, 'the body is empty: send {"instances": [{"in0": [...], "in1": [...]}, ...]}')
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise RequestError(400, f"the body is not valid JSON: {err}") from None
    if not isinstance(document, dict) or "instances" not in document:
        raise RequestError(
            400, 'the body must be a JSON object with an "instances" list: {"instances": [{"in0": [1, 2]}, ...]}'
        )
    instances = document["instances"]
    if not isinstance(instances, list):
        raise RequestError(400, '"instances" must be a list of objects like {"in0": [1, 2], "in1": [3]}')
    return instances


def _decode_jsonlines(body: bytes) -> list[Any]:
    lines = body.splitlines()
    # Fast path: one orjson call for the whole body. Each line must hold exactly one value, which
    # the count check confirms; otherwise the slow path below finds the line to blame.
    if lines and all(lines):
        try:
            instances = orjson.loads(b"[" + b",".join(lines) + b"]")
        except orjson.JSONDecodeError:
            instances = None
        if isinstance(instances, list) and len(instances) == len(lines):
            return instances
    instances = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue  # blank lines are not records (see the module docstring)
        try:
            instances.append(orjson.loads(line))
        except orjson.JSONDecodeError as err:
            raise RequestError(400, f"line {number} is not valid JSON: {err}") from None
    return instances


DECODERS: dict[str, Callable[[bytes], list[Any]]] = {
    JSON: _decode_json,
    JSONLINES: _decode_jsonlines,
}


# ---------------------------------------------------------------------------------------------
# Content negotiation and encoding


def negotiate_accept(accept: str | None, default: str = JSON) -> OutputFormat:
    """The best supported type of an Accept header (q-values honoured); 406 if none is."""
    if not accept or not accept.strip():
        return OutputFormat(default)
    candidates: list[tuple[float, int, str, dict[str, str]]] = []
    for position, item in enumerate(accept.split(",")):
        media_type, params = parse_media_type(item)
        try:
            quality = float(params.get("q", "1"))
        except ValueError:
            quality = 0.0
        if media_type and quality > 0:
            candidates.append((-quality, position, media_type, params))
    for _, _, media_type, params in sorted(candidates):
        verbose = params.get("verbose", "").lower() == "true"
        if media_type in ("*/*", "application/*"):
            return OutputFormat(default, verbose)
        media_type = JSONLINES if media_type in JSONLINES_ALIASES else media_type
        if media_type in ENCODERS:
            return OutputFormat(media_type, verbose)
    raise RequestError(406, f"Accept {accept} is not supported: ask for {JSON} or {JSONLINES}")


def encode_response(prediction: Prediction, output: OutputFormat) -> bytes:
    encoder = ENCODERS.get(output.media_type)
    if encoder is None:
        raise RequestError(406, f"Accept {output.media_type} is not supported: ask for {JSON} or {JSONLINES}")
    if output.verbose and prediction.labels is not None:
        return _encode_records(prediction, output.media_type)
    return encoder(prediction)


def _rows(prediction: Prediction) -> bytes:
    """'[a,b],[c,d]' for the rows: one orjson call; only numbers, so '],[' only splits rows."""
    matrix = orjson.dumps(np.ascontiguousarray(prediction.values, dtype=np.float32), option=orjson.OPT_SERIALIZE_NUMPY)
    return matrix[1:-1]  # strip the outer brackets


def _encode_json(prediction: Prediction) -> bytes:
    if len(prediction) == 0:
        return b'{"predictions":[]}'
    open_ = b'{"' + prediction.key.encode() + b'":'
    rows = _rows(prediction).replace(b"],[", b"]}," + open_ + b"[")
    return b'{"predictions":[' + open_ + rows + b"}]}"


def _encode_jsonlines(prediction: Prediction) -> bytes:
    if len(prediction) == 0:
        return b""
    open_ = b'{"' + prediction.key.encode() + b'":'
    rows = _rows(prediction).replace(b"],[", b"]}\n" + open_ + b"[")
    return open_ + rows + b"}\n"


def _encode_records(prediction: Prediction, media_type: str) -> bytes:
    """Verbose output: each record also carries predicted_label (argmax of the scores)."""
    assert prediction.labels is not None
    records = [
        {prediction.key: row, "predicted_label": label}
        for row, label in zip(prediction.values.tolist(), prediction.labels.tolist(), strict=True)
    ]
    if media_type == JSON:
        return orjson.dumps({"predictions": records})
    return b"".join(orjson.dumps(record) + b"\n" for record in records)


ENCODERS: dict[str, Callable[[Prediction], bytes]] = {
    JSON: _encode_json,
    JSONLINES: _encode_jsonlines,
}
