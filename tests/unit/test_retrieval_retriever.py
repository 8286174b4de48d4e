"""Retriever: top-k answers equal brute-force pair scoring; approximate search finds the exact top-10;
request errors; an index is refused for another model or when damaged."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from object2vec.errors import ClientError, RequestError
from object2vec.retrieval import retriever as retriever_module
from object2vec.retrieval.cli import run as run_index
from object2vec.retrieval.index_file import INDEX_FILE
from object2vec.retrieval.protocol import RetrievalParams
from object2vec.retrieval.retriever import Retriever
from object2vec.serving.predictor import Predictor

pytestmark = pytest.mark.usefixtures("one_thread")

# Models whose search vector orders the catalogue exactly (hadamard/concat, affine MLP, <= 2 classes),
# and one whose does not (abs_diff, relu, 3 classes): exact for it only when every candidate is re-ranked.
LINEAR_REGRESSION = {"comparator_list": "hadamard", "mlp_layers": 0, "output_layer": "mean_squared_error"}
LINEAR_SOFTMAX = {"comparator_list": "hadamard,concat", "mlp_layers": 2, "mlp_activation": "linear"}
NONLINEAR_SOFTMAX = {"mlp_layers": 1, "mlp_activation": "relu", "num_classes": 3}


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def indexed(model_dir: Path, records: list[dict[str, Any]], *settings: str) -> Retriever:
    run_index(model_dir, [write_jsonl(model_dir.parent / f"{model_dir.name}.jsonl", records)], list(settings))
    retriever = Retriever.load(model_dir, Predictor.load(model_dir, device="cpu"))
    assert retriever is not None
    return retriever


def brute_force(retriever: Retriever, queries: list[dict], catalogue: list[dict], score_class: int | None) -> tuple:
    """Every (query, candidate) pair scored by the predictor, as /invocations scores pairs: (ids, scores)."""
    pairs = [{"in0": query["in0"], "in1": item["in1"]} for query in queries for item in catalogue]
    scores = retriever.predictor.predict(pairs).values  # (Q * N, output_dim)
    column = 0 if score_class is None else score_class
    scores = scores[:, column].reshape(len(queries), len(catalogue))
    order = np.argsort(-scores, axis=1, kind="stable")  # ties keep catalogue order, as the retriever does
    return order, np.take_along_axis(scores, order, axis=1)


@pytest.mark.parametrize(
    ("hyperparameters", "settings", "asked_class", "ranked_class"),
    [
        (LINEAR_REGRESSION, (), None, None),
        ({**LINEAR_SOFTMAX, "num_classes": 2}, (), None, 1),  # the positive class by default
        ({**LINEAR_SOFTMAX, "num_classes": 2}, (), 0, 0),  # the other one, asked for by the request
        (NONLINEAR_SOFTMAX, ("retrieval_top_n=3000",), None, 2),  # every candidate re-ranked
        (NONLINEAR_SOFTMAX, ("retrieval_top_n=3000", "retrieval_score_class=0"), None, 0),
    ],
    ids=["regression", "softmax", "softmax-class-0", "nonlinear-3-classes", "nonlinear-class-0-by-default"],
)
def test_exact_search_equals_brute_force_pair_scoring(
    retrieval_model_dir, retrieval_catalogue, retrieval_queries, hyperparameters, settings, asked_class, ranked_class
) -> None:
    catalogue = retrieval_catalogue(3000)  # more than the default re-rank depth of 100
    retriever = indexed(retrieval_model_dir(seed=1, **hyperparameters), catalogue, *settings)
    assert retriever.plan.kind == "exact"
    queries = retrieval_queries(25)
    found = retriever.neighbors(queries, RetrievalParams(top_k=20, score_class=asked_class))
    order, scores = brute_force(retriever, queries, catalogue, ranked_class)
    for query in range(len(queries)):
        assert found.rows[query].tolist() == order[query, :20].tolist()
        np.testing.assert_allclose(found.scores[query], scores[query, :20], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_approximate_search_and_rerank_find_the_exact_top_10_in_a_catalogue_of_100k(tmp_path: Path) -> None:
    """IVF over 100k candidates whose 64-d encodings (the benchmark's enc_dim) form 1,000 clusters (as
    learned embeddings do): the re-ranked top-10 is the brute-force top-10 for at least 99% of 200
    queries. (With 16-d encodings the default nprobe finds it for 97-99.5% of them, depending on the
    k-means sample: benchmarks/results_notes.md, "Retrieval".)"""
    from object2vec.config import Hyperparameters
    from object2vec.model.io import save_model
    from object2vec.model.object2vec import Object2VecModel

    count, dim, users = 100_000, 64, 200
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((1000, dim))
    items = centres[rng.integers(0, 1000, count)] + 0.5 * rng.standard_normal((count, dim))  # (N, d)
    queries = centres[rng.integers(0, 1000, users)] + 0.5 * rng.standard_normal((users, dim))  # (Q, d)
    hp = Hyperparameters.from_dict(
        {
            "enc0_network": "pooled_embedding",
            "enc1_network": "pooled_embedding",
            "enc0_vocab_size": users,
            "enc1_vocab_size": count,
            "enc0_max_seq_len": 1,
            "enc1_max_seq_len": 1,
            "enc0_token_embedding_dim": dim,
            "enc1_token_embedding_dim": dim,
            "enc_dim": dim,
            **LINEAR_REGRESSION,
        }
    )
    model = Object2VecModel(hp)
    with torch.no_grad():  # encodings = the synthetic vectors; the output layer weighs each dimension
        for encoder, table in zip(model.encoders, (queries, items), strict=True):
            encoder.embedding.weight.copy_(torch.as_tensor(table))
            encoder.project.weight.copy_(torch.eye(dim))
            encoder.project.bias.zero_()
        model.mlp[-1].weight.copy_(torch.as_tensor(rng.uniform(0.5, 1.5, (1, dim))))
    save_model(model, tmp_path / "model")
    retriever = indexed(tmp_path / "model", [{"id": i, "in1": [i]} for i in range(count)])
    assert retriever.plan.kind == "ivf" and retriever.plan.nlist == round(2 * math.sqrt(count))
    found = retriever.neighbors([{"in0": [user]} for user in range(users)], RetrievalParams(top_k=10))

    weights = model.mlp[-1].weight.detach().double().numpy()[0]  # (d,)
    scores = (queries * weights) @ items.T  # (Q, N) float64
    best = np.argpartition(-scores, 10, axis=1)[:, :10]  # (Q, 10): the top 10, unordered
    exact = np.take_along_axis(best, np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1), axis=1)
    hits = [found.rows[user].tolist() == exact[user].tolist() for user in range(users)]
    assert np.mean(hits) >= 0.99, f"exact top-10 found for {np.mean(hits):.1%} of the queries"


def test_exclude_self_drops_the_querys_own_id(retrieval_model_dir) -> None:
    """Same-side similarity (enc1_network=enc0): a query that is in the catalogue is its own best match."""
    model_dir = retrieval_model_dir(
        seed=2,
        enc1_network="enc0",
        enc0_vocab_size=500,
        comparator_list="hadamard",
        mlp_layers=0,
        output_layer="mean_squared_error",
    )
    catalogue = [{"id": f"s{i}", "in1": [i, (i * 13 + 1) % 500]} for i in range(500)]
    retriever = indexed(model_dir, catalogue)
    queries = [{"id": item["id"], "in0": item["in1"]} for item in catalogue[:20]]
    plain = retriever.neighbors(queries, RetrievalParams(top_k=5))
    excluded = retriever.neighbors(queries, RetrievalParams(top_k=5, exclude_self=True))
    for query, with_self, without in zip(queries, plain.rows, excluded.rows, strict=True):
        ids = [retriever.id_json(int(row)).decode() for row in without]
        assert json.dumps(query["id"]) not in ids and len(ids) == 5
        kept = [row for row in with_self.tolist() if retriever.id_json(row) != json.dumps(query["id"]).encode()]
        assert without.tolist()[: len(kept)] == kept  # the same order, the own id taken out


def test_small_catalogue_is_scored_exhaustively_and_top_k_may_equal_it(
    retrieval_model_dir, retrieval_catalogue, retrieval_queries
) -> None:
    retriever = indexed(retrieval_model_dir(**NONLINEAR_SOFTMAX), retrieval_catalogue(40))
    found = retriever.neighbors(retrieval_queries(3), RetrievalParams(top_k=40))
    assert all(sorted(rows.tolist()) == list(range(40)) for rows in found.rows)
    assert all((np.diff(scores) <= 1e-7).all() for scores in found.scores)  # best first


def test_empty_request_and_integer_ids(retrieval_model_dir) -> None:
    retriever = indexed(retrieval_model_dir(), [{"id": 7 * i, "in1": [i]} for i in range(10)])
    assert retriever.neighbors([], RetrievalParams(top_k=3)).rows == []
    found = retriever.neighbors([{"in0": [1]}], RetrievalParams(top_k=3))
    assert all(int(retriever.id_json(int(row))) % 7 == 0 for row in found.rows[0])


@pytest.mark.parametrize(
    ("instances", "params", "status", "needle"),
    [
        ([{"in0": [1], "in1": [2]}], RetrievalParams(top_k=3), 400, "not pairs"),
        ([{"in1": [2]}], RetrievalParams(top_k=3), 400, 'send {"in0": [...]}'),
        ([{"in0": [1]}], RetrievalParams(top_k=51), 400, "larger than the catalogue of 50"),
        ([{"in0": [1]}], RetrievalParams(top_k=20, top_n=10), 400, "top_n=10 is smaller than top_k=20"),
        ([{"in0": [1]}], RetrievalParams(top_k=3, score_class=2), 400, "score_class=2 is not a class"),
        ([{"in0": [1]}], RetrievalParams(top_k=3, exclude_self=True), 400, 'own candidate "id"'),
        ([{"in0": [99]}], RetrievalParams(top_k=3), 400, 'Vocab id "99"'),  # checked like any request
        ([{"in0": [1]}, {"in0": [1], "in1": [1]}], RetrievalParams(top_k=3), 400, "instance 1"),
    ],
)
def test_request_errors(retrieval_model_dir, retrieval_catalogue, instances: list, params, status: int, needle: str):
    retriever = indexed(retrieval_model_dir(), retrieval_catalogue(50))
    with pytest.raises(RequestError) as caught:
        retriever.neighbors(instances, params)
    assert caught.value.status_code == status and needle in caught.value.message, caught.value.message


def test_score_class_on_a_regression_model_is_an_error(retrieval_model_dir, retrieval_catalogue) -> None:
    retriever = indexed(retrieval_model_dir(output_layer="mean_squared_error"), retrieval_catalogue(20))
    with pytest.raises(RequestError, match="regression"):
        retriever.neighbors([{"in0": [1]}], RetrievalParams(top_k=3, score_class=0))


def test_no_index_loads_as_none(retrieval_model_dir) -> None:
    model_dir = retrieval_model_dir()
    assert Retriever.load(model_dir, Predictor.load(model_dir, device="cpu")) is None


def test_an_index_of_another_model_is_refused(retrieval_model_dir, retrieval_catalogue) -> None:
    first, second = retrieval_model_dir(seed=1), retrieval_model_dir(seed=2)
    indexed(first, retrieval_catalogue(30))
    (second / INDEX_FILE).write_bytes((first / INDEX_FILE).read_bytes())
    with pytest.raises(ClientError, match="built with another model"):
        Retriever.load(second, Predictor.load(second, device="cpu"))


def test_an_index_of_another_enc_dim_is_refused(retrieval_model_dir, retrieval_catalogue) -> None:
    first, second = retrieval_model_dir(), retrieval_model_dir(enc_dim=12)
    indexed(first, retrieval_catalogue(30))
    (second / INDEX_FILE).write_bytes((first / INDEX_FILE).read_bytes())
    with pytest.raises(ClientError, match="8-d encodings but the model's enc_dim is 12"):
        Retriever.load(second, Predictor.load(second, device="cpu"))


def test_a_damaged_faiss_section_is_refused_before_faiss_reads_it(retrieval_model_dir, retrieval_catalogue) -> None:
    model_dir = retrieval_model_dir()
    retriever = indexed(model_dir, retrieval_catalogue(30))
    offset = retriever.file.header["sections"]["faiss"]["offset"]
    del retriever
    data = bytearray((model_dir / INDEX_FILE).read_bytes())
    data[offset + 8 : offset + 16] = (10**9).to_bytes(8, "little")  # faiss's vector count
    (model_dir / INDEX_FILE).write_bytes(bytes(data))
    with pytest.raises(ClientError, match="with 1000000000 vectors"):
        Retriever.load(model_dir, Predictor.load(model_dir, device="cpu"))


def test_faiss_follows_the_thread_governor(retrieval_model_dir, monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir = retrieval_model_dir(seed=2, enc0_vocab_size=500)
    retriever = indexed(model_dir, [{"id": f"s{i}", "in1": [i, (i * 7 + 1) % 500]} for i in range(200)])
    set_to: list[int] = []
    monkeypatch.setattr(retriever_module.faiss, "omp_set_num_threads", set_to.append)

    class Governor:  # threads.ThreadGovernor as a worker has it, after re-counting down to 1
        threads = 1

        def tick(self) -> None:
            pass

    retriever.predictor.governor = Governor()  # type: ignore[assignment]
    retriever.neighbors([{"in0": [1, 2]}], RetrievalParams(top_k=3))
    assert set_to == [1]
