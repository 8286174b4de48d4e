from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from object2vec.errors import RequestError
from object2vec.serving.codec import (
    JSON,
    JSONLINES,
    OutputFormat,
    Prediction,
    decode_request,
    encode_response,
    negotiate_accept,
    parse_media_type,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def status_of(excinfo: pytest.ExceptionInfo[RequestError]) -> int:
    return excinfo.value.status_code


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, ("", {})),
        ("application/json", ("application/json", {})),
        ("Application/JSON; charset=UTF-8", ("application/json", {"charset": "UTF-8"})),
        ("application/jsonlines;infer_max_seqlens=3,4", ("application/jsonlines", {"infer_max_seqlens": "3,4"})),
        ('application/json; charset="utf-8"', ("application/json", {"charset": "utf-8"})),
    ],
)
def test_parse_media_type(header: str | None, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_media_type(header) == expected


# --- decoding --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pairs", "embeddings"])
def test_documented_requests_decode_the_same_in_both_content_types(name: str) -> None:
    as_json = decode_request((FIXTURES / "requests" / f"{name}.json").read_bytes(), JSON)
    as_lines = decode_request((FIXTURES / "requests" / f"{name}.jsonl").read_bytes(), JSONLINES)
    assert as_json.instances == as_lines.instances
    assert len(as_json.instances) == 3
    assert as_json.max_seqlens is None


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8; infer_max_seqlens=5,6",
        "application/json; unknown=ignored",
    ],
)
def test_json_parameters_are_tolerated(content_type: str) -> None:
    decoded = decode_request(b'{"instances": [{"in0": [1]}]}', content_type)
    assert decoded.instances == [{"in0": [1]}]


def test_infer_max_seqlens_is_parsed() -> None:
    decoded = decode_request(b'{"in0": [1]}\n', "application/jsonlines; infer_max_seqlens=5, 6")
    assert decoded.max_seqlens == (5, 6)


@pytest.mark.parametrize("value", ["0,5", "5001,5", "5", "a,b", "1,2,3", ""])
def test_invalid_infer_max_seqlens_is_400(value: str) -> None:
    with pytest.raises(RequestError, match="infer_max_seqlens") as excinfo:
        decode_request(b'{"instances": []}', f"application/json; infer_max_seqlens={value}")
    assert status_of(excinfo) == 400


def test_other_charsets_are_transcoded() -> None:
    body = '{"instances": [{"in0": [1, 2]}]}'.encode("utf-16")
    assert decode_request(body, "application/json; charset=utf-16").instances == [{"in0": [1, 2]}]


def test_unknown_charset_is_415() -> None:
    with pytest.raises(RequestError) as excinfo:
        decode_request(b"{}", "application/json; charset=klingon")
    assert status_of(excinfo) == 415


@pytest.mark.parametrize("content_type", [None, "", "text/csv", "application/x-npy", "application/jsonx"])
def test_unsupported_content_type_is_415(content_type: str | None) -> None:
    with pytest.raises(RequestError, match="not supported") as excinfo:
        decode_request(b'{"instances": []}', content_type)
    assert status_of(excinfo) == 415


@pytest.mark.parametrize("alias", ["application/jsonl", "application/x-jsonlines", "APPLICATION/JSONLINES"])
def test_jsonlines_aliases(alias: str) -> None:
    assert decode_request(b'{"in1": [3]}', alias).instances == [{"in1": [3]}]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", '"instances"'),
        (b'{"instance": []}', '"instances"'),
        (b'{"instances": {"in0": [1]}}', "must be a list"),
    ],
)
def test_bad_json_bodies_are_400(body: bytes, message: str) -> None:
    with pytest.raises(RequestError, match=message) as excinfo:
        decode_request(body, JSON)
    assert status_of(excinfo) == 400


def test_jsonlines_blank_lines_are_skipped_and_crlf_accepted() -> None:
    body = b'{"in0": [1]}\r\n\n   \n{"in0": [2]}\n\n'
    assert decode_request(body, JSONLINES).instances == [{"in0": [1]}, {"in0": [2]}]


def test_jsonlines_empty_body_has_no_instances() -> None:
    assert decode_request(b"", JSONLINES).instances == []
    assert decode_request(b"\n\n", JSONLINES).instances == []


@pytest.mark.parametrize(
    ("body", "line"),
    [
        (b'{"in0": [1]}\n{"in0": [2\n', 2),
        (b'{"in0": [1]}, {"in0": [2]}\n', 1),  # two values on one line
        (b'{"in0": [1,\n2]}\n', 1),  # one value over two lines
        (b'{"in0": [1]}\n\n{"in0": }\n', 3),  # the number counts blank lines
    ],
)
def test_jsonlines_bad_line_is_named(body: bytes, line: int) -> None:
    with pytest.raises(RequestError, match=f"line {line} is not valid JSON") as excinfo:
        decode_request(body, JSONLINES)
    assert status_of(excinfo) == 400


def test_boolean_hint() -> None:
    assert decode_request(b'{"in0": [1]}', JSONLINES).may_contain_booleans is False
    assert decode_request(b'{"in0": [true]}', JSONLINES).may_contain_booleans is True


# --- content negotiation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, OutputFormat(JSON)),
        ("", OutputFormat(JSON)),
        ("*/*", OutputFormat(JSON)),
        ("application/*", OutputFormat(JSON)),
        ("application/json", OutputFormat(JSON)),
        ("application/jsonlines", OutputFormat(JSONLINES)),
        ("application/jsonlines; verbose=true", OutputFormat(JSONLINES, verbose=True)),
        ("application/jsonlines; verbose=false", OutputFormat(JSONLINES)),
        ("application/json; charset=utf-8", OutputFormat(JSON)),
        ("text/csv, application/jsonlines", OutputFormat(JSONLINES)),
        ("application/json;q=0.5, application/jsonlines", OutputFormat(JSONLINES)),
        ("text/html, */*;q=0.1", OutputFormat(JSON)),
    ],
)
def test_negotiate_accept(accept: str | None, expected: OutputFormat) -> None:
    assert negotiate_accept(accept) == expected


def test_negotiate_accept_default_is_configurable() -> None:
    assert negotiate_accept(None, JSONLINES) == OutputFormat(JSONLINES)
    assert negotiate_accept("*/*", JSONLINES) == OutputFormat(JSONLINES)


@pytest.mark.parametrize("accept", ["text/csv", "application/x-recordio-protobuf", "application/json;q=0"])
def test_unsupported_accept_is_406(accept: str) -> None:
    with pytest.raises(RequestError, match="not supported") as excinfo:
        negotiate_accept(accept)
    assert status_of(excinfo) == 406


# --- encoding --------------------------------------------------------------------------------

SCORES = Prediction("scores", np.array([[0.25, 0.5, 0.25], [0.1, 0.2, 0.7]], dtype=np.float32), labels=np.array([1, 2]))
EMBEDDINGS = Prediction("embeddings", np.array([[1.5, -2.0], [0.0, 3.25], [4.0, 5.0]], dtype=np.float32))


@pytest.mark.parametrize("prediction", [SCORES, EMBEDDINGS], ids=["scores", "embeddings"])
def test_encode_json(prediction: Prediction) -> None:
    body = encode_response(prediction, OutputFormat(JSON))
    predictions = orjson.loads(body)["predictions"]
    assert all(set(record) == {prediction.key} for record in predictions)
    # float32 values are written in their shortest float32 form: exact after a float32 round trip.
    values = np.array([record[prediction.key] for record in predictions], dtype=np.float32)
    assert np.array_equal(values, prediction.values)


@pytest.mark.parametrize("prediction", [SCORES, EMBEDDINGS], ids=["scores", "embeddings"])
def test_encode_jsonlines(prediction: Prediction) -> None:
    body = encode_response(prediction, OutputFormat(JSONLINES))
    assert body.endswith(b"\n")
    records = [orjson.loads(line) for line in body.decode().splitlines()]
    assert all(set(record) == {prediction.key} for record in records)
    values = np.array([record[prediction.key] for record in records], dtype=np.float32)
    assert np.array_equal(values, prediction.values)


def test_single_column_and_single_row() -> None:
    prediction = Prediction("scores", np.array([[0.5]], dtype=np.float32))
    assert encode_response(prediction, OutputFormat(JSON)) == b'{"predictions":[{"scores":[0.5]}]}'
    assert encode_response(prediction, OutputFormat(JSONLINES)) == b'{"scores":[0.5]}\n'


def test_empty_prediction() -> None:
    empty = Prediction("scores", np.zeros((0, 0), dtype=np.float32))
    assert encode_response(empty, OutputFormat(JSON)) == b'{"predictions":[]}'
    assert encode_response(empty, OutputFormat(JSONLINES)) == b""


def test_default_output_has_only_documented_keys_and_verbose_adds_label() -> None:
    plain = [orjson.loads(line) for line in encode_response(SCORES, OutputFormat(JSONLINES)).splitlines()]
    assert all(set(record) == {"scores"} for record in plain)
    verbose = [orjson.loads(line) for line in encode_response(SCORES, OutputFormat(JSONLINES, True)).splitlines()]
    assert [record["predicted_label"] for record in verbose] == [1, 2]
    assert np.allclose([record["scores"] for record in verbose], SCORES.values)
    as_json = orjson.loads(encode_response(SCORES, OutputFormat(JSON, True)))
    assert [record["predicted_label"] for record in as_json["predictions"]] == [1, 2]


def test_verbose_embeddings_have_no_label() -> None:
    body = encode_response(EMBEDDINGS, OutputFormat(JSONLINES, True))
    assert all(set(orjson.loads(line)) == {"embeddings"} for line in body.splitlines())
