"""A pretrained transformer end to end through the real programs: checkpoint folder in the auxiliary
channel -> `prepare text-pairs --tokenizer` -> `train` (subprocess) -> model dir -> `serve`
(gunicorn, with the auxiliary channel gone) -> `prepare tokenize` -> /invocations."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import torch

from object2vec.data.batching import Tokens
from object2vec.local_job import lay_out_job
from object2vec.model.io import CONFIG_FILE, WEIGHTS_FILE, load_model
from object2vec.model.transformer import TransformerEncoder, read_checkpoint
from object2vec.prepare.pretrained_tokenizer import PretrainedTokenizer
from object2vec.serving.predictor import Predictor

from .test_serve import start_server, stop_server

pytest.importorskip("tokenizers")

ROOT = Path(__file__).resolve().parents[2]
SUBJECTS = ["a man", "a woman", "the dog", "the cat", "two men"]
VERBS = ["is playing the guitar", "runs on the mat", "sleeps on the mat", "is playing"]


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "container"), **extra}


def prepare(*argv: Any) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "object2vec", "prepare", *map(str, argv)]
    return subprocess.run(command, env=env(), capture_output=True, text=True, timeout=300)


def sentence_pairs(path: Path, count: int, seed: int) -> Path:
    """STS-style lines (text in columns 5, 6; score in 4): the score counts the shared parts."""
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        s0, v0, s1, v1 = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(SUBJECTS), rng.choice(VERBS)
        score = 2.5 * (s0 == s1) + 2.5 * (v0 == v1)
        lines.append(f"g\tf\t1\t1\t{score}\t{s0} {v0}.\t{s1} {v1}.\n")
    path.write_text("".join(lines))
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Path) -> tuple[Path, dict[str, Any]]:
    """`prepare text-pairs --tokenizer` once for every job of the module: (data folder, hyperparameters)."""
    folder = tmp_path_factory.mktemp("prepared")
    result = prepare(
        "text-pairs",
        *("--train", sentence_pairs(folder / "train.tsv", 240, 0)),
        *("--validation", sentence_pairs(folder / "validation.tsv", 60, 1)),
        *("--tokenizer", tiny_tokenizer, "--text-columns", "5,6", "--label-column", "4", "--output-dir", folder),
    )
    assert result.returncode == 0, result.stderr
    return folder, json.loads(result.stdout)["hyperparameters"]  # enc0_network=transformer, the folder, siamese


def make_job(tmp_path: Path, checkpoint: Path, prepared: tuple[Path, dict[str, Any]], **changes: Any) -> Path:
    """An /opt/ml holding the prepared data, with the checkpoint in its auxiliary channel."""
    data, prepared_hyperparameters = prepared
    hyperparameters = {
        **prepared_hyperparameters,
        "enc_dim": 8,
        "comparator_list": "hadamard,abs_diff",
        "mlp_layers": 1,
        "mlp_dim": 8,
        "learning_rate": 0.01,
        "mini_batch_size": 32,
        "epochs": 3,
        "transformer_learning_rate_multiplier": 0.5,
        "transformer_warmup_steps": 4,
        **changes,
    }
    channels: dict[str, Any] = {channel: [data / f"{channel}.jsonl"] for channel in ("train", "validation")}
    channels["auxiliary"] = None  # the checkpoint folder is copied in below
    base = lay_out_job(tmp_path / "opt" / "ml", {k: str(v) for k, v in hyperparameters.items()}, channels)
    shutil.copytree(checkpoint, base / "input" / "data" / "auxiliary" / checkpoint.name)
    return base


def start_train(base: Path) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "object2vec", "train"]
    environment = env(SAGEMAKER_BASE_DIR=str(base))
    return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@dataclass(frozen=True)
class Job:
    base: Path  # its /opt/ml
    returncode: int
    log: str  # stdout and stderr


# Damage done to a job's copy of the checkpoint, and the message its ClientError must carry.
DAMAGES: dict[str, tuple[Callable[[Path], Any], str]] = {
    "weights": (
        lambda folder: (folder / "model.safetensors").write_bytes(b"\x00" * 64),
        "not a readable safetensors file",
    ),
    "config": (
        lambda folder: (folder / "config.json").write_text('{"model_type": "bert", "hidden_size": 99999999}'),
        "hidden_size=99999999 must be an integer in [2, 8192]",
    ),
}


@pytest.fixture(scope="module")
def jobs(
    tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path, prepared: tuple[Path, dict[str, Any]]
) -> dict[str, Job]:
    """Every `train` job of this module, by name, run at once (they are independent, and concurrent
    subprocesses use both cores of a CI machine): the fine-tuned siamese model the serving checks
    reuse, the frozen one, and one job per damaged checkpoint."""
    bases = {
        "finetuned": make_job(tmp_path_factory.mktemp("finetuned"), tiny_bert, prepared),
        # encX_freeze_layers=all and enc_dim = hidden size: the benchmark's as-is path
        "frozen": make_job(
            tmp_path_factory.mktemp("frozen"),
            tiny_bert,
            prepared,
            enc0_freeze_layers="all",
            enc_dim=16,
            epochs=1,
            enc0_max_seq_len=32,
        ),
    }
    for name, (damage, _) in DAMAGES.items():
        bases[f"bad-{name}"] = make_job(tmp_path_factory.mktemp(f"bad-{name}"), tiny_bert, prepared)
        damage(bases[f"bad-{name}"] / "input" / "data" / "auxiliary" / "tiny-bert")
    running = {name: start_train(base) for name, base in bases.items()}
    finished = {}
    for name, process in running.items():
        log, _ = process.communicate(timeout=600)
        finished[name] = Job(bases[name], process.returncode, log)
    return finished


@pytest.fixture(scope="module")
def trained(jobs: dict[str, Job]) -> tuple[Path, str]:
    job = jobs["finetuned"]
    assert job.returncode == 0, job.log[-6000:]
    return job.base, job.log


def test_train_fine_tunes_the_checkpoint_and_saves_a_self_contained_model(
    trained: tuple[Path, str], tiny_bert: Path
) -> None:
    base, log = trained
    assert "enc0: transformer from checkpoint tiny-bert (BERT, 2 layers, hidden 16" in log
    assert "learning rate x0.5 after 4 warm-up steps" in log
    assert "enc1: the same encoder as enc0 (tied_token_embedding_weight=true: siamese)" in log
    assert sorted(p.name for p in (base / "model").iterdir()) == [WEIGHTS_FILE, CONFIG_FILE]
    config = json.loads((base / "model" / CONFIG_FILE).read_text())
    assert config["transformers"]["enc0"]["hidden_size"] == 16 and config["transformers"]["enc0"]["normalize"]
    loaded = load_model(base / "model").model
    assert loaded.siamese
    # Fine-tuned: the transformer's weights moved away from the checkpoint's.
    from safetensors import safe_open

    with safe_open(str(tiny_bert / "model.safetensors"), framework="pt") as f:
        original = f.get_tensor("encoder.layer.1.output.dense.weight")
    tuned = loaded.encoders[0].transformer.encoder.layers[1].linear2.weight
    assert not torch.allclose(tuned, original)
    validation = [float(v) for v in re.findall(r"validation mean_squared_error <loss>=(\S+)", log)]
    assert len(validation) == 3 and min(validation) < validation[0]  # it learns the toy similarity


def test_serve_answers_without_the_auxiliary_channel(
    trained: tuple[Path, str], tiny_tokenizer: Path, tmp_path: Path
) -> None:
    base, _ = trained
    served = tmp_path / "opt" / "ml"
    shutil.copytree(base / "model", served / "model")  # only the model dir: no checkpoint anywhere
    body = prepare("tokenize", "--tokenizer", tiny_tokenizer, "--pair", "A man is playing.", "The dog runs.",
                   "--pair", "A cat sleeps on the mat.", "A cat sleeps on the mat.")  # fmt: skip
    assert body.returncode == 0, body.stderr
    embed = prepare("tokenize", "--tokenizer", tiny_tokenizer, "--text", "A man is playing.", "--text", "")
    server = start_server(served, tmp_path / "serve.log", MODEL_SERVER_WORKERS="1")
    try:
        scores = requests.post(f"{server.url}/invocations", data=body.stdout, timeout=60,
                               headers={"Content-Type": "application/json"})  # fmt: skip
        vectors = requests.post(f"{server.url}/invocations", data=embed.stdout, timeout=60,
                                headers={"Content-Type": "application/json"})  # fmt: skip
    finally:
        stop_server(server)
    assert scores.status_code == 200, scores.text
    assert [len(p["scores"]) for p in scores.json()["predictions"]] == [1, 1]
    predictor = Predictor.load(served / "model", device="cpu")
    instances = json.loads(embed.stdout)["instances"]
    expected = predictor.predict(instances).values
    got = np.array([p["embeddings"] for p in vectors.json()["predictions"]], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.linalg.norm(got[0]) > 0 and got.shape == (2, 8)


def test_frozen_checkpoint_is_served_exactly_as_the_checkpoint_embeds(
    jobs: dict[str, Job], tiny_bert: Path, tiny_tokenizer: Path
) -> None:
    """encX_freeze_layers=all and enc_dim = hidden size: the trained model's enc0 embedding is the
    checkpoint's own sentence embedding (the as-is path of the benchmark)."""
    job = jobs["frozen"]
    assert job.returncode == 0, job.log[-6000:]
    predictor = Predictor.load(job.base / "model", device="cpu")
    texts = ["A man is playing the guitar.", "Two dogs run on the mat!", "zzz"]
    ids = [PretrainedTokenizer.load(tiny_tokenizer).ids(t) for t in texts]
    served = predictor.predict([{"in0": x} for x in ids]).values
    checkpoint = read_checkpoint(tiny_bert, "reference")
    reference = TransformerEncoder(predictor.hp.enc0, checkpoint.spec, 16)
    reference.transformer.load_checkpoint(checkpoint, "reference")
    width = max(map(len, ids))
    padded = torch.tensor([x + [0] * (width - len(x)) for x in ids])
    with torch.inference_mode():
        expected = reference.eval()(Tokens.from_padded(padded, torch.tensor([len(x) for x in ids]))).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)


@pytest.mark.parametrize("damaged", sorted(DAMAGES))
def test_a_bad_checkpoint_fails_the_job_with_a_client_error(jobs: dict[str, Job], damaged: str) -> None:
    job = jobs[f"bad-{damaged}"]
    assert job.returncode == 1, job.log[-3000:]
    failure = (job.base / "output" / "failure").read_text()
    assert failure.startswith("ClientError: enc0_pretrained_model=tiny-bert") and DAMAGES[damaged][1] in failure


def test_the_frozen_model_teaches_a_student_through_prepare_silver_pairs(
    jobs: dict[str, Job], tiny_tokenizer: Path, tmp_path: Path
) -> None:
    """Distillation through the product (README, Preparing data (g)): the frozen checkpoint's model
    embeds the training sentences behind /invocations (JSON Lines, as a batch transform does),
    `prepare tokenize --vocab` gives the student's ids for the same sentences, and `prepare
    silver-pairs` labels pairs of them with 5 x the teacher's cosine."""
    job = jobs["frozen"]
    assert job.returncode == 0, job.log[-6000:]
    train_tsv = sentence_pairs(tmp_path / "train.tsv", 240, 0)
    sentences = sorted({text for line in train_tsv.read_text().splitlines() for text in line.split("\t")[5:7]})
    (tmp_path / "sentences.txt").write_text("\n".join(sentences) + "\n")
    student_data = prepare("text-pairs", "--train", train_tsv, "--text-columns", "5,6", "--label-column", "4",
                           "--output-dir", tmp_path / "student")  # fmt: skip
    assert student_data.returncode == 0, student_data.stderr
    for who, tokenizer in (
        ("teacher", ["--tokenizer", tiny_tokenizer]),
        ("student", ["--vocab", tmp_path / "student" / "vocab.json"]),
    ):
        made = prepare("tokenize", *tokenizer, "--input", tmp_path / "sentences.txt", "--format", "jsonlines",
                       "--output", tmp_path / f"{who}.jsonl")  # fmt: skip
        assert made.returncode == 0, made.stderr
    served = tmp_path / "opt" / "ml"
    shutil.copytree(job.base / "model", served / "model")
    server = start_server(served, tmp_path / "serve.log", MODEL_SERVER_WORKERS="1")
    try:
        answer = requests.post(
            f"{server.url}/invocations",
            data=(tmp_path / "teacher.jsonl").read_bytes(),
            headers={"Content-Type": "application/jsonlines", "Accept": "application/jsonlines"},
            timeout=60,
        )
    finally:
        stop_server(server)
    assert answer.status_code == 200, answer.text
    (tmp_path / "teacher.jsonl.out").write_bytes(answer.content)
    made = prepare("silver-pairs", "--instances", tmp_path / "student.jsonl", "--embeddings",
                   tmp_path / "teacher.jsonl.out", "--neighbours", 2, "--randoms", 2, "--label-max", 5,
                   "--output", tmp_path / "silver.jsonl")  # fmt: skip
    assert made.returncode == 0, made.stderr
    report = json.loads(made.stdout)
    assert report["objects"] == len(sentences) and report["records"] == 2 * report["pairs"] > len(sentences)
    teacher = np.array([json.loads(line)["embeddings"] for line in answer.text.splitlines()])
    teacher /= np.linalg.norm(teacher, axis=1, keepdims=True)
    student = [tuple(json.loads(line)["in0"]) for line in (tmp_path / "student.jsonl").read_text().splitlines()]
    row_of = {ids: row for row, ids in enumerate(student)}
    assert len(row_of) == len(sentences)  # every toy sentence has its own student ids
    for line in (tmp_path / "silver.jsonl").read_text().splitlines():
        record = json.loads(line)
        cosine = float(teacher[row_of[tuple(record["in0"])]] @ teacher[row_of[tuple(record["in1"])]])
        assert record["label"] == pytest.approx(5 * max(cosine, 0.0), abs=1e-4)
