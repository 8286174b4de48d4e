from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from object2vec.data.batching import Tokens
from object2vec.errors import AlgorithmError, RequestError
from object2vec.serving import predictor as predictor_module
from object2vec.serving.predictor import MAX_SEQUENCE_IDS, Predictor

# The sizes of the conftest models (serving_hyperparameters); checked by test_fixture_sizes.
SERVING_ENC0_VOCAB, SERVING_ENC1_VOCAB = 11000, 4000
SERVING_ENC0_MAX_LEN, SERVING_ENC1_MAX_LEN = 20, 8
SERVING_ENC_DIM, SERVING_NUM_CLASSES = 16, 3


@pytest.fixture(scope="module")
def softmax(serving_base_dirs: dict[str, Path]) -> Predictor:
    return Predictor.load(serving_base_dirs["softmax"] / "model", device="cpu")


@pytest.fixture(scope="module")
def regression(serving_base_dirs: dict[str, Path]) -> Predictor:
    return Predictor.load(serving_base_dirs["regression"] / "model", device="cpu")


def reference_encode(predictor: Predictor, side: int, sequence: list[int]) -> np.ndarray:
    """The model called directly on one sequence, truncated like training."""
    limit = predictor.hp.encoder(side).max_seq_len
    with torch.inference_mode():
        return predictor.model.encode(side, Tokens.from_lists([sequence[:limit]]))[0].numpy()


def reference_scores(predictor: Predictor, in0: list[int], in1: list[int]) -> np.ndarray:
    t0 = Tokens.from_lists([in0[: predictor.hp.enc0.max_seq_len]])
    t1 = Tokens.from_lists([in1[: predictor.hp.enc1.max_seq_len]])
    with torch.inference_mode():
        return predictor.model.predict(t0, t1)[0].numpy()


def random_instances(count: int, keys: tuple[str, ...], seed: int = 0, longest: int = 30) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    vocab = {"in0": SERVING_ENC0_VOCAB, "in1": SERVING_ENC1_VOCAB}
    return [
        {key: rng.integers(0, vocab[key], size=int(rng.integers(0, longest))).tolist() for key in keys}
        for _ in range(count)
    ]


def test_fixture_sizes(softmax: Predictor, regression: Predictor) -> None:
    for predictor in (softmax, regression):
        hp = predictor.hp
        assert (hp.enc0.vocab_size, hp.enc1.vocab_size) == (SERVING_ENC0_VOCAB, SERVING_ENC1_VOCAB)
        assert (hp.enc0.max_seq_len, hp.enc1.max_seq_len) == (SERVING_ENC0_MAX_LEN, SERVING_ENC1_MAX_LEN)
        assert hp.enc_dim == SERVING_ENC_DIM
    assert softmax.hp.num_classes == SERVING_NUM_CLASSES


# --- modes and values --------------------------------------------------------------------------


def test_pair_scores_are_probabilities_matching_the_model(softmax: Predictor) -> None:
    instances = random_instances(50, ("in0", "in1"))
    result = softmax.predict(instances)
    assert result.key == "scores"
    assert result.values.shape == (50, SERVING_NUM_CLASSES)
    assert result.values.dtype == np.float32
    assert np.allclose(result.values.sum(axis=1), 1.0, atol=1e-5)
    assert result.labels is not None and np.array_equal(result.labels, result.values.argmax(axis=1))
    for row, instance in zip(result.values, instances, strict=True):
        assert np.allclose(row, reference_scores(softmax, instance["in0"], instance["in1"]), atol=1e-5)


def test_regression_scores_are_one_value(regression: Predictor) -> None:
    instances = random_instances(20, ("in0", "in1"), seed=1)
    result = regression.predict(instances)
    assert result.key == "scores"
    assert result.values.shape == (20, 1)
    assert result.labels is None
    for row, instance in zip(result.values, instances, strict=True):
        assert np.allclose(row, reference_scores(regression, instance["in0"], instance["in1"]), atol=1e-5)


@pytest.mark.parametrize(("key", "side"), [("in0", 0), ("in1", 1)])
@pytest.mark.parametrize("which", ["softmax", "regression"])
def test_embeddings_come_from_the_named_encoder(
    key: str, side: int, which: str, softmax: Predictor, regression: Predictor
) -> None:
    predictor = softmax if which == "softmax" else regression
    instances = random_instances(30, (key,), seed=side)
    result = predictor.predict(instances)
    assert result.key == "embeddings"
    assert result.values.shape == (30, SERVING_ENC_DIM)
    assert result.labels is None
    for row, instance in zip(result.values, instances, strict=True):
        assert np.allclose(row, reference_encode(predictor, side, instance[key]), atol=1e-5)
    # The other encoder gives other vectors for the same ids (the paths are really distinct).
    other = predictor.predict([{("in1" if key == "in0" else "in0"): [1, 2, 3]}]).values[0]
    assert not np.allclose(predictor.predict([{key: [1, 2, 3]}]).values[0], other)


@pytest.mark.parametrize("which", ["softmax", "regression"])
def test_repeated_sequences_are_encoded_once_with_the_same_scores(
    which: str, softmax: Predictor, regression: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A document against every label (3 x 5 pairs): each distinct sequence goes through its
    encoder once, and every pair scores as it does alone."""
    predictor = {"softmax": softmax, "regression": regression}[which]
    documents = [[1, 2, 3, 4], [7, 7], [900, 3, 5, 8, 13, 21, 34]]
    labels = [[1], [2, 3], [3999], [], [5, 6, 7, 8, 9]]
    instances = [{"in0": document, "in1": label} for document in documents for label in labels]
    encoded = [0, 0]
    encode = predictor.model.encode

    def counting_encode(side: int, tokens: Tokens) -> torch.Tensor:
        encoded[side] += len(tokens)
        return encode(side, tokens)

    monkeypatch.setattr(predictor.model, "encode", counting_encode)
    result = predictor.predict(instances)
    assert encoded == [len(documents), len(labels)]
    for row, instance in zip(result.values, instances, strict=True):
        assert np.allclose(row, reference_scores(predictor, instance["in0"], instance["in1"]), atol=1e-5)


def test_unknown_keys_are_ignored(softmax: Predictor) -> None:
    plain = softmax.predict([{"in0": [1, 2]}]).values
    assert np.array_equal(softmax.predict([{"in0": [1, 2], "label": 1, "id": "x"}]).values, plain)


def test_order_is_kept_across_chunks(softmax: Predictor, monkeypatch: pytest.MonkeyPatch) -> None:
    instances = random_instances(300, ("in0", "in1"), seed=3, longest=60)
    whole = softmax.predict(instances).values
    monkeypatch.setattr(predictor_module, "CHUNK_ROWS", 7)
    monkeypatch.setattr(predictor_module, "CHUNK_ELEMENTS", 500)
    chunked = softmax.predict(instances).values
    assert np.allclose(whole, chunked, atol=1e-5)
    singles = np.concatenate([softmax.predict([instance]).values for instance in instances[:20]])
    assert np.allclose(whole[:20], singles, atol=1e-5)


def test_long_sequences_are_truncated_like_training(softmax: Predictor) -> None:
    long0 = list(range(1, SERVING_ENC0_MAX_LEN + 40))
    long1 = list(range(1, SERVING_ENC1_MAX_LEN + 40))
    truncated = softmax.predict([{"in0": long0[:SERVING_ENC0_MAX_LEN], "in1": long1[:SERVING_ENC1_MAX_LEN]}])
    assert np.allclose(softmax.predict([{"in0": long0, "in1": long1}]).values, truncated.values)


def test_infer_max_seqlens_lowers_truncation(softmax: Predictor) -> None:
    ids = list(range(1, 15))
    lowered = softmax.predict([{"in0": ids}], max_seqlens=(5, 5000)).values
    assert np.allclose(lowered, softmax.predict([{"in0": ids[:5]}]).values)
    # Never above the trained max_seq_len.
    raised = softmax.predict([{"in0": ids * 3}], max_seqlens=(5000, 5000)).values
    assert np.allclose(raised, softmax.predict([{"in0": (ids * 3)[:SERVING_ENC0_MAX_LEN]}]).values)


@pytest.mark.parametrize("which", ["softmax", "regression"])
def test_empty_sequences_are_accepted(which: str, softmax: Predictor, regression: Predictor) -> None:
    predictor = softmax if which == "softmax" else regression
    result = predictor.predict([{"in0": [], "in1": []}, {"in0": [1], "in1": []}])
    assert np.isfinite(result.values).all()
    embedding = predictor.predict([{"in1": []}]).values[0]
    assert np.allclose(embedding, reference_encode(predictor, 1, []), atol=1e-6)


def test_empty_request_gives_empty_prediction(softmax: Predictor) -> None:
    assert len(softmax.predict([])) == 0


def test_boolean_check_can_be_skipped(softmax: Predictor) -> None:
    # The codec only skips it when the body holds no true/false.
    assert len(softmax.predict([{"in0": [1, 2]}], check_booleans=False)) == 1


# --- errors ------------------------------------------------------------------------------------

NESTED: list[Any] = [1]
for _ in range(900):  # deeper than numpy's 64 dimensions, within orjson's 1024 levels
    NESTED = [NESTED]
VOCAB0 = f'Vocab id "{SERVING_ENC0_VOCAB}" is not less than vocab_size={SERVING_ENC0_VOCAB}'


@pytest.mark.parametrize(
    ("instances", "status", "message"),
    [
        ([{"in0": [1], "in1": [2]}, {"in0": [1]}], 400, "instances mix modes: instance 0 .* instance 1"),
        ([{"in0": [1]}, {"in1": [1]}], 400, "mix modes"),
        ([{"in0": [1]}, 7], 400, "instance 1: must be a JSON object"),
        ([{"in0": [1]}, {"x": [1]}], 400, 'instance 1: has neither "in0" nor "in1"'),
        ([{"in0": [1]}, {"in0": "1 2"}], 400, 'instance 1, field "in0": must be a list'),
        ([{"in0": None}], 400, 'instance 0, field "in0": must be a list'),
        ([{"in0": [1], "in1": [2]}, {"in0": [1], "in1": [2.5]}], 400, 'instance 1, field "in1": must hold integer'),
        ([{"in0": [1, "2"]}], 400, "instance 0, field \"in0\": must hold integer token ids only, found '2'"),
        ([{"in0": [1, None]}], 400, "found null"),
        ([{"in0": [[1, 2]]}], 400, "found \\[1, 2\\]"),
        ([{"in0": [1, True]}], 400, "found true"),
        ([{"in0": [False]}], 400, "found false"),
        ([{"in0": [3]}, {"in0": [5, SERVING_ENC0_VOCAB]}], 400, VOCAB0 + ' \\(instance 1, field "in0"\\)'),
        ([{"in1": [SERVING_ENC1_VOCAB]}], 400, f'vocab_size={SERVING_ENC1_VOCAB} \\(instance 0, field "in1"\\)'),
        ([{"in0": [1], "in1": [-3]}], 400, 'Vocab id "-3" is negative \\(instance 0, field "in1"\\)'),
        ([{"in0": [2**80]}], 400, f'Vocab id "{2**80}" is not less than'),
        ([{"in0": [-(2**80)]}], 400, "is negative"),
        # orjson reads integers beyond 64 bits as floats: still reported as an id, not as 1.8e+19
        ([{"in0": [float(2**64)]}], 400, f'Vocab id "about {2**64}" is not less than'),
        # ragged and nested lists (numpy cannot make an array of them)
        ([{"in0": [1, [2]]}], 400, 'instance 0, field "in0": must hold integer token ids only, found \\[2\\]'),
        ([{"in0": [1]}, {"in0": [[1], [1, 2]]}], 400, 'instance 1, field "in0": .* found \\[1\\]'),
        ([{"in0": [None, [1]]}], 400, "found null"),
        ([{"in0": [1.5, [1]]}], 400, "found 1.5"),
        ([{"in0": [NESTED]}], 400, "found \\[\\[\\[\\[\\.\\.\\.\\]\\]\\]\\]"),
        ([{"in0": [1]}, {"in0": [1] * (MAX_SEQUENCE_IDS + 1)}], 413, 'instance 1, field "in0": has 100001 ids'),
    ],
)
def test_bad_instances(softmax: Predictor, instances: list[Any], status: int, message: str) -> None:
    with pytest.raises(RequestError, match=message) as excinfo:
        softmax.predict(instances)
    assert excinfo.value.status_code == status


def test_vocab_message_matches_training_wording(softmax: Predictor) -> None:
    with pytest.raises(RequestError) as excinfo:
        softmax.predict([{"in0": [SERVING_ENC0_VOCAB + 5]}])
    assert f'Inconsistent vocab for in0 found. Vocab id "{SERVING_ENC0_VOCAB + 5}" is not less than vocab_size=' in str(
        excinfo.value
    )


def test_too_many_instances_is_413(serving_base_dirs: dict[str, Path]) -> None:
    predictor = Predictor.load(serving_base_dirs["softmax"] / "model", device="cpu", max_instances=3)
    assert len(predictor.predict([{"in0": [1]}] * 3)) == 3
    with pytest.raises(RequestError, match="4 instances; at most 3") as excinfo:
        predictor.predict([{"in0": [1]}] * 4)
    assert excinfo.value.status_code == 413


# --- loading ----------------------------------------------------------------------------------


def test_load_reports_a_missing_model(tmp_path: Path) -> None:
    from object2vec.errors import ClientError

    with pytest.raises(ClientError, match="missing"):
        Predictor.load(tmp_path)


def test_smoke_test_catches_a_broken_model(softmax: Predictor) -> None:
    broken = Predictor(softmax.model, softmax.hp)
    original = broken.model.mlp[-1].bias.detach().clone()
    try:
        with torch.no_grad():
            broken.model.mlp[-1].bias.fill_(float("nan"))
        with pytest.raises(AlgorithmError, match="smoke inference failed"):
            broken.smoke_test()
    finally:
        with torch.no_grad():
            broken.model.mlp[-1].bias.copy_(original)


# --- properties (hypothesis): any JSON instances give one answer each or a 4xx -----------------

ids = st.integers(-3, 12000) | st.integers() | st.floats() | st.booleans() | st.none() | st.text(max_size=3)
id_lists = st.recursive(st.lists(ids, max_size=6), lambda inner: st.lists(inner | ids, max_size=4), max_leaves=12)
fields = id_lists | ids | st.dictionaries(st.text(max_size=3), ids, max_size=2)
instances_strategy = st.lists(
    st.dictionaries(st.sampled_from(["in0", "in1", "label"]), fields, max_size=3) | ids, max_size=6
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances=instances_strategy, check_booleans=st.booleans())
def test_any_instances_answer_one_row_each_or_a_4xx(
    softmax: Predictor, instances: list[Any], check_booleans: bool
) -> None:
    # The codec passes check_booleans=False only for a body without true/false in it.
    shown = repr(instances)
    check_booleans = check_booleans or "True" in shown or "False" in shown
    try:
        result = softmax.predict(instances, check_booleans=check_booleans)
    except RequestError as err:
        assert 400 <= err.status_code < 500 and err.message
        return
    assert len(result) == len(instances)
    assert np.isfinite(result.values).all()


class CountingGovernor:
    """Stands in for threads.ThreadGovernor: counts the ticks."""

    def __init__(self) -> None:
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1


def test_each_forward_ticks_the_thread_governor(softmax: Predictor) -> None:
    governor = CountingGovernor()
    softmax.governor = governor  # type: ignore[assignment]
    try:
        softmax.predict([{"in0": [1, 2], "in1": [3]}])
        assert governor.ticks == 1
        softmax.predict([{"in0": [1, 2]}])  # an embedding request
        assert governor.ticks == 2
    finally:
        softmax.governor = None
