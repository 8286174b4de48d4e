from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from object2vec.config import (
    FREEZE_ALL,
    MAX_NUM_CLASSES,
    MAX_SEQ_LEN_LIMIT,
    MLP_ACTIVATIONS,
    OPTIMIZERS,
    Hyperparameters,
    default_value,
    valid_keys,
)
from object2vec.errors import ClientError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "hyperparameters"
REQUIRED = {"enc0_max_seq_len": "10", "enc0_vocab_size": "100"}


def load(name: str) -> dict[str, str]:
    return json.loads((FIXTURES / name).read_text())


def test_defaults_match_the_documentation() -> None:
    hp = Hyperparameters.from_dict(REQUIRED)
    assert hp.enc0.network == "hcnn" and hp.enc0.layers == 4 and hp.enc0.cnn_filter_width == 3
    assert hp.enc0.token_embedding_dim == 300 and hp.enc0.freeze_pretrained_embedding is True
    assert hp.enc1 == hp.enc0 and hp.enc1_network == "enc0"
    assert (hp.enc_dim, hp.mlp_dim, hp.mlp_layers, hp.mlp_activation) == (4096, 512, 2, "linear")
    assert (hp.output_layer, hp.num_classes, hp.optimizer, hp.learning_rate) == ("softmax", 2, "adam", 0.0004)
    assert (hp.mini_batch_size, hp.epochs, hp.early_stopping_patience) == (32, 30, 3)
    assert (hp.early_stopping_tolerance, hp.dropout, hp.weight_decay) == (0.01, 0.0, 0.0)
    assert hp.comparator_list == ("hadamard", "concat", "abs_diff")
    assert (hp.bucket_width, hp.negative_sampling_rate, hp.token_embedding_storage_type) == (0, 0, "dense")
    assert hp.tied_token_embedding_weight is False and hp.num_gpus is None
    assert hp.learning_rate_plateau_factor == 1.0  # an extension; 1.0: a constant rate, as documented
    assert hp.ema_decay == 0.0  # an extension; 0: the weights themselves are evaluated and kept


@pytest.mark.parametrize(("value", "problem"), [("0", "out of range"), ("1.5", "out of range"), ("half", "number")])
def test_learning_rate_plateau_factor_is_a_factor_below_one(value: str, problem: str) -> None:
    assert (
        Hyperparameters.from_dict({**REQUIRED, "learning_rate_plateau_factor": "0.5"}).learning_rate_plateau_factor
        == 0.5
    )
    with pytest.raises(ClientError, match=f"learning_rate_plateau_factor={value} .*{problem}"):
        Hyperparameters.from_dict({**REQUIRED, "learning_rate_plateau_factor": value})


@pytest.mark.parametrize(("value", "problem"), [("-0.1", "out of range"), ("1", "out of range"), ("x", "number")])
def test_ema_decay_is_a_decay_below_one(value: str, problem: str) -> None:
    assert Hyperparameters.from_dict({**REQUIRED, "ema_decay": "0.99"}).ema_decay == 0.99
    with pytest.raises(ClientError, match=f"ema_decay={value} .*{problem}"):
        Hyperparameters.from_dict({**REQUIRED, "ema_decay": value})


def test_notebook_movielens_configuration() -> None:
    hp = Hyperparameters.from_dict(load("notebook_movielens.json"))
    assert hp.enc0.vocab_size == 944 and hp.enc1.vocab_size == 1684
    assert hp.enc0.network == hp.enc1.network == "pooled_embedding"
    assert not hp.is_classification and hp.output_dim == 1


def test_sdk_generic_estimator_spellings() -> None:
    hp = Hyperparameters.from_dict(load("sdk_generic_estimator.json"))
    assert hp.tied_token_embedding_weight is True
    assert hp.enc0.freeze_pretrained_embedding is False
    assert hp.enc0.layers == 2 and hp.enc1.layers == 2 and hp.enc1.network == "bilstm"
    assert hp.tuning_objective_metric == "validation:accuracy"
    assert hp.dropout == pytest.approx(0.2)


def test_json_encoded_values_from_framework_estimators() -> None:
    hp = Hyperparameters.from_dict(load("sdk_json_encoded.json"))
    assert hp.enc0.network == "hcnn" and hp.enc0.layers == 4
    assert hp.comparator_list == ("abs_diff", "hadamard")  # order kept
    assert hp.mlp_layers == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [("True", True), ("true", True), ('"false"', False), (True, True), (0, False), ("FALSE", False)],
)
def test_booleans_in_every_spelling(value: object, expected: bool) -> None:
    hp = Hyperparameters.from_dict({**REQUIRED, "tied_token_embedding_weight": value})
    assert hp.tied_token_embedding_weight is expected


@pytest.mark.parametrize(("value", "expected"), [("auto", 1), ("2", 2), (3, 3), ('"auto"', 1), ("4.0", 4)])
def test_bilstm_layers_auto_and_numbers(value: object, expected: int) -> None:
    hp = Hyperparameters.from_dict({**REQUIRED, "enc0_network": "bilstm", "enc0_layers": value})
    assert hp.enc0.layers == expected


def test_enc1_network_enc0_copies_settings_and_warns_about_ignored_keys(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        hp = Hyperparameters.from_dict({**REQUIRED, "enc0_network": "bilstm", "enc1_vocab_size": "3"})
    assert hp.enc1.vocab_size == 100 and hp.enc1.network == "bilstm"
    assert "enc1_vocab_size is ignored" in caplog.text


def test_own_enc1_settings_when_enc1_network_is_given() -> None:
    hp = Hyperparameters.from_dict(
        {**REQUIRED, "enc1_network": "pooled_embedding", "enc1_max_seq_len": "3", "enc1_vocab_size": "7"}
    )
    assert (hp.enc1.network, hp.enc1.max_seq_len, hp.enc1.vocab_size) == ("pooled_embedding", 3, 7)
    assert hp.enc0.network == "hcnn"


def test_all_problems_reported_in_one_message() -> None:
    with pytest.raises(ClientError) as err:
        Hyperparameters.from_dict(
            {
                "enc0_max_seq_len": "0",
                "enc_dm": "8",
                "optimizer": "adamw",
                "mlp_layers": "11",
                "dropout": "x",
                "comparator_list": "hadamard,dot",
            }
        )
    message = str(err.value)
    assert message.startswith("7 invalid hyperparameters")
    for expected in (
        "unknown hyperparameter enc_dm (did you mean enc_dim?)",
        "enc0_max_seq_len=0 is out of range: must be an integer 1 <= x <= 5000",
        "enc0_vocab_size is required",
        "optimizer=adamw is not valid: allowed values are adadelta, adagrad, adam, sgd, rmsprop",
        "mlp_layers=11 is out of range",
        "dropout=x must be a number",
        "comparator_list=hadamard,dot has unknown comparator(s) dot",
    ):
        assert expected in message


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"enc1_network": "hcnn"}, "enc1_max_seq_len is required because enc1_network=hcnn"),
        (
            {
                "tied_token_embedding_weight": "true",
                "enc1_network": "hcnn",
                "enc1_max_seq_len": "5",
                "enc1_vocab_size": "9",
            },
            "these differ: vocab_size (enc0 100, enc1 9)",
        ),
        (
            {"tied_encoders": "true", "enc1_network": "bilstm", "enc1_max_seq_len": "5", "enc1_vocab_size": "100"},
            "tied_encoders=true makes one encoder of enc0 and enc1, so they need equal settings (enc1_network=enc0 "
            "copies them), but these differ: network (enc0 hcnn, enc1 bilstm); layers (enc0 4, enc1 1)",
        ),
        ({"token_embedding_storage_type": "row_sparse", "optimizer": "rmsprop"}, "use one of adam, adagrad, sgd"),
        ({"token_embedding_storage_type": "row_sparse", "ema_decay": "0.9"}, "use ema_decay=0 with row_sparse"),
        ({"enc0_pretrained_embedding_file": "glove.txt"}, "needs enc0_vocab_file"),
        ({"enc0_vocab_file": "../etc/passwd"}, "is not a plain file name"),
        ({"_tuning_objective_metric": "validation:mean_squared_error"}, "is not emitted with output_layer=softmax"),
        ({"epochs": "true"}, "epochs=true must be an integer"),
        ({"learning_rate": "nan"}, "must be a finite number"),
        ({"comparator_list": "hadamard,hadamard"}, "lists a comparator twice"),
        (
            {"enc0_pooling": "attention"},
            "enc0_pooling=attention applies to enc0_network=pooled_embedding only: hcnn and bilstm always pool",
        ),
        (
            {"enc0_network": "pooled_embedding", "enc0_pooling": "max"},
            "enc0_pooling=max is not valid: allowed values are mean, attention, sqrt_n",
        ),
        (
            {"in_batch_negatives": "true", "output_layer": "mean_squared_error"},
            "in_batch_negatives=true ranks pairs by their score for class 1 against class 0, so it needs "
            "output_layer=softmax and num_classes=2, not output_layer=mean_squared_error",
        ),
        ({"in_batch_negatives": "true", "num_classes": "3"}, "not output_layer=softmax with num_classes=3"),
        (
            {"in_batch_negatives": "true", "negative_sampling_rate": "5"},
            "takes its negatives from the mini-batch, so negative_sampling_rate=5 must be 0",
        ),
        (
            # the defaults: enc_dim 4096, all three comparators (4 x 4096), 2 MLP layers of 512
            {"in_batch_negatives": "true", "mini_batch_size": "200"},
            "scores mini_batch_size^2 pairs through the MLP (17408 activations each), so mini_batch_size=200 "
            "is too large: use at most 124, or comparator_list=cosine with mlp_layers=0",
        ),
    ],
)
def test_invalid_combinations(extra: dict[str, str], expected: str) -> None:
    with pytest.raises(ClientError) as err:
        Hyperparameters.from_dict({**REQUIRED, **extra})
    assert expected in str(err.value)


def test_tied_encoders_accept_their_own_max_seq_len() -> None:
    """Each side is truncated when read, so one shared encoder can read two lengths."""
    hp = Hyperparameters.from_dict(
        {**REQUIRED, "tied_encoders": "true", "enc1_network": "hcnn", "enc1_vocab_size": "100", "enc1_max_seq_len": "4"}
    )
    assert hp.tied_encoders and (hp.enc0.max_seq_len, hp.enc1.max_seq_len) == (10, 4)


def test_row_sparse_switches_bucketing_off() -> None:
    hp = Hyperparameters.from_dict({**REQUIRED, "token_embedding_storage_type": "row_sparse", "bucket_width": "5"})
    assert hp.bucket_width == 0


def test_framework_keys_accepted() -> None:
    hp = Hyperparameters.from_dict(
        {**REQUIRED, "_kvstore": "dist_sync", "_num_gpus": "2", "_num_kv_servers": "auto", "feature_dim": "3"}
    )
    assert hp.kvstore == "dist_sync" and hp.num_gpus == 2 and hp.num_kv_servers is None


def test_to_dict_round_trips_resolved_values() -> None:
    hp = Hyperparameters.from_dict(load("sdk_generic_estimator.json"))
    again = Hyperparameters.from_dict(hp.to_dict())
    assert again.enc1 == hp.enc1 and again.enc1_network == "bilstm"  # the network enc1 copied
    assert dataclasses.replace(again, enc1_network=hp.enc1_network) == hp


def test_every_documented_name_is_valid() -> None:
    documented = [
        f"enc{i}_{name}"
        for i in (0, 1)
        for name in (
            "max_seq_len",
            "vocab_size",
            "network",
            "cnn_filter_width",
            "layers",
            "token_embedding_dim",
            "pretrained_embedding_file",
            "vocab_file",
            "freeze_pretrained_embedding",
        )
    ] + [
        "enc_dim", "mlp_dim", "mlp_layers", "mlp_activation", "output_layer", "num_classes", "optimizer",
        "learning_rate", "weight_decay", "mini_batch_size", "epochs", "early_stopping_patience",
        "early_stopping_tolerance", "dropout", "comparator_list", "tied_token_embedding_weight", "bucket_width",
        "negative_sampling_rate", "token_embedding_storage_type", "_kvstore", "_num_gpus", "_num_kv_servers",
        "_tuning_objective_metric",
    ]  # fmt: skip
    assert set(documented) <= set(valid_keys())


# ---------------------------------------------------------------------------------------------
# The transformer encoder (an extension beyond the original list)

TRANSFORMER = {**REQUIRED, "enc0_network": "transformer", "enc0_pretrained_model": "all-MiniLM-L6-v2"}


def test_transformer_settings_and_their_defaults() -> None:
    hp = Hyperparameters.from_dict(TRANSFORMER)
    assert hp.enc0.is_transformer and hp.enc1.is_transformer  # enc1_network=enc0 copies the settings
    assert hp.enc0.pretrained_model == "all-MiniLM-L6-v2" and hp.enc0.freeze_layers == 0
    assert hp.transformer_learning_rate_multiplier == 0.1 and hp.transformer_warmup_steps == 0
    hp = Hyperparameters.from_dict(
        {
            **TRANSFORMER,
            "enc0_freeze_layers": "all",
            "transformer_learning_rate_multiplier": "0.05",
            "transformer_warmup_steps": "100",
            "tied_token_embedding_weight": "True",
        }
    )
    assert hp.enc0.freeze_layers == FREEZE_ALL and hp.tied_token_embedding_weight
    assert (hp.transformer_learning_rate_multiplier, hp.transformer_warmup_steps) == (0.05, 100)
    assert Hyperparameters.from_dict({**TRANSFORMER, "enc0_freeze_layers": "3"}).enc0.freeze_layers == 3


def test_transformer_settings_round_trip_through_to_dict() -> None:
    hp = Hyperparameters.from_dict({**TRANSFORMER, "enc0_freeze_layers": "all", "transformer_warmup_steps": "7"})
    written = hp.to_dict()
    assert written["enc0_freeze_layers"] == "all" and written["enc0_pretrained_model"] == "all-MiniLM-L6-v2"
    assert Hyperparameters.from_dict(written) == dataclasses.replace(hp, enc1_network="transformer")
    plain = Hyperparameters.from_dict(REQUIRED)  # the transformer keys' defaults re-parse without complaint
    assert Hyperparameters.from_dict(plain.to_dict()).enc0 == plain.enc0


def test_retrieval_hyperparameters_defaults_auto_and_round_trip() -> None:
    hp = Hyperparameters.from_dict(REQUIRED)
    assert (hp.retrieval_index, hp.retrieval_exact_max, hp.retrieval_top_n) == ("auto", 50_000, 100)
    assert hp.retrieval_ivf_nlist is None and hp.retrieval_ivf_nprobe is None and hp.retrieval_score_class is None
    assert hp.to_dict()["retrieval_ivf_nlist"] == "auto" and hp.to_dict()["retrieval_score_class"] == "auto"
    given = Hyperparameters.from_dict(
        {**REQUIRED, "retrieval_index": "IVF", "retrieval_ivf_nlist": "64", "retrieval_ivf_nprobe": "8",
         "retrieval_top_n": "250", "retrieval_score_class": "0", "retrieval_exact_max": "0"}
    )  # fmt: skip
    assert (given.retrieval_index, given.retrieval_ivf_nlist, given.retrieval_ivf_nprobe) == ("ivf", 64, 8)
    assert (given.retrieval_top_n, given.retrieval_score_class, given.retrieval_exact_max) == (250, 0, 0)
    assert dataclasses.replace(Hyperparameters.from_dict(given.to_dict()), enc1_network="enc0") == given


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"enc0_pretrained_model": ""}, "enc0_network=transformer needs enc0_pretrained_model"),
        ({"enc0_pretrained_model": "../minilm"}, "is not a plain folder name"),
        ({"enc0_pretrained_model": "a/b"}, "is not a plain folder name"),
        ({"enc0_freeze_layers": "some"}, "enc0_freeze_layers=some must be an integer or all"),
        ({"enc0_freeze_layers": "65"}, "is out of range: must be an integer 0 <= x <= 64 or all"),
        ({"enc0_vocab_file": "vocab.json"}, "enc0_vocab_file does not apply to enc0_network=transformer"),
        ({"token_embedding_storage_type": "row_sparse"}, "row_sparse does not apply to a transformer encoder"),
        ({"transformer_learning_rate_multiplier": "-1"}, "transformer_learning_rate_multiplier=-1 is out of range"),
        (
            {
                "tied_token_embedding_weight": "true",
                "enc1_network": "hcnn",
                "enc1_max_seq_len": "5",
                "enc1_vocab_size": "100",
            },
            "both encoders must be transformers of the same pretrained_model, but they are: enc0 transformer "
            "all-MiniLM-L6-v2, enc1 hcnn",
        ),
        (
            {
                "tied_token_embedding_weight": "true",
                "enc1_network": "transformer",
                "enc1_pretrained_model": "other",
                "enc1_max_seq_len": "5",
                "enc1_vocab_size": "100",
            },
            "enc1 transformer other",
        ),
    ],
)
def test_invalid_transformer_settings(extra: dict[str, str], expected: str) -> None:
    with pytest.raises(ClientError) as err:
        Hyperparameters.from_dict({**TRANSFORMER, **extra})
    assert expected in str(err.value)


def test_transformer_keys_on_other_networks_are_problems(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ClientError) as err:
        Hyperparameters.from_dict({**REQUIRED, "enc0_pretrained_model": "m", "enc0_freeze_layers": "2"})
    assert "enc0_pretrained_model applies to enc0_network=transformer only, not hcnn" in str(err.value)
    assert "enc0_freeze_layers applies to enc0_network=transformer only" in str(err.value)
    with caplog.at_level(logging.WARNING, logger="object2vec.config"):
        Hyperparameters.from_dict({**REQUIRED, "transformer_warmup_steps": "10"})
    assert "transformer_warmup_steps is ignored: no encoder is a transformer" in caplog.text


def test_a_transformer_beside_another_encoder() -> None:
    hp = Hyperparameters.from_dict(
        {**TRANSFORMER, "enc1_network": "pooled_embedding", "enc1_max_seq_len": "1", "enc1_vocab_size": "40"}
    )
    assert hp.enc0.is_transformer and not hp.enc1.is_transformer and hp.enc1.pretrained_model == ""


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"retrieval_index": "hnsw"}, "retrieval_index=hnsw is not valid: allowed values are auto, exact, ivf"),
        ({"retrieval_top_n": "0"}, "retrieval_top_n=0 is out of range: must be an integer 1 <= x <= 10000"),
        ({"retrieval_ivf_nlist": "10", "retrieval_ivf_nprobe": "11"}, "retrieval_ivf_nprobe=11 is larger than"),
        ({"retrieval_score_class": "2"}, "retrieval_score_class=2 is not a class of this model: use 0..1"),
        ({"retrieval_score_class": "0", "output_layer": "mean_squared_error"}, "applies to output_layer=softmax only"),
        ({"retrieval_ivf_nprobe": "none"}, "retrieval_ivf_nprobe=none must be an integer or auto"),
    ],
)
def test_invalid_retrieval_hyperparameters(extra: dict[str, str], expected: str) -> None:
    with pytest.raises(ClientError) as err:
        Hyperparameters.from_dict({**REQUIRED, **extra})
    assert expected in str(err.value)


# ---------------------------------------------------------------------------------------------
# Properties of the one-pass parser, over generated hyperparameters.


CONFIG_PROPERTIES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# key -> valid values; combinations among these keys are all allowed.
VALID: dict[str, st.SearchStrategy[object]] = {
    "enc0_vocab_size": st.integers(2, 3_000_000),
    "enc0_max_seq_len": st.integers(1, MAX_SEQ_LEN_LIMIT),
    "enc0_network": st.sampled_from(["hcnn", "bilstm", "pooled_embedding"]),
    "enc0_token_embedding_dim": st.integers(2, 1000),
    "enc_dim": st.integers(4, 10000),
    "mlp_dim": st.integers(2, 10000),
    "mlp_layers": st.integers(0, 10),
    "mlp_activation": st.sampled_from(MLP_ACTIVATIONS),
    "num_classes": st.integers(2, MAX_NUM_CLASSES),
    "optimizer": st.sampled_from(OPTIMIZERS),
    "learning_rate": st.floats(1e-6, 1.0),
    "dropout": st.floats(0.0, 1.0),
    "mini_batch_size": st.integers(1, 10000),
    "epochs": st.integers(1, 100),
    "early_stopping_patience": st.integers(1, 5),
}
# Integer keys and a value outside each one's range.
OUT_OF_RANGE = {
    "enc0_max_seq_len": MAX_SEQ_LEN_LIMIT + 1,
    "enc_dim": 3,
    "mlp_layers": 11,
    "num_classes": MAX_NUM_CLASSES + 1,
    "mini_batch_size": 0,
    "epochs": 101,
    "early_stopping_patience": 6,
}
MINIMAL = {"enc0_vocab_size": "10", "enc0_max_seq_len": "3"}


def as_sagemaker_sends(value: object) -> str:
    """The SDK sends every value as a string; some callers JSON-encode strings once more."""
    return value if isinstance(value, str) else json.dumps(value)


@CONFIG_PROPERTIES
@given(st.fixed_dictionaries({}, optional=VALID), st.booleans())
def test_any_valid_hyperparameters_round_trip_through_to_dict(chosen: dict[str, object], as_strings: bool) -> None:
    raw = {**MINIMAL, **chosen}
    hp = Hyperparameters.from_dict({k: as_sagemaker_sends(v) for k, v in raw.items()} if as_strings else raw)
    again = Hyperparameters.from_dict(hp.to_dict())
    # enc1_network=enc0 (the default) is written as the network enc1 copied: the same encoder.
    assert dataclasses.replace(again, enc1_network=hp.enc1_network) == hp and again.enc1 == hp.enc1
    for key, value in chosen.items():
        assert hp.to_dict()[key] == pytest.approx(value) if isinstance(value, float) else hp.to_dict()[key] == value


@CONFIG_PROPERTIES
@given(st.sets(st.sampled_from(sorted(OUT_OF_RANGE)), min_size=1), st.sampled_from(["a-word", None]))
def test_every_bad_value_is_reported_in_one_error(bad_keys: set[str], text: str | None) -> None:
    # Each key is out of range, or (text given) not a number at all; all are listed at once.
    raw = {**MINIMAL, **{key: text if text is not None else str(OUT_OF_RANGE[key]) for key in bad_keys}}
    with pytest.raises(ClientError) as info:
        Hyperparameters.from_dict(raw)
    message = str(info.value)
    for key in bad_keys:
        assert f"{key}=" in message
    assert all(f"{key}=" not in message for key in set(OUT_OF_RANGE) - bad_keys)


@CONFIG_PROPERTIES
@given(st.integers(1, 100))
def test_an_integer_reads_the_same_however_it_is_written(epochs: int) -> None:
    spellings = [epochs, str(epochs), f'"{epochs}"', f"{epochs}.0", f" {epochs} "]
    parsed = {Hyperparameters.from_dict({**MINIMAL, "epochs": spelling}).epochs for spelling in spellings}
    assert parsed == {epochs}


def test_in_batch_negatives_bound_the_batch_of_the_pairwise_path_only() -> None:
    """A cosine straight into the output layer is one matrix product: any batch size."""
    cosine = {"comparator_list": "cosine", "mlp_layers": "0", "mini_batch_size": "10000"}
    hp = Hyperparameters.from_dict({**REQUIRED, "in_batch_negatives": "true", **cosine})
    assert hp.in_batch_negatives and hp.mini_batch_size == 10000
    small = Hyperparameters.from_dict({**REQUIRED, "in_batch_negatives": "true", "mini_batch_size": "124"})
    assert small.in_batch_negatives and not Hyperparameters.from_dict(REQUIRED).in_batch_negatives


def test_pooling_is_an_encoder_setting_of_pooled_embedding() -> None:
    hp = Hyperparameters.from_dict({**REQUIRED, "enc0_network": "pooled_embedding", "enc0_pooling": "attention"})
    assert (hp.enc0.pooling, hp.enc1.pooling) == ("attention", "attention")  # enc1_network=enc0 copies it
    assert hp.to_dict()["enc0_pooling"] == "attention"
    assert Hyperparameters.from_dict(REQUIRED).enc0.pooling == "mean"


def test_default_value_is_what_to_dict_writes_for_an_unset_key() -> None:
    written = Hyperparameters.from_dict(REQUIRED).to_dict()
    for key in ("ema_decay", "comparator_list", "_num_gpus", "retrieval_ivf_nlist", "enc0_pooling", "mlp_dim"):
        assert default_value(key) == written[key], key
    assert default_value("enc0_vocab_size") is None and default_value("no_such_key") is None
