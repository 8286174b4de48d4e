"""Training features through the real `train` program on a temp /opt/ml: the auxiliary channel
(vocab + pretrained embeddings, frozen or not), tied weights, negative sampling, bucketing and
row_sparse. Each test would fail if its feature were a no-op."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from object2vec.data.batching import Tokens
from object2vec.model.io import WEIGHTS_FILE, load_model
from object2vec.model.object2vec import Object2VecModel

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "local_test" / "test_dir"
DIM = 32  # the sample's enc0_token_embedding_dim
PRETRAINED_IDS = list(range(0, 200, 2))  # the sample's vocab is 0..199; the file covers even ids


def make_opt_ml(tmp_path: Path, **changes: str) -> Path:
    base = tmp_path / "opt" / "ml"
    shutil.copytree(SAMPLE, base, ignore=shutil.ignore_patterns("model", "output"))
    (base / "model").mkdir()
    (base / "output").mkdir()
    config = base / "input" / "config"
    hp = json.loads((config / "hyperparameters.json").read_text())
    hp.update(changes)
    (config / "hyperparameters.json").write_text(json.dumps(hp))
    if any(key.endswith("_vocab_size") for key in changes):
        # The sample's candidates (retrieval catalogue) use ids of the sample's vocabulary.
        shutil.rmtree(base / "input" / "data" / "candidates")
        channels = json.loads((config / "inputdataconfig.json").read_text())
        del channels["candidates"]
        (config / "inputdataconfig.json").write_text(json.dumps(channels))
    return base


def add_auxiliary(base: Path, files: dict[str, bytes]) -> Path:
    aux = base / "input" / "data" / "auxiliary"
    aux.mkdir()
    for name, content in files.items():
        (aux / name).write_bytes(content)
    config = base / "input" / "config" / "inputdataconfig.json"
    channels = json.loads(config.read_text())
    channels["auxiliary"] = {"ContentType": "application/json", "TrainingInputMode": "File"}
    config.write_text(json.dumps(channels))
    return aux


def run_train(base: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "PYTHONPATH": str(ROOT / "container")}
    result = subprocess.run(
        [sys.executable, "-m", "object2vec", "train"], env=env, capture_output=True, text=True, timeout=300
    )
    return result


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def failure(base: Path, result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    return (base / "output" / "failure").read_text()


def vocab_json() -> bytes:
    return json.dumps({f"w{i}": i for i in range(200)}).encode()


def pretrained_vectors(dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(42).standard_normal((len(PRETRAINED_IDS), dim)).astype(np.float32)


def glove_text(vectors: np.ndarray, header: bool = False) -> bytes:
    lines = [f"{len(vectors) + 1} {vectors.shape[1]}"] if header else []
    lines.append("unknown_token " + " ".join(["0.5"] * vectors.shape[1]))  # not in the vocab
    lines += [f"w{i} " + " ".join(repr(float(v)) for v in row) for i, row in zip(PRETRAINED_IDS, vectors, strict=True)]
    return ("\n".join(lines) + "\n").encode()


def pretrained_hp(**changes: str) -> dict[str, str]:
    return {
        "enc0_vocab_file": "vocab.json",
        "enc0_pretrained_embedding_file": "glove.txt.gz",
        "epochs": "3",
        "weight_decay": "0.01",
        **changes,
    }


def initial_model(base: Path) -> Object2VecModel:
    """The model as `train` built it before training (same config, same seed)."""
    hp = load_model(base / "model").hyperparameters
    torch.manual_seed(hp.seed)
    return Object2VecModel(hp)


def test_frozen_pretrained_rows_are_saved_unchanged(tmp_path: Path) -> None:
    base = make_opt_ml(tmp_path, **pretrained_hp())
    vectors = pretrained_vectors()
    add_auxiliary(base, {"vocab.json": vocab_json(), "glove.txt.gz": gzip.compress(glove_text(vectors, header=True))})
    log = ok(run_train(base))
    assert "enc0 token embedding: 100 of 200 vocab rows from pretrained file glove.txt.gz, frozen" in log
    saved = load_model(base / "model").model
    before = initial_model(base).token_embedding(0).weight.detach()
    for index in (0, 1):  # enc1_network=enc0: enc1 copies enc0's settings, files included
        weight = saved.token_embedding(index).weight.detach()
        assert torch.equal(weight[PRETRAINED_IDS], torch.from_numpy(vectors))
        others = [i for i in range(200) if i not in PRETRAINED_IDS]
        assert (weight[others] - before[others]).abs().amax(dim=1).gt(0).all()  # every other row trained


def test_unfrozen_pretrained_rows_train(tmp_path: Path) -> None:
    base = make_opt_ml(tmp_path, **pretrained_hp(enc0_freeze_pretrained_embedding="false"))
    vectors = pretrained_vectors()
    add_auxiliary(base, {"vocab.json": vocab_json(), "glove.txt.gz": gzip.compress(glove_text(vectors))})
    log = ok(run_train(base))
    assert "100 of 200 vocab rows from pretrained file glove.txt.gz, trainable" in log
    weight = load_model(base / "model").model.token_embedding(0).weight.detach()
    changed = (weight[PRETRAINED_IDS] - torch.from_numpy(vectors)).abs().amax(dim=1)
    assert changed.gt(1e-4).all()
    # They started from the file, not from the random init: still pointing the file's way.
    similarity = torch.cosine_similarity(weight[PRETRAINED_IDS], torch.from_numpy(vectors), dim=1)
    assert similarity.mean() > 0.5, similarity.mean()


def test_dimension_mismatch_is_a_client_error(tmp_path: Path) -> None:
    base = make_opt_ml(tmp_path, **pretrained_hp(enc0_pretrained_embedding_file="glove.txt"))
    add_auxiliary(base, {"vocab.json": vocab_json(), "glove.txt": glove_text(pretrained_vectors(dim=20))})
    message = failure(base, run_train(base))
    assert "has 20-dimensional vectors, but the token embedding dimension is 32" in message
    assert message.startswith("ClientError: enc0_pretrained_embedding_file glove.txt")


@pytest.mark.parametrize(
    ("changes", "aux", "expected"),
    [
        ({}, None, "the job has no channel named auxiliary"),
        (
            {},
            {"vocab.json": b"{}"},
            r"enc0_pretrained_embedding_file=glove.txt.gz: no such file .*it holds: vocab.json",
        ),
        ({"enc0_vocab_file": "../vocab.json"}, {}, r"enc0_vocab_file=../vocab.json is not a plain file name"),
    ],
)
def test_auxiliary_file_problems(
    tmp_path: Path, changes: dict[str, str], aux: dict[str, bytes] | None, expected: str
) -> None:
    base = make_opt_ml(tmp_path, **pretrained_hp(**changes))
    if aux is not None:
        add_auxiliary(base, aux)
    message = failure(base, run_train(base))
    assert re.search(expected, message), message
    assert "Traceback" not in message


def test_tied_weights_share_one_saved_table(tmp_path: Path) -> None:
    base = make_opt_ml(tmp_path, **pretrained_hp(tied_token_embedding_weight="true", epochs="2"))
    vectors = pretrained_vectors()
    add_auxiliary(base, {"vocab.json": vocab_json(), "glove.txt.gz": gzip.compress(glove_text(vectors))})
    log = ok(run_train(base))
    assert "(tied: one table shared with enc0)" in log
    loaded = load_model(base / "model").model
    assert loaded.token_embedding(0) is loaded.token_embedding(1)
    assert torch.equal(loaded.token_embedding(0).weight[PRETRAINED_IDS], torch.from_numpy(vectors))
    with safe_open(str(base / "model" / WEIGHTS_FILE), "pt") as weights:
        tables = [key for key in weights.keys() if key.endswith("embedding.weight")]  # noqa: SIM118
    assert len(tables) == 1, tables
    # Embeddings of the same ids agree through either encoder's table (encoders differ after it).
    tokens = Tokens.from_lists([[1, 2, 3]])
    with torch.no_grad():
        assert not torch.equal(loaded.encode(0, tokens), loaded.encode(1, tokens))


def test_tied_encoders_train_one_siamese_encoder(tmp_path: Path) -> None:
    """tied_encoders: one hcnn for both sides, pretrained rows frozen in its one table, the saved
    model holds it once, and the loaded model embeds alike from either side."""
    hp = pretrained_hp(tied_encoders="true", enc0_network="hcnn", enc0_layers="1", epochs="2")
    base = make_opt_ml(tmp_path, **hp)
    vectors = pretrained_vectors()
    add_auxiliary(base, {"vocab.json": vocab_json(), "glove.txt.gz": gzip.compress(glove_text(vectors))})
    log = ok(run_train(base))
    assert "(tied: one table shared with enc0)" in log
    loaded = load_model(base / "model").model
    assert loaded.siamese and loaded.hp.tied_encoders
    assert torch.equal(loaded.token_embedding(0).weight[PRETRAINED_IDS], torch.from_numpy(vectors))
    with safe_open(str(base / "model" / WEIGHTS_FILE), "pt") as weights:
        names = list(weights.keys())  # noqa: SIM118
    assert any(name.startswith("encoders.0.") for name in names), names
    assert not any(name.startswith("encoders.1.") for name in names), names
    tokens = Tokens.from_lists([[1, 2, 3], [7]])
    with torch.no_grad():
        assert torch.equal(loaded.encode(0, tokens), loaded.encode(1, tokens))


def topic_pairs(rng: np.random.Generator, count: int, same_topic: bool) -> list[dict[str, object]]:
    """Token t belongs to topic t // 10 (10 topics); a true pair draws both sides from one topic."""
    records = []
    for _ in range(count):
        topic = int(rng.integers(10))
        other = topic if same_topic else int((topic + rng.integers(1, 10)) % 10)
        in0 = (topic * 10 + rng.integers(0, 10, int(rng.integers(2, 6)))).tolist()
        in1 = (other * 10 + rng.integers(0, 10, int(rng.integers(2, 6)))).tolist()
        records.append({"in0": in0, "in1": in1, "label": int(same_topic)})
    return records


def write_jsonl(path: Path, records: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def topic_job(tmp_path: Path, **changes: str) -> tuple[Path, np.random.Generator]:
    """The sample job on topic pairs (vocab 100, 16-wide), its train channel positive pairs only;
    the generator that drew them, for the held-out pairs."""
    sizes = {"enc0_vocab_size": "100", "enc0_token_embedding_dim": "16", "enc_dim": "16", "mlp_dim": "16"}
    base = make_opt_ml(tmp_path, **sizes, **changes)
    rng = np.random.default_rng(0)
    write_jsonl(base / "input" / "data" / "train" / "train.jsonl", topic_pairs(rng, 1500, True))
    return base, rng


@pytest.mark.parametrize(("rate", "grouped"), [(0, False), (3, False), (3, True)])
def test_negative_sampling_separates_true_pairs_from_random_ones(tmp_path: Path, rate: int, grouped: bool) -> None:
    base, rng = topic_job(
        tmp_path, epochs="6", negative_sampling_rate=str(rate), negative_sampling_grouped=str(grouped).lower()
    )
    data = base / "input" / "data"
    shutil.rmtree(data / "validation")
    config = base / "input" / "config" / "inputdataconfig.json"
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k != "validation"}))
    # Test set as in the document-embedding notebook: 1 true pair to 3 random ones.
    write_jsonl(data / "test" / "test.jsonl", topic_pairs(rng, 100, True) + topic_pairs(rng, 300, False))
    log = ok(run_train(base))
    accuracy = float(re.findall(r"test accuracy <score>=(\S+)", log)[0])
    if rate == 0:
        assert accuracy < 0.3  # predicts "positive" for (nearly) everything
    else:
        assert "Negative sampling: 3 negative(s) per training record" in log
        assert ("its in0 encoded once for all of them" in log) is grouped
        assert accuracy > 0.85


@pytest.mark.parametrize(
    "changes",
    [
        {"comparator_list": "cosine", "mlp_layers": "0", "tied_encoders": "true"},  # one matrix product
        {"comparator_list": "hadamard,abs_diff", "mlp_layers": "1"},  # every pair through the MLP
    ],
)
def test_in_batch_negatives_learn_from_positive_pairs_alone(tmp_path: Path, changes: dict[str, str]) -> None:
    """No negatives in the data and none sampled: the other pairs of each batch are the negatives.
    The served model then tells true pairs from random ones; the channels' label-0 rows are set
    aside (validation, test) or refused (train)."""
    base, rng = topic_job(tmp_path, epochs="4", mini_batch_size="32", in_batch_negatives="true", **changes)
    data = base / "input" / "data"
    write_jsonl(data / "validation" / "validation.jsonl", topic_pairs(rng, 100, True) + topic_pairs(rng, 100, False))
    true_pairs, random_pairs = topic_pairs(rng, 100, True), topic_pairs(rng, 300, False)
    write_jsonl(data / "test" / "test.jsonl", true_pairs + random_pairs)
    log = ok(run_train(base))
    assert "In-batch negatives: each training pair's in1 is ranked against the other in1 of its mini-batch" in log
    assert "Channel validation: 100 of 200 records are positive pairs; the other 100 are not used" in log
    # Ranking its own in1 first among 32 (10 topics: about 3 of the 32 share its topic).
    assert float(re.findall(r"test accuracy <score>=(\S+)", log)[0]) > 0.2
    model = load_model(base / "model").model

    def scores(records: list[dict[str, object]]) -> torch.Tensor:
        in0 = Tokens.from_lists([r["in0"] for r in records])  # type: ignore[misc]
        in1 = Tokens.from_lists([r["in1"] for r in records])  # type: ignore[misc]
        with torch.no_grad():
            return model.predict(in0, in1)[:, 1]

    positive, negative = scores(true_pairs), scores(random_pairs)
    auc = float((positive[:, None] > negative[None, :]).float().mean())
    assert auc > 0.9, auc
    # Calibrated on the validation pairs: 0.5 separates true pairs from random ones (before, with
    # the cosine, 80% of random pairs scored above 0.5).
    assert "In-batch negatives: pair scores calibrated on 100 validation pairs against" in log
    assert float((positive > 0.5).float().mean()) > 0.85 and float((negative < 0.5).float().mean()) > 0.85

    write_jsonl(data / "train" / "train.jsonl", topic_pairs(rng, 50, True) + topic_pairs(rng, 5, False))
    message = failure(base, run_train(base))
    assert "in_batch_negatives=true trains on positive pairs only (label 1), but the train channel has 5" in message


def test_a_regression_on_the_cosine_alone_learns_from_the_label_range(tmp_path: Path) -> None:
    """comparator_list=cosine with mlp_layers=0 on scores 1-4: the score starts spanning the labels'
    range (from the default init it stayed far off, STS-B dev 0.016) and the served scores follow."""
    base, rng = topic_job(
        tmp_path,
        epochs="4",
        output_layer="mean_squared_error",
        comparator_list="cosine",
        mlp_layers="0",
        tied_encoders="true",
    )

    def scored(count: int) -> list[dict[str, object]]:
        pairs = topic_pairs(rng, count, True) + topic_pairs(rng, count, False)
        return [{**r, "label": 1.0 + 3 * r["label"]} for r in pairs]  # type: ignore[operator]

    write_jsonl(base / "input" / "data" / "train" / "train.jsonl", scored(750))
    write_jsonl(base / "input" / "data" / "validation" / "validation.jsonl", scored(100))
    write_jsonl(base / "input" / "data" / "test" / "test.jsonl", scored(100))
    log = ok(run_train(base))
    assert "Regression on the cosine: the score starts at 1 + 3 x cosine (the train labels' range)" in log
    model = load_model(base / "model").model
    true_pairs, random_pairs = topic_pairs(rng, 100, True), topic_pairs(rng, 100, False)
    with torch.no_grad():
        scores = [
            model.predict(Tokens.from_lists([r["in0"] for r in rows]), Tokens.from_lists([r["in1"] for r in rows]))[
                :, 0
            ]
            for rows in (true_pairs, random_pairs)
        ]
    assert float(scores[0].mean()) > 3.0 and float(scores[1].mean()) < 2.0, [float(s.mean()) for s in scores]


@pytest.mark.parametrize(
    ("changes", "expected", "min_accuracy"),
    [
        ({"enc0_network": "hcnn", "enc0_layers": "1", "bucket_width": "3"}, "", 0.6),
        ({"token_embedding_storage_type": "row_sparse", "bucket_width": "3"}, "row_sparse switches bucketing off", 0.6),
        ({"token_embedding_storage_type": "row_sparse", "optimizer": "adagrad", "learning_rate": "0.05"}, "", 0.6),
        # Plain SGD learns slowly on this sample: here it only has to run and update the table.
        ({"token_embedding_storage_type": "row_sparse", "optimizer": "sgd", "learning_rate": "0.5"}, "", 0.0),
    ],
)
def test_bucketing_and_row_sparse_train(
    tmp_path: Path, changes: dict[str, str], expected: str, min_accuracy: float
) -> None:
    base = make_opt_ml(tmp_path, epochs="3", **changes)
    log = ok(run_train(base))
    assert expected in log
    best = max(float(v) for v in re.findall(r"validation accuracy <score>=(\S+)", log))
    assert best >= min_accuracy, log
    weight = load_model(base / "model").model.token_embedding(0).weight.detach()
    assert not torch.equal(weight, initial_model(base).token_embedding(0).weight.detach())


def test_row_sparse_with_frozen_pretrained_rows(tmp_path: Path) -> None:
    base = make_opt_ml(tmp_path, **pretrained_hp(token_embedding_storage_type="row_sparse", epochs="2"))
    vectors = pretrained_vectors()
    add_auxiliary(base, {"vocab.json": vocab_json(), "glove.txt.gz": gzip.compress(glove_text(vectors))})
    ok(run_train(base))
    weight = load_model(base / "model").model.token_embedding(0).weight.detach()
    assert torch.equal(weight[PRETRAINED_IDS], torch.from_numpy(vectors))


def validation_accuracy(log: str) -> list[float]:
    return [float(v) for v in re.findall(r"validation accuracy <score>=([0-9.]+)", log)]


def test_init_model_starts_from_a_trained_model(tmp_path: Path) -> None:
    first = make_opt_ml(tmp_path / "first")
    trained = max(validation_accuracy(ok(run_train(first))))
    assert trained > 0.8  # the sample's topic task is learnt
    # At learning rate 1e-6 one epoch moves nothing: the first validation accuracy is what the
    # weights were at the start, the first job's (a fresh model is at chance, ~0.5).
    second = make_opt_ml(tmp_path / "second", init_model="first-model", learning_rate="0.000001", epochs="1")
    shutil.copytree(first / "model", add_auxiliary(second, {}) / "first-model")
    log = ok(run_train(second))
    assert "init_model=first-model: enc0 starts from the init model's encoder, its token embedding table" in log
    assert "the comparator MLP and output layer start from the init model's" in log
    assert validation_accuracy(log)[0] == pytest.approx(trained, abs=0.02)


def test_init_model_built_otherwise_is_a_client_error(tmp_path: Path) -> None:
    first = make_opt_ml(tmp_path / "first", epochs="1")
    ok(run_train(first))
    second = make_opt_ml(tmp_path / "second", init_model="first-model", enc_dim="16")
    shutil.copytree(first / "model", add_auxiliary(second, {}) / "first-model")
    message = failure(second, run_train(second))
    assert message.startswith("ClientError: init_model=first-model: its enc0 is not built like this job's")
    assert "enc_dim: 32 in the init model, 16 here" in message


def test_ema_decay_saves_the_moving_average_of_the_weights(tmp_path: Path) -> None:
    """The same seeded job with and without ema_decay: the same train losses of the first epoch
    (the optimizer steps the same weights), another saved model (the average)."""
    plain = make_opt_ml(tmp_path / "plain", epochs="3")
    averaged = make_opt_ml(tmp_path / "averaged", epochs="3", ema_decay="0.9")
    plain_log, averaged_log = ok(run_train(plain)), ok(run_train(averaged))
    assert "ema_decay=0.9: validation, early stopping and the saved model use the moving average" in averaged_log
    first_train = r"epoch=0, train cross_entropy <loss>=(\S+)"
    assert re.findall(first_train, plain_log) == re.findall(first_train, averaged_log)
    saved = {name: load_model(base / "model").model.state_dict() for name, base in (("p", plain), ("a", averaged))}
    assert any(not torch.equal(tensor, saved["a"][name]) for name, tensor in saved["p"].items())
    assert load_model(averaged / "model").hyperparameters.ema_decay == 0.9
