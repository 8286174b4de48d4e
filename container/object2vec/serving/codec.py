"""Request decoding and response encoding: pure functions looked up by media type.

Requests are application/json ({"instances": [...]}) or application/jsonlines (one instance per
line: each non-blank line is parsed on its own, so a line holding two records or half of one is
a 400 naming that line, never a shifted answer). Blank (whitespace-only) lines in JSON Lines are
skipped, as training skips them: they are not records, so they get no output line, and a trailing
newline never adds a record. Media-type parameters are parsed; charset and infer_max_seqlens are
honoured, any other is ignored. Every decoding problem is a RequestError (4xx), whatever the bytes.

Responses are built from the (N, D) float32 array in one orjson call plus byte splicing, never a
Python dict per record, unless verbose output (predicted_label) is asked for.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from object2vec.config import MAX_SEQ_LEN_LIMIT
from object2vec.errors import RequestError
from object2vec.record_format import JSONLINES, JSONLINES_ALIASES  # answers always use JSONLINES

JSON = "application/json"
MIN_SEQLEN, MAX_SEQLEN = 1, MAX_SEQ_LEN_LIMIT  # infer_max_seqlens bounds, as documented
UTF8_CHARSETS = ("utf-8", "utf8", "us-ascii", "ascii")
UTF8_BOM = codecs.BOM_UTF8
# Text codecs that are not body charsets: host-name and escape codecs, and one that always fails.
# (punycode is also quadratic in the input length.)
NOT_CHARSETS = ("idna", "punycode", "undefined", "unicode-escape", "raw-unicode-escape")


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
    """The body as UTF-8 without a byte order mark; 415 for a charset that is not one, 400 for
    bytes that are not valid in the charset named."""
    if charset is not None and charset.lower() not in UTF8_CHARSETS:
        unsupported = RequestError(415, f"charset={charset} is not supported: send UTF-8 (or another text charset)")
        try:
            name = codecs.lookup(charset).name
        except (LookupError, ValueError):  # ValueError: a name with a NUL or a lone surrogate
            raise unsupported from None
        if name in NOT_CHARSETS:
            raise unsupported
        try:
            body = body.decode(name).encode("utf-8")
        except LookupError:  # a binary codec (base64, zlib): not a charset
            raise unsupported from None
        except UnicodeError as err:  # decoding errors, the codecs' own UnicodeErrors, lone surrogates
            raise RequestError(400, f"the body is not valid {charset}: {err}") from None
    # A UTF-8 byte order mark is tolerated (Windows editors write one); orjson rejects it.
    return body[len(UTF8_BOM) :] if body.startswith(UTF8_BOM) else body


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
        raise RequestError(400, f"the body is not valid JSON: {_json_problem(body, err)}") from None
    if not isinstance(document, dict) or "instances" not in document:
        raise RequestError(
            400, 'the body must be a JSON object with an "instances" list: {"instances": [{"in0": [1, 2]}, ...]}'
        )
    instances = document["instances"]
    if not isinstance(instances, list):
        raise RequestError(400, '"instances" must be a list of objects like {"in0": [1, 2], "in1": [3]}')
    return instances


def _decode_jsonlines(body: bytes) -> list[Any]:
    """One record per non-blank line. Each line is parsed on its own: joining the lines into one
    array would be no faster, and would accept a line with two records next to a record split
    over two lines, shifting every later answer."""
    loads = orjson.loads
    instances = []
    for number, line in enumerate(body.splitlines(), 1):
        try:
            instances.append(loads(line))
        except orjson.JSONDecodeError as err:
            if not line.strip():
                continue  # blank lines are not records (see the module docstring)
            raise RequestError(
                400, f"line {number} is not valid JSON: {_json_problem(line, err, column=True)}"
            ) from None
    return instances


def _json_problem(text: bytes, err: orjson.JSONDecodeError, column: bool = False) -> str:
    """orjson's message with our own position (its "line 1 column 3 (char 2)" suffix would repeat
    or contradict the line number of a JSON Lines error), and invalid UTF-8 said as such."""
    try:
        text.decode("utf-8")
    except UnicodeDecodeError as bad:
        return (
            f"it is not valid UTF-8 (byte 0x{text[bad.start]:02x} at offset {bad.start}): send UTF-8, "
            "or name the charset, as in Content-Type: application/json; charset=latin-1"
        )
    where = f"column {err.colno}" if column else f"line {err.lineno}, column {err.colno}"
    return f"{err.msg} at {where}"


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
    """Verbose output: each record also carries predicted_label (argmax of the scores). The rows
    stay float32 arrays, so the digits are float32's shortest form, as in the plain output."""
    assert prediction.labels is not None
    rows = np.ascontiguousarray(prediction.values, dtype=np.float32)
    records = [
        {prediction.key: row, "predicted_label": label}
        for row, label in zip(rows, prediction.labels.tolist(), strict=True)
    ]
    if media_type == JSON:
        return orjson.dumps({"predictions": records}, option=orjson.OPT_SERIALIZE_NUMPY)
    return b"".join(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n" for record in records)


ENCODERS: dict[str, Callable[[Prediction], bytes]] = {
    JSON: _encode_json,
    JSONLINES: _encode_jsonlines,
}
