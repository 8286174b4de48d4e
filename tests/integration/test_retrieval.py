"""Retrieval through the real programs: `train` with a candidates channel writes the index, `serve`
answers top_k (Accept parameter, custom attributes, batch transform) exactly as brute-force pair
scoring through the same server, `index` re-indexes a trained model, and bad catalogues fail early."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest

from .jobs import TIMEOUT, VOCAB, jsonl, make_job, run_train, standard_channels, train_env
from .test_serve import Server, start_server, stop_server

CATALOGUE = [{"id": f"item{i}", "in1": [i % VOCAB, (3 * i + 1) % VOCAB]} for i in range(60)]
QUERIES = [{"in0": [q % VOCAB, (5 * q + 2) % VOCAB]} for q in range(8)]


def job_with_catalogue(base: Path, epochs: int = 4, **modes: str) -> Path:
    """The standard small job plus a candidates channel: half plain, half gzip in a nested folder."""
    channels = {**standard_channels(), "candidates": None if modes.get("candidates") == "Pipe" else CATALOGUE[:30]}
    make_job(base, channels, {"epochs": str(epochs)}, modes=modes or None)
    if channels["candidates"] is not None:
        nested = base / "input" / "data" / "candidates" / "part-2"
        nested.mkdir()
        (nested / "more.jsonl.gz").write_bytes(gzip.compress(jsonl(CATALOGUE[30:])))
    return base


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = job_with_catalogue(tmp_path_factory.mktemp("retrieval") / "opt" / "ml")
    code, log = run_train(base)
    assert code == 0, log
    assert "Channel candidates: 60 candidates (in1)" in log and "Retrieval index written to" in log, log
    return base


@pytest.fixture(scope="module")
def server(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(trained, tmp_path_factory.mktemp("logs") / "serve.log", MODEL_SERVER_WORKERS="2")
    yield running
    stop_server(running)


def brute_force(server: Server, query: dict) -> tuple[list[str], np.ndarray]:
    """Every candidate scored as a pair by the same server: ids and P(class 1), best first."""
    pairs = [{"in0": query["in0"], "in1": item["in1"]} for item in CATALOGUE]
    response = server.post(orjson.dumps({"instances": pairs}))
    assert response.status_code == 200, response.text
    scores = np.array([p["scores"][1] for p in response.json()["predictions"]], dtype=np.float32)
    order = np.argsort(-scores, kind="stable")
    return [CATALOGUE[i]["id"] for i in order], scores[order]


def test_train_writes_the_index_into_the_model_dir(trained: Path) -> None:
    assert (trained / "model" / "retrieval.index").stat().st_size > 0
    assert (trained / "output" / "success").exists()


def test_top_k_from_the_accept_header_equals_brute_force_pair_scoring(server: Server) -> None:
    response = server.post(orjson.dumps({"instances": QUERIES}), Accept="application/json; top_k=10")
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == len(QUERIES)
    for query, prediction in zip(QUERIES, predictions, strict=True):
        ids, scores = brute_force(server, query)
        assert [n["id"] for n in prediction["neighbors"]] == ids[:10]
        np.testing.assert_allclose([n["score"] for n in prediction["neighbors"]], scores[:10], rtol=1e-5, atol=1e-6)


def test_top_k_from_custom_attributes_in_json_lines(server: Server) -> None:
    body = b"".join(orjson.dumps(query) + b"\n" for query in QUERIES[:3])
    response = server.post(
        body,
        "application/jsonlines",
        Accept="application/jsonlines",
        **{"X-Amzn-SageMaker-Custom-Attributes": "top_k=5, top_n=60"},
    )
    assert response.status_code == 200, response.text
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [len(line["neighbors"]) for line in lines] == [5, 5, 5]
    assert [n["id"] for n in lines[0]["neighbors"]] == brute_force(server, QUERIES[0])[0][:5]


def test_without_top_k_the_answer_is_the_usual_embedding(server: Server) -> None:
    response = server.post(orjson.dumps({"instances": QUERIES[:2]}))
    assert response.status_code == 200 and set(response.json()["predictions"][0]) == {"embeddings"}


@pytest.mark.parametrize(
    ("instances", "headers", "needle"),
    [
        (QUERIES[:1], {"Accept": "application/json; top_k=0"}, "top_k=0 (Accept) is not valid"),
        (QUERIES[:1], {"Accept": "application/json; top_k=61"}, "larger than the catalogue of 60"),
        ([{"in0": [1], "in1": [2]}], {"Accept": "application/json; top_k=3"}, "not pairs"),
    ],
)
def test_errors_are_400s(server: Server, instances: list, headers: dict, needle: str) -> None:
    response = server.post(orjson.dumps({"instances": instances}), **headers)
    assert response.status_code == 400 and needle in response.json()["error"], response.text


def test_batch_transform_one_neighbours_line_per_record(trained: Path, tmp_path: Path) -> None:
    batch = start_server(
        trained,
        tmp_path / "batch.log",
        SAGEMAKER_BATCH="true",
        SAGEMAKER_MAX_PAYLOAD_IN_MB="6",
        MODEL_SERVER_WORKERS="1",
    )
    try:
        body = b"".join(orjson.dumps(query) + b"\n" for query in QUERIES)
        response = batch.post(body, "application/jsonlines", Accept="application/jsonlines; top_k=3")
        assert response.status_code == 200, response.text
        lines = response.text.splitlines()
        assert len(lines) == len(QUERIES) and all(len(json.loads(line)["neighbors"]) == 3 for line in lines)
    finally:
        stop_server(batch)


def test_reindexing_a_trained_model(trained: Path, tmp_path: Path) -> None:
    """`index` on a copy of the model: the new catalogue is served; the copy's model is unchanged."""
    model = tmp_path / "opt" / "ml" / "model"
    model.mkdir(parents=True)
    for name in ("model.safetensors", "model_config.json", "retrieval.index"):
        (model / name).write_bytes((trained / "model" / name).read_bytes())
    catalogue = tmp_path / "new.jsonl"
    catalogue.write_bytes(jsonl([{"id": 1000 + i, "in1": [i]} for i in range(VOCAB)]))
    result = subprocess.run(
        [sys.executable, "-m", "object2vec", "index", "--model-dir", str(model), str(catalogue)],
        env=train_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Indexed {VOCAB} candidates from 1 file(s)" in result.stdout
    assert (model / "model.safetensors").read_bytes() == (trained / "model" / "model.safetensors").read_bytes()
    running = start_server(tmp_path / "opt" / "ml", tmp_path / "serve.log", MODEL_SERVER_WORKERS="1")
    try:
        response = running.post(orjson.dumps({"instances": QUERIES[:1]}), Accept="application/json; top_k=3")
        assert response.status_code == 200, response.text
        assert all(n["id"] >= 1000 for n in response.json()["predictions"][0]["neighbors"])  # integer ids
    finally:
        stop_server(running)


def test_a_bad_catalogue_fails_before_training(tmp_path: Path) -> None:
    base = job_with_catalogue(tmp_path / "opt" / "ml")
    path = base / "input" / "data" / "candidates" / "candidates.jsonl"
    path.write_bytes(path.read_bytes() + b'{"id": "item0", "in1": [1]}\n')
    code, log = run_train(base)
    failure = (base / "output" / "failure").read_text()
    assert code == 1 and failure.startswith("ClientError: channel candidates, file candidates.jsonl, line 31"), failure
    assert 'repeats the id "item0" of line 1' in failure
    assert "#quality_metric" not in log  # no epoch ran


def test_candidates_channel_in_pipe_mode(tmp_path: Path) -> None:
    base = job_with_catalogue(tmp_path / "opt" / "ml", epochs=1, candidates="Pipe")
    fifo = base / "input" / "data" / "candidates_0"
    os.mkfifo(fifo)

    def write() -> None:
        with open(fifo, "wb") as pipe:  # blocks until the job opens it
            pipe.write(gzip.compress(jsonl(CATALOGUE)))

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    code, log = run_train(base)
    writer.join(timeout=10)
    assert code == 0, log
    assert "Channel candidates: 60 candidates (in1)" in log and (base / "model" / "retrieval.index").exists()


def test_items_described_by_their_raters_from_prepare_to_top_k(tmp_path: Path) -> None:
    """`prepare ratings --item-raters`: its training pairs train a model, its candidates.jsonl (every item
    with its rater tokens) becomes the index, and a user's top-k equals scoring every (user, item) pair
    with the candidates' in1 through the same server."""
    rng = np.random.default_rng(0)
    users, items = rng.normal(size=(31, 2)), rng.normal(size=(21, 2))
    rows = [
        f"{u},{i},{int(np.clip(np.rint(3 + users[u] @ items[i]), 1, 5))}\n"
        for u in range(1, 31)
        for i in range(1, 21)
        if rng.random() < 0.6
    ]
    (tmp_path / "ratings.csv").write_text("".join(rows))
    data = tmp_path / "data"
    prepared = subprocess.run(
        [sys.executable, "-m", "object2vec", "prepare", "ratings", str(tmp_path / "ratings.csv")]
        + ["--output-dir", str(data), "--item-raters", "8", "--validation-fraction", "0.1"],
        env=train_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert prepared.returncode == 0, prepared.stderr
    report = json.loads(prepared.stdout)
    assert report["hyperparameters"]["enc1_max_seq_len"] == 9
    catalogue = [json.loads(line) for line in (data / "candidates.jsonl").read_text().splitlines()]
    assert len(catalogue) == 20 and all(len(c["in1"]) > 1 for c in catalogue)

    base = tmp_path / "opt" / "ml"
    channels = {
        name: [json.loads(line) for line in (data / f"{name}.jsonl").read_text().splitlines()]
        for name in ("train", "validation", "test")
    }
    hyperparameters = {
        **{key: str(value) for key, value in report["hyperparameters"].items()},
        "enc1_token_embedding_dim": "8",
        "mlp_layers": "0",
        "comparator_list": "hadamard",
        "epochs": "3",
    }
    make_job(base, {**channels, "candidates": catalogue}, hyperparameters)
    code, log = run_train(base)
    assert code == 0, log
    assert "Channel candidates: 20 candidates (in1)" in log and "test mean_squared_error" in log, log

    running = start_server(base, tmp_path / "serve.log")
    try:
        query = {"in0": [3]}
        response = running.post(orjson.dumps({"instances": [query]}), Accept="application/json; top_k=5")
        assert response.status_code == 200, response.text
        neighbours = response.json()["predictions"][0]["neighbors"]
        pairs = [{"in0": query["in0"], "in1": item["in1"]} for item in catalogue]
        scored = running.post(orjson.dumps({"instances": pairs}))
        assert scored.status_code == 200, scored.text
        scores = np.array([p["scores"][0] for p in scored.json()["predictions"]], dtype=np.float32)
        best = np.argsort(-scores, kind="stable")[:5]
        assert [n["id"] for n in neighbours] == [catalogue[i]["id"] for i in best]
        np.testing.assert_allclose([n["score"] for n in neighbours], scores[best], rtol=1e-5, atol=1e-5)
    finally:
        stop_server(running)
