"""How requests ask for neighbours (Accept parameters, custom attributes) and how answers are written."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest

from object2vec.errors import RequestError
from object2vec.retrieval.protocol import (
    MAX_TOP_K,
    NO_INDEX,
    RetrievalParams,
    answer_neighbors,
    encode_neighbors,
    retrieval_params,
)
from object2vec.serving.codec import DecodedRequest, OutputFormat


@pytest.mark.parametrize(
    ("accept", "attributes", "expected"),
    [
        (None, None, None),
        ("application/json", "trace=abc", None),  # other custom attributes are left alone
        ("application/json; top_k=10", None, RetrievalParams(10)),
        ("application/jsonlines;top_k=3;top_n=50", None, RetrievalParams(3, top_n=50)),
        ('text/csv;q=0.1, application/json; top_k="4"', None, RetrievalParams(4)),
        (None, "top_k=10", RetrievalParams(10)),
        (None, "Top_K=2, top_n=9; exclude_self=true,score_class=0", RetrievalParams(2, 9, True, 0)),
        ("application/json; top_k=5", "top_k=5,exclude_self=1", RetrievalParams(5, exclude_self=True)),
        ("application/json; top_k=5; exclude_self=false", None, RetrievalParams(5)),
        (None, f"top_k={MAX_TOP_K}", RetrievalParams(MAX_TOP_K)),
    ],
)
def test_parameters_from_accept_and_custom_attributes(accept, attributes, expected) -> None:
    assert retrieval_params(accept, attributes) == expected


@pytest.mark.parametrize(
    ("accept", "attributes", "needle"),
    [
        ("application/json; top_k=0", None, "top_k=0 (Accept) is not valid: give an integer from 1 to 1000"),
        (None, "top_k=-3", "top_k=-3 (X-Amzn-SageMaker-Custom-Attributes) is not valid"),
        (None, f"top_k={MAX_TOP_K + 1}", "from 1 to 1000"),
        (None, "top_k=ten", "top_k=ten"),
        (None, "top_k=5,top_n=0", "top_n=0"),
        (None, "top_k=5,top_n=10001", "from 1 to 10000"),
        (None, "top_k=5,exclude_self=maybe", "give true or false"),
        (None, "top_k=5,score_class=30", "score_class=30"),
        ("application/json; top_k=5", "top_k=6", "top_k is 5 in Accept but 6 in X-Amzn-SageMaker-Custom-Attributes"),
        (None, "top_n=50", "top_n only mean(s) something with top_k"),
    ],
)
def test_bad_parameters_are_400s_that_say_what_to_give(accept, attributes, needle: str) -> None:
    with pytest.raises(RequestError) as caught:
        retrieval_params(accept, attributes)
    assert caught.value.status_code == 400 and needle in caught.value.message, caught.value.message


class FakeRetriever:
    """Stands in for a Retriever: fixed rows and scores, ids from a list."""

    def __init__(self, ids: list[Any]) -> None:
        self.ids = [orjson.dumps(identifier) for identifier in ids]
        self.asked: list[Any] = []

    def neighbors(self, instances, params, max_seqlens, check_booleans):
        self.asked.append((instances, params, max_seqlens))

        class Found:
            rows = [np.array([2, 0]), np.array([], dtype=np.int64)]
            scores = [np.array([0.1, 1 / 3], dtype=np.float32), np.array([], dtype=np.float32)]

        return Found()

    def id_json(self, row: int) -> bytes:
        return self.ids[row]


def test_neighbors_are_written_with_ids_as_given_and_float32_scores() -> None:
    retriever = FakeRetriever(["m0", 1, 'é"x'])
    decoded = DecodedRequest([{"in0": [1]}, {"in0": [2]}], max_seqlens=(3, 3))
    body = answer_neighbors(retriever, decoded, RetrievalParams(2), OutputFormat("application/json"))
    assert json.loads(body) == {
        "predictions": [
            {"neighbors": [{"id": 'é"x', "score": 0.1}, {"id": "m0", "score": 0.33333334}]},
            {"neighbors": []},
        ]
    }
    assert b"0.33333334" in body  # shortest float32 form, not 0.3333333432674408
    assert retriever.asked[0][2] == (3, 3)
    lines = answer_neighbors(retriever, decoded, RetrievalParams(2), OutputFormat("application/jsonlines"))
    assert [json.loads(line) for line in lines.splitlines()] == [
        {"neighbors": [{"id": 'é"x', "score": 0.1}, {"id": "m0", "score": pytest.approx(1 / 3)}]},
        {"neighbors": []},
    ]
    assert lines.endswith(b"\n") and lines.count(b"\n") == 2


def test_integer_ids_stay_integers() -> None:
    body = encode_neighbors(
        FakeRetriever([10, 11, 12]), [np.array([1])], [np.array([2.5], np.float32)], "application/json"
    )
    assert json.loads(body) == {"predictions": [{"neighbors": [{"id": 11, "score": 2.5}]}]}


def test_empty_request() -> None:
    assert encode_neighbors(FakeRetriever([]), [], [], "application/json") == b'{"predictions":[]}'
    assert encode_neighbors(FakeRetriever([]), [], [], "application/jsonlines") == b""


def test_a_model_without_an_index_answers_400_saying_how_to_build_one() -> None:
    with pytest.raises(RequestError) as caught:
        answer_neighbors(None, DecodedRequest([{"in0": [1]}]), RetrievalParams(3), OutputFormat("application/json"))
    assert caught.value.status_code == 400 and caught.value.message == NO_INDEX
    assert "python -m object2vec index" in NO_INDEX and "candidates channel" in NO_INDEX
