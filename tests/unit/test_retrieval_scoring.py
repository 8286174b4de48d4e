"""Ranking by the model's score and the search vector: exact fold for affine models, re-rank order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from object2vec.config import Hyperparameters
from object2vec.model.object2vec import Object2VecModel
from object2vec.retrieval.scoring import PairScorer, default_score_class, search_is_exact

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = {"enc0_max_seq_len": 2, "enc0_vocab_size": 10, "enc0_network": "pooled_embedding", "enc_dim": 6, "mlp_dim": 5}


def hp(**values: object) -> Hyperparameters:
    return Hyperparameters.from_dict({**BASE, **values})


def scorer(side: int = 1, seed: int = 0, **values: object) -> PairScorer:
    torch.manual_seed(seed)
    config = hp(**values)
    return PairScorer(Object2VecModel(config).eval(), config, side, np.linspace(-1, 1, 6).astype(np.float32))


@pytest.mark.parametrize(
    ("values", "exact"),
    [
        ({"comparator_list": "hadamard", "mlp_layers": 0}, True),
        ({"comparator_list": "hadamard,concat", "mlp_layers": 3, "mlp_activation": "linear"}, True),
        ({"comparator_list": "concat", "mlp_layers": 0, "output_layer": "mean_squared_error"}, True),
        ({"comparator_list": "hadamard", "mlp_layers": 0, "num_classes": 3}, False),
        ({"comparator_list": "hadamard,abs_diff", "mlp_layers": 0}, False),
        ({"comparator_list": "hadamard", "mlp_layers": 1, "mlp_activation": "relu"}, False),
    ],
)
def test_search_is_exact_when_the_score_is_affine_in_the_candidate(values: dict, exact: bool) -> None:
    assert search_is_exact(hp(**values)) is exact


def test_default_score_class() -> None:
    assert default_score_class(hp()) == 1
    assert default_score_class(hp(num_classes=4)) == 3
    assert default_score_class(hp(num_classes=4, retrieval_score_class=0)) == 0
    assert default_score_class(hp(output_layer="mean_squared_error")) is None


def test_hadamard_without_mlp_folds_the_output_weights_into_the_query() -> None:
    """q = (W1 - W0)[hadamard] * a + (W1 - W0)[concat's b part]: a candidate's own weight is searched too."""
    scoring = scorer(comparator_list="hadamard,concat", mlp_layers=0)
    weights = scoring.model.mlp[-1].weight.detach().numpy()  # (2, 3 * 6): [a*b | a | b]
    margin = weights[1] - weights[0]
    queries = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    expected = margin[:6] * queries + margin[12:]
    np.testing.assert_allclose(scoring.query_vectors(queries, 1), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scoring.query_vectors(queries, 0), -expected, rtol=1e-5, atol=1e-6)


def test_regression_query_vector_and_the_enc0_side() -> None:
    scoring = scorer(side=0, comparator_list="hadamard", mlp_layers=0, output_layer="mean_squared_error")
    weights = scoring.model.mlp[-1].weight.detach().numpy()[0]  # (6,)
    queries = np.ones((2, 6), dtype=np.float32)
    np.testing.assert_allclose(scoring.query_vectors(queries, None), np.tile(weights, (2, 1)), rtol=1e-6)


@pytest.mark.parametrize("values", [{"num_classes": 2}, {"num_classes": 4, "mlp_activation": "relu"}])
def test_rank_orders_by_the_models_probability_and_returns_it(values: dict) -> None:
    scoring = scorer(**values)
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((3, 6)).astype(np.float32)
    candidates = rng.standard_normal((3, 40, 6)).astype(np.float32)
    rows = np.tile(np.arange(40), (3, 1))
    order, scores = scoring.rank(queries, candidates, rows, 1)
    with torch.no_grad():
        a = torch.as_tensor(queries)[:, None, :].expand(3, 40, 6).reshape(-1, 6)
        probabilities = torch.softmax(scoring.model.score_encodings(a, torch.as_tensor(candidates).reshape(-1, 6)), 1)
    expected = probabilities[:, 1].reshape(3, 40).numpy()
    assert order.tolist() == np.argsort(-expected, axis=1, kind="stable").tolist()
    np.testing.assert_allclose(scores, np.take_along_axis(expected, order, axis=1), rtol=1e-6)


def test_rank_puts_empty_slots_last_and_ties_in_catalogue_order() -> None:
    scoring = scorer(output_layer="mean_squared_error")
    query = np.zeros((1, 6), dtype=np.float32)
    same = np.ones((1, 4, 6), dtype=np.float32)  # four identical candidates: equal scores
    order, scores = scoring.rank(query, same, np.array([[9, -1, 3, 5]]), None)
    assert np.array([[9, -1, 3, 5]])[0, order[0]].tolist() == [3, 5, 9, -1]
    assert len(set(scores[0, :3].tolist())) == 1


def test_confident_matches_keep_their_order_past_float32_saturation() -> None:
    """Two candidates whose P(1) both round to 1.0 in float32 still come in the order of their margins."""
    scoring = scorer(comparator_list="hadamard", mlp_layers=0, num_classes=2)
    with torch.no_grad():
        scoring.model.mlp[-1].weight.zero_()
        scoring.model.mlp[-1].weight[1, 0] = 1.0  # margin = a0 * b0
        scoring.model.mlp[-1].bias.zero_()
    query = np.zeros((1, 6), dtype=np.float32)
    query[0, 0] = 1.0
    candidates = np.zeros((1, 2, 6), dtype=np.float32)
    candidates[0, :, 0] = [40.0, 60.0]
    order, scores = scoring.rank(query, candidates, np.array([[0, 1]]), 1)
    assert scores[0].tolist() == [1.0, 1.0] and order[0].tolist() == [1, 0]
