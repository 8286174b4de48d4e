from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from gunicorn.http.errors import ChunkMissingTerminator, InvalidChunkSize, NoMoreData
from werkzeug.test import EnvironBuilder, run_wsgi_app

from object2vec.serving.app import create_app
from object2vec.serving.predictor import Predictor
from object2vec.serving.server import gunicorn_options
from object2vec.serving.settings import MIB, ServerSettings, ServingConfig

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PAIR = {"in0": [1, 2, 3], "in1": [4, 5]}


@pytest.fixture(scope="module")
def predictor(serving_base_dirs: dict[str, Path]) -> Predictor:
    return Predictor.load(serving_base_dirs["softmax"] / "model", device="cpu")


def make_client(predictor: Predictor, **config: Any) -> FlaskClient:
    app: Flask = create_app(predictor, ServingConfig(**config))
    return app.test_client()


@pytest.fixture()
def client(predictor: Predictor) -> FlaskClient:
    return make_client(predictor)


def invoke(client: FlaskClient, body: bytes, content_type: str | None = "application/json", **headers: str) -> Any:
    if content_type is not None:
        headers["Content-Type"] = content_type
    return client.post("/invocations", data=body, headers=headers)


def test_ping_is_200_with_empty_body(client: FlaskClient) -> None:
    response = client.get("/ping")
    assert response.status_code == 200
    assert response.data == b""


@pytest.mark.parametrize(
    ("request_file", "content_type"),
    [("pairs.json", "application/json"), ("pairs.jsonl", "application/jsonlines")],
)
@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "application/jsonlines"])
def test_documented_pair_requests(
    client: FlaskClient, request_file: str, content_type: str, accept: str | None
) -> None:
    headers = {"Accept": accept} if accept else {}
    response = invoke(client, (FIXTURES / "requests" / request_file).read_bytes(), content_type, **headers)
    assert response.status_code == 200, response.data
    wants_lines = accept == "application/jsonlines"
    assert response.mimetype == ("application/jsonlines" if wants_lines else "application/json")
    if wants_lines:
        records = [orjson.loads(line) for line in response.data.splitlines()]
    else:
        records = orjson.loads(response.data)["predictions"]
    assert len(records) == 3
    assert all(set(record) == {"scores"} and len(record["scores"]) == 3 for record in records)
    assert all(abs(sum(record["scores"]) - 1) < 1e-5 for record in records)


def test_embedding_request_with_infer_max_seqlens(client: FlaskClient) -> None:
    body = (FIXTURES / "requests" / "embeddings.jsonl").read_bytes()
    response = invoke(client, body, "application/jsonlines; infer_max_seqlens=10,10", Accept="application/jsonlines")
    assert response.status_code == 200, response.data
    records = [orjson.loads(line) for line in response.data.splitlines()]
    assert len(records) == 3
    assert all(set(record) == {"embeddings"} and len(record["embeddings"]) == 16 for record in records)


def test_verbose_accept_adds_predicted_label(client: FlaskClient) -> None:
    response = invoke(client, orjson.dumps({"instances": [PAIR]}), Accept="application/jsonlines; verbose=true")
    record = orjson.loads(response.data)
    assert set(record) == {"scores", "predicted_label"}
    assert record["predicted_label"] == max(range(3), key=lambda i: record["scores"][i])


@pytest.mark.parametrize(
    ("body", "content_type", "headers", "status", "message"),
    [
        (b"{}", "text/csv", {}, 415, "Content-Type text/csv is not supported"),
        (b"{}", None, {}, 415, "Content-Type (none) is not supported"),
        (b'{"instances": []}', "application/json", {"Accept": "text/csv"}, 406, "Accept text/csv"),
        (b"{oops", "application/json", {}, 400, "not valid JSON"),
        (b'{"instances": [{"in0": [1]}, {"in1": [1]}]}', "application/json", {}, 400, "mix modes"),
        (b'{"instances": [{"in0": [1, 99999]}]}', "application/json", {}, 400, 'Vocab id "99999"'),
        (b'{"in0": [1]}\n{"in0": [1.5]}\n', "application/jsonlines", {}, 400, 'instance 1, field "in0"'),
    ],
)
def test_errors_are_json_4xx(
    client: FlaskClient, body: bytes, content_type: str | None, headers: dict[str, str], status: int, message: str
) -> None:
    response = invoke(client, body, content_type, **headers)
    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert message in orjson.loads(response.data)["error"]


def test_body_too_large_is_413(predictor: Predictor) -> None:
    client = make_client(predictor, max_body_bytes=1000)
    body = orjson.dumps({"instances": [PAIR] * 100})
    assert len(body) > 1000
    response = invoke(client, body)
    assert response.status_code == 413
    assert "larger than 1000 bytes" in orjson.loads(response.data)["error"]
    assert invoke(client, orjson.dumps({"instances": [PAIR]})).status_code == 200


def test_chunked_body_is_never_truncated(predictor: Predictor) -> None:
    """A body without Content-Length (chunked) is read to one byte past the limit: exactly at the
    limit it is answered, one byte over it is a 413, never a 200 for the part that fitted."""
    line = orjson.dumps({"in0": [1]}) + b"\n"
    body = line * 100
    client = make_client(predictor, max_body_bytes=len(body))
    chunked = {
        "Content-Type": "application/jsonlines",
        "Accept": "application/jsonlines",
        "Transfer-Encoding": "chunked",
    }
    response = client.post("/invocations", input_stream=io.BytesIO(body), headers=chunked)
    assert response.status_code == 200
    assert len(response.data.splitlines()) == 100
    response = client.post("/invocations", input_stream=io.BytesIO(body + line), headers=chunked)
    assert response.status_code == 413, response.data
    assert "larger than" in orjson.loads(response.data)["error"]


def post_raw(predictor: Predictor, stream: Any, headers: dict[str, str]) -> tuple[int, Any]:
    """POST /invocations with the WSGI input stream and headers exactly as given (the test client
    would fix Content-Length up): what gunicorn hands the app for a chunked or cut-short body."""
    environ = EnvironBuilder(path="/invocations", method="POST", headers=headers).get_environ()
    environ["wsgi.input"] = stream
    if "Content-Length" in headers:
        environ["CONTENT_LENGTH"] = headers["Content-Length"]
    body, status, _ = run_wsgi_app(create_app(predictor, ServingConfig()), environ, buffered=True)
    return int(status.split()[0]), orjson.loads(b"".join(body))


class FailingStream:
    """A body gunicorn cannot read: malformed chunking, a client gone, a read timeout."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def read(self, size: int = -1) -> bytes:
        raise self.error


@pytest.mark.parametrize(
    ("error", "status"),
    [(InvalidChunkSize(b"zz"), 400), (ChunkMissingTerminator(b"xx"), 400), (NoMoreData(), 400), (TimeoutError(), 408)],
)
def test_unreadable_body_is_4xx(predictor: Predictor, error: Exception, status: int) -> None:
    chunked = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    code, answer = post_raw(predictor, FailingStream(error), chunked)
    assert code == status
    assert answer["error"]


def test_body_shorter_than_content_length_is_400(predictor: Predictor) -> None:
    body = orjson.dumps({"instances": [PAIR]})
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    code, answer = post_raw(predictor, io.BytesIO(body[:-5]), headers)
    assert code == 400
    assert f"of the {len(body)} bytes" in answer["error"]


def test_too_many_instances_is_413(serving_base_dirs: dict[str, Path]) -> None:
    small = Predictor.load(serving_base_dirs["softmax"] / "model", device="cpu", max_instances=2)
    response = invoke(make_client(small), orjson.dumps({"instances": [PAIR] * 3}))
    assert response.status_code == 413


def test_unknown_route_and_method(client: FlaskClient) -> None:
    assert client.get("/nope").status_code == 404
    response = client.get("/invocations")
    assert response.status_code == 405
    assert "error" in orjson.loads(response.data)


def test_internal_error_is_500_and_the_app_keeps_serving(predictor: Predictor, monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_client(predictor)

    def explode(*_: Any, **__: Any) -> Any:
        raise ValueError("boom")

    monkeypatch.setattr(predictor, "predict", explode)
    response = invoke(client, orjson.dumps({"instances": [PAIR]}))
    assert response.status_code == 500
    assert "ValueError" in orjson.loads(response.data)["error"]
    monkeypatch.undo()
    assert invoke(client, orjson.dumps({"instances": [PAIR]})).status_code == 200


def test_execution_parameters(predictor: Predictor) -> None:
    default = make_client(predictor).get("/execution-parameters")
    assert default.status_code == 200
    assert orjson.loads(default.data) == {
        "MaxConcurrentTransforms": 1,
        "BatchStrategy": "MULTI_RECORD",
        "MaxPayloadInMB": 6,
    }
    custom = make_client(predictor, max_concurrent_transforms=4, batch_strategy="SINGLE_RECORD", max_payload_mb=20).get(
        "/execution-parameters"
    )
    assert orjson.loads(custom.data) == {
        "MaxConcurrentTransforms": 4,
        "BatchStrategy": "SINGLE_RECORD",
        "MaxPayloadInMB": 20,
    }


def test_batch_jsonlines_without_accept_answers_jsonlines(predictor: Predictor) -> None:
    body = b"".join(orjson.dumps(PAIR) + b"\n" for _ in range(5))
    batch = make_client(predictor, batch=True, max_body_bytes=20 * MIB)
    response = invoke(batch, body, "application/jsonlines")
    assert response.mimetype == "application/jsonlines"
    assert len(response.data.splitlines()) == 5
    # An explicit Accept still wins; outside batch the default stays application/json.
    assert invoke(batch, body, "application/jsonlines", Accept="application/json").mimetype == "application/json"
    assert invoke(make_client(predictor), body, "application/jsonlines").mimetype == "application/json"


# --- settings from the environment -------------------------------------------------------------


def test_serving_config_defaults() -> None:
    config = ServingConfig.from_env({}, workers=2)
    assert config.batch is False
    assert config.max_body_bytes == 6 * MIB
    assert config.execution_parameters() == {
        "MaxConcurrentTransforms": 2,
        "BatchStrategy": "MULTI_RECORD",
        "MaxPayloadInMB": 6,
    }


@pytest.mark.parametrize("flag", ["true", "True", "TRUE"])
def test_serving_config_batch(flag: str) -> None:
    env = {
        "SAGEMAKER_BATCH": flag,
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": "50",
        "SAGEMAKER_BATCH_STRATEGY": "SingleRecord",
        "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "3",
    }
    config = ServingConfig.from_env(env, workers=2)
    assert config.batch is True
    assert config.max_body_bytes == 50 * MIB
    assert config.execution_parameters() == {
        "MaxConcurrentTransforms": 3,
        "BatchStrategy": "SINGLE_RECORD",
        "MaxPayloadInMB": 50,
    }


def test_serving_config_bounds() -> None:
    # Payload limit above 100 MB or garbage: the default; 0 (streaming) caps the body at 100 MB.
    assert ServingConfig.from_env({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "500"}, workers=1).max_payload_mb == 6
    assert ServingConfig.from_env({"SAGEMAKER_BATCH_STRATEGY": "bogus"}, workers=1).batch_strategy == "MULTI_RECORD"
    streamed = ServingConfig.from_env({"SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "0"}, workers=1)
    assert streamed.max_body_bytes == 100 * MIB
    # Outside batch transform the real-time limit holds whatever the payload variable says.
    assert ServingConfig.from_env({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "50"}, workers=1).max_body_bytes == 6 * MIB


@pytest.mark.parametrize(
    ("env", "cores", "workers", "threads"),
    [
        ({}, 2, 2, 1),
        ({}, 8, 8, 1),
        ({"MODEL_SERVER_WORKERS": "1"}, 2, 1, 2),
        ({"MODEL_SERVER_WORKERS": "3"}, 8, 3, 2),
        ({"SAGEMAKER_MODEL_SERVER_WORKERS": "4"}, 8, 4, 2),
        ({"MODEL_SERVER_WORKERS": "zero"}, 4, 4, 1),
        ({"MODEL_SERVER_WORKERS": "2", "OBJECT2VEC_THREADS": "3"}, 8, 2, 3),  # the training override too
    ],
)
def test_server_workers_and_threads(env: dict[str, str], cores: int, workers: int, threads: int) -> None:
    settings = ServerSettings.from_env(env, cores=cores)
    assert (settings.workers, settings.threads_per_worker) == (workers, threads)
    assert settings.most_threads_per_worker == max(1, cores // workers)  # a worker's governor goes up to it
    assert settings.workers * settings.threads_per_worker <= max(cores, settings.workers)


def test_server_port_and_timeouts() -> None:
    realtime = ServerSettings.from_env({}, cores=2)
    assert (realtime.port, realtime.timeout_s, realtime.graceful_timeout_s) == (8080, 60, 20)
    batch = ServerSettings.from_env({"SAGEMAKER_BATCH": "True", "SAGEMAKER_BIND_TO_PORT": "9000"}, cores=2)
    assert (batch.port, batch.timeout_s) == (9000, 600)
    assert ServerSettings.from_env({"MODEL_SERVER_TIMEOUT": "5"}, cores=2).graceful_timeout_s == 5


def test_gunicorn_options() -> None:
    options = gunicorn_options(ServerSettings.from_env({"SAGEMAKER_BIND_TO_PORT": "9001"}, cores=2))
    assert options["bind"] == ["0.0.0.0:9001"]
    assert options["workers"] == 2
    assert options["timeout"] == 60
    assert options["graceful_timeout"] < 30  # inside SageMaker's SIGTERM -> SIGKILL window
    assert options["preload_app"] is False


# ---- retrieval (top_k) -----------------------------------------------------------------------


@pytest.fixture()
def retrieval_app(retrieval_model_dir: Any, retrieval_catalogue: Any, tmp_path: Path) -> tuple[Predictor, Any]:
    from object2vec.retrieval.cli import run as run_index
    from object2vec.retrieval.retriever import Retriever

    model_dir = retrieval_model_dir()
    catalogue = tmp_path / "catalogue.jsonl"
    catalogue.write_text("".join(orjson.dumps(item).decode() + "\n" for item in retrieval_catalogue(200)))
    run_index(model_dir, [catalogue], [])
    predictor = Predictor.load(model_dir, device="cpu")
    return predictor, Retriever.load(model_dir, predictor)


def test_top_k_from_accept_answers_neighbours(retrieval_app: tuple[Predictor, Any]) -> None:
    from object2vec.retrieval.protocol import RetrievalParams

    predictor, retriever = retrieval_app
    client = create_app(predictor, ServingConfig(), retriever).test_client()
    body = orjson.dumps({"instances": [{"in0": [1, 2]}, {"in0": [3]}]})
    response = invoke(client, body, Accept="application/json; top_k=4")
    assert response.status_code == 200 and response.mimetype == "application/json", response.data
    predictions = orjson.loads(response.data)["predictions"]
    expected = retriever.neighbors([{"in0": [1, 2]}, {"in0": [3]}], RetrievalParams(top_k=4))
    for prediction, rows in zip(predictions, expected.rows, strict=True):
        assert [n["id"] for n in prediction["neighbors"]] == [f"c{row}" for row in rows.tolist()]


def test_top_k_from_custom_attributes_in_batch_transform_jsonlines(retrieval_app: tuple[Predictor, Any]) -> None:
    predictor, retriever = retrieval_app
    client = create_app(predictor, ServingConfig(batch=True), retriever).test_client()
    body = b'{"in0": [1]}\n\n{"in0": [2, 3]}\n{"in0": [4]}\n'
    response = invoke(
        client, body, "application/jsonlines", **{"X-Amzn-SageMaker-Custom-Attributes": "top_k=3,top_n=200"}
    )
    assert response.status_code == 200 and response.mimetype == "application/jsonlines", response.data
    lines = [orjson.loads(line) for line in response.data.splitlines()]
    assert len(lines) == 3 and all(len(line["neighbors"]) == 3 for line in lines)  # one per record


def test_without_top_k_answers_are_unchanged_by_an_index(retrieval_app: tuple[Predictor, Any]) -> None:
    predictor, retriever = retrieval_app
    body = orjson.dumps({"instances": [{"in0": [1, 2]}, {"in0": [3]}]})
    plain = invoke(create_app(predictor, ServingConfig()).test_client(), body)
    with_index = invoke(create_app(predictor, ServingConfig(), retriever).test_client(), body)
    assert with_index.status_code == 200 and with_index.data == plain.data


def test_top_k_errors_are_json_400s(retrieval_app: tuple[Predictor, Any], client: FlaskClient) -> None:
    predictor, retriever = retrieval_app
    with_index = create_app(predictor, ServingConfig(), retriever).test_client()
    body = orjson.dumps({"instances": [{"in0": [1]}]})
    for app_client, headers, needle in (
        (client, {"Accept": "application/json; top_k=3"}, "has no retrieval index"),
        (with_index, {"Accept": "application/json; top_k=0"}, "top_k=0 (Accept) is not valid"),
        (with_index, {"X-Amzn-SageMaker-Custom-Attributes": "top_k=201"}, "larger than the catalogue of 200"),
    ):
        response = invoke(app_client, body, **headers)
        assert response.status_code == 400 and needle in orjson.loads(response.data)["error"], response.data
    pairs = orjson.dumps({"instances": [{"in0": [1], "in1": [2]}]})
    response = invoke(with_index, pairs, Accept="application/json; top_k=3")
    assert response.status_code == 400 and "not pairs" in orjson.loads(response.data)["error"]
