from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


# --- hostile input: every problem is a 4xx RequestError, never another exception ----------------


@pytest.mark.parametrize(
    ("charset", "status"),
    [
        ("undefined", 415),  # a codec that always raises UnicodeError
        ("idna", 415),  # host names, not a body charset
        ("punycode", 415),
        ("unicode_escape", 415),
        ("base64", 415),  # a binary codec
        ("zlib", 415),
        ("utf-8\x00", 415),  # a NUL in the name
        ("utf-16", 400),  # an odd number of bytes
    ],
)
def test_charsets_that_are_not_charsets(charset: str, status: int) -> None:
    with pytest.raises(RequestError) as excinfo:
        decode_request(b'{"instances": [{"in0": [1]}]}', f"application/json; charset={charset}")
    assert status_of(excinfo) == status


def test_latin1_is_transcoded_and_a_utf8_bom_tolerated() -> None:
    body = '{"instances": [{"in0": [1], "name": "é"}]}'
    assert decode_request(body.encode("latin-1"), "application/json; charset=latin-1").instances[0]["name"] == "é"
    assert decode_request(b"\xef\xbb\xbf" + body.encode(), JSON).instances[0]["name"] == "é"
    assert decode_request(b'\xef\xbb\xbf{"in0": [1]}\n', JSONLINES).instances == [{"in0": [1]}]


@pytest.mark.parametrize("media_type", [JSON, JSONLINES])
def test_invalid_utf8_is_said_as_such(media_type: str) -> None:
    body = b'{"in0": [1]}\n{"in0": [1, "\xff"]}\n' if media_type == JSONLINES else b'{"instances": ["\xff"]}'
    with pytest.raises(RequestError, match="not valid UTF-8 \\(byte 0xff at offset") as excinfo:
        decode_request(body, media_type)
    assert "surrogates" not in excinfo.value.message


def test_jsonlines_error_has_one_position() -> None:
    with pytest.raises(RequestError) as excinfo:
        decode_request(b'{"in0": [1]}\n{"in0": }\n', JSONLINES)
    assert excinfo.value.message == "line 2 is not valid JSON: unexpected character, expected a JSON value at column 9"


@pytest.mark.parametrize(
    ("body", "line"),
    [
        # The cases: two records on one line, and a record over two lines, in one body whose
        # value count equals its line count (joining the lines into one array would accept it).
        (b'{"in0": [1], "in1": [1]}, {"in0": [2], "in1": [2]}\n{"in0": [3], "x": [[\n]]}\n', 1),
        (b'{"in0": [1], "x": [[\n]]}\n{"in0": [1]}, {"in0": [2]}\n', 1),
        (b'{"in0": [1]}\n[1], [2]\n', 2),
        (b'{"in0": [1]}\n{"in0": [1]}{"in0": [2]}\n', 2),
    ],
)
def test_jsonlines_line_must_be_exactly_one_value(body: bytes, line: int) -> None:
    with pytest.raises(RequestError, match=f"^line {line} is not valid JSON") as excinfo:
        decode_request(body, JSONLINES)
    assert status_of(excinfo) == 400


def test_verbose_output_writes_float32_digits() -> None:
    """float32(0.0021794848144054413) is 0.0021794848 in its shortest float32 form; the float64
    of the same number has 20 digits."""
    values = np.array([[0.0021794848144054413, 0.9978205151855946]], dtype=np.float32)
    prediction = Prediction("scores", values, labels=np.array([1]))
    for media_type in (JSON, JSONLINES):
        body = encode_response(prediction, OutputFormat(media_type, verbose=True))
        assert b"0.0021794848," in body and b"0.0021794848144" not in body
        assert encode_response(prediction, OutputFormat(media_type)).count(b"0.0021794848,") == 1


# --- properties (hypothesis) -------------------------------------------------------------------

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)
records = st.dictionaries(st.sampled_from(["in0", "in1", "label", "x"]), json_values, max_size=4)
content_types = st.sampled_from(
    [JSON, JSONLINES, "application/jsonl", "text/csv", "", "application/json; charset=latin-1"]
) | st.text(max_size=40)


@PROPERTY_SETTINGS
@given(body=st.binary(max_size=300), content_type=content_types)
def test_any_bytes_decode_or_raise_a_4xx(body: bytes, content_type: str) -> None:
    try:
        decoded = decode_request(body, content_type)
    except RequestError as err:
        assert 400 <= err.status_code < 500 and err.message
        return
    assert isinstance(decoded.instances, list)


@PROPERTY_SETTINGS
@given(body=st.lists(st.binary(max_size=40) | st.sampled_from([b"{", b"}", b"[", b"]", b",", b"\n"]), max_size=30))
def test_jsonlines_answers_one_instance_per_nonblank_line(body: list[bytes]) -> None:
    """The batch-transform invariant: never more or fewer records than non-blank lines."""
    data = b"".join(body)
    try:
        instances = decode_request(data, JSONLINES).instances
    except RequestError as err:
        assert err.status_code in (400, 415)
        return
    assert len(instances) == sum(1 for line in data.splitlines() if line.strip())


@PROPERTY_SETTINGS
@given(values=st.lists(records, max_size=8), blank=st.lists(st.sampled_from([b"", b"  ", b"\r"]), max_size=3))
def test_jsonlines_round_trip(values: list[dict[str, Any]], blank: list[bytes]) -> None:
    lines = [orjson.dumps(value) for value in values]
    body = b"\n".join(blank + lines + blank) + b"\n"
    assert decode_request(body, JSONLINES).instances == values
    assert decode_request(orjson.dumps({"instances": values}), JSON).instances == values


@PROPERTY_SETTINGS
@given(
    rows=st.integers(0, 6),
    columns=st.integers(1, 5),
    data=st.data(),
    media_type=st.sampled_from([JSON, JSONLINES]),
    verbose=st.booleans(),
)
def test_encoding_round_trips_float32(
    rows: int, columns: int, data: st.DataObject, media_type: str, verbose: bool
) -> None:
    floats = st.floats(width=32, allow_nan=False, allow_infinity=False)
    values = np.array(
        data.draw(st.lists(st.lists(floats, min_size=columns, max_size=columns), min_size=rows, max_size=rows)),
        dtype=np.float32,
    ).reshape(rows, columns)
    prediction = Prediction("scores", values, labels=values.argmax(axis=1) if rows else None)
    body = encode_response(prediction, OutputFormat(media_type, verbose))
    if media_type == JSON:
        records_out = orjson.loads(body)["predictions"]
    else:
        records_out = [orjson.loads(line) for line in body.splitlines()]
    assert len(records_out) == rows
    decoded = np.array([record["scores"] for record in records_out], dtype=np.float32).reshape(rows, columns)
    assert np.array_equal(decoded, values)
