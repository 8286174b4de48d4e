"""`prepare multilabel`: positives, sampled negatives, the all-labels pairs and the candidate file."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from object2vec.config import Hyperparameters
from object2vec.data.records import read_channel
from object2vec.environment import Channel
from object2vec.prepare.cli import prepare_main
from object2vec.prepare.multilabel import _sample_negatives

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "prepare"
DOCS = FIXTURES / "docs.jsonl"
LABELS = {"corn": 0, "crude": 1, "grain": 2, "interest": 3, "money-fx": 4, "nat-gas": 5, "wheat": 6}


def prepare(capsys: pytest.CaptureFixture, *argv: Any) -> dict[str, Any]:
    code = prepare_main([str(a) for a in ("multilabel", *argv)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def fail(capsys: pytest.CaptureFixture, *argv: Any) -> str:
    assert prepare_main([str(a) for a in ("multilabel", *argv)]) == 2
    return capsys.readouterr().err


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def true_labels() -> list[set[int]]:
    docs = [json.loads(line) for line in DOCS.read_text().splitlines()]
    return [{LABELS[name] for name in doc["labels"]} for doc in docs if doc["labels"]]


def test_training_pairs_hold_every_positive_and_k_negatives(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report = prepare(capsys, "--train", DOCS, "--negatives-per-doc", 2, "--output-dir", tmp_path)
    assert json.loads((tmp_path / "label_vocab.json").read_text()) == LABELS
    assert report["hyperparameters"] == {
        "enc1_network": "pooled_embedding",
        "enc0_vocab_size": 38,
        "enc1_vocab_size": 7,
        "enc0_max_seq_len": 11,
        "enc1_max_seq_len": 1,
        "output_layer": "softmax",
        "num_classes": 2,
    }
    assert report["documents"] == {"train": 5}  # the document without labels is skipped
    by_doc: dict[tuple[int, ...], list[tuple[int, int]]] = {}
    for r in records(tmp_path / "train.jsonl"):
        by_doc.setdefault(tuple(r["in0"]), []).append((r["in1"][0], r["label"]))
    assert len(by_doc) == 5
    for pairs, truth in zip(by_doc.values(), true_labels(), strict=True):
        assert {label for label, y in pairs if y == 1} == truth
        negatives = [label for label, y in pairs if y == 0]
        assert len(negatives) == 2 and len(set(negatives)) == 2 and not set(negatives) & truth


def test_by_default_positives_only_and_the_trainer_samples(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report = prepare(capsys, "--train", DOCS, "--output-dir", tmp_path)
    assert report["hyperparameters"]["negative_sampling_rate"] == 5
    pairs = records(tmp_path / "train.jsonl")
    assert {r["label"] for r in pairs} == {1} and len(pairs) == sum(map(len, true_labels()))


def test_negatives_are_seeded(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for name, seed in (("a", 0), ("b", 0), ("c", 5)):
        prepare(capsys, "--train", DOCS, "--seed", seed, "--negatives-per-doc", 2, "--output-dir", tmp_path / name)
    text = {name: (tmp_path / name / "train.jsonl").read_text() for name in "abc"}
    assert text["a"] == text["b"] != text["c"]


def test_test_pairs_cover_every_label_in_document_major_order(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report = prepare(capsys, "--train", DOCS, "--test", DOCS, "--candidates", "cand.jsonl", "--output-dir", tmp_path)
    test = records(tmp_path / "test.jsonl")
    assert len(test) == 5 * 7 and report["outputs"]["test.jsonl"] == 35
    for j, record in enumerate(test):
        assert record["in1"] == [j % 7]
        assert record["label"] == int(j % 7 in true_labels()[j // 7])
    candidates = records(tmp_path / "cand.jsonl")
    assert [c["doc"] for c in candidates] == [0, 1, 2, 3, 4]
    assert all(c["candidates"] == list(range(7)) for c in candidates)
    assert [set(c["true_labels"]) for c in candidates] == true_labels()
    assert [c["in0"] for c in candidates] == [test[7 * i]["in0"] for i in range(5)]


def test_sampled_eval_negatives(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report = prepare(
        capsys,
        "--train",
        DOCS,
        "--validation",
        DOCS,
        "--eval-negatives",
        "sampled",
        "--negatives-per-doc",
        "1",
        "--output-dir",
        tmp_path,
    )
    positives = sum(len(t) for t in true_labels())
    assert report["outputs"]["validation.jsonl"] == positives + 5


def test_tsv_input_and_reused_vocabularies(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    prepare(capsys, "--train", DOCS, "--output-dir", tmp_path / "a")
    test = tmp_path / "test.tsv"
    test.write_text("Crude oil fell.\tcrude,unknown-topic\nNo known labels here.\tother\n")
    report = prepare(
        capsys,
        "--test",
        test,
        "--vocab",
        tmp_path / "a" / "vocab.json",
        "--label-vocab",
        tmp_path / "a" / "label_vocab.json",
        "--candidates",
        tmp_path / "cand.jsonl",
        "--output-dir",
        tmp_path / "b",
    )
    assert report["documents"] == {"test": 1}
    assert report["hyperparameters"]["enc1_vocab_size"] == 7
    vocab = json.loads((tmp_path / "a" / "vocab.json").read_text())
    [candidate] = records(tmp_path / "cand.jsonl")
    assert candidate["true_labels"] == [LABELS["crude"]]
    assert candidate["in0"] == [vocab["crude"], vocab["oil"], vocab["fell"], vocab["."]]


def test_min_label_count_and_min_labels(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report = prepare(capsys, "--train", DOCS, "--min-label-count", 2, "--output-dir", tmp_path)
    assert json.loads((tmp_path / "label_vocab.json").read_text()) == {"crude": 0, "grain": 1, "wheat": 2}
    assert report["documents"] == {"train": 4}  # the money-fx/interest document has no kept label
    report = prepare(capsys, "--train", DOCS, "--min-labels", 2, "--output-dir", tmp_path / "two")
    assert report["documents"] == {"train": 4}  # all but the crude-only and the unlabelled document


def test_records_are_accepted_by_the_trainer(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report = prepare(capsys, "--train", DOCS, "--output-dir", tmp_path / "o")
    channel = tmp_path / "channel"
    channel.mkdir()
    shutil.copy(tmp_path / "o" / "train.jsonl", channel)
    hp = Hyperparameters.from_dict(report["hyperparameters"])
    dataset = read_channel(Channel("train", channel, "application/jsonlines", "File", "FullyReplicated"), hp)
    assert len(dataset) == report["outputs"]["train.jsonl"]


@pytest.mark.parametrize(
    ("num_labels", "positives", "k"), [(100, {1, 2}, 3), (10, {0}, 8), (5, {0, 1}, 9), (3, set(), 0)]
)
def test_sample_negatives(num_labels: int, positives: set[int], k: int) -> None:
    chosen = _sample_negatives(random.Random(0), num_labels, positives, k)
    assert len(chosen) == min(k, num_labels - len(positives))
    assert len(set(chosen)) == len(chosen) and not set(chosen) & positives
    assert all(0 <= label < num_labels for label in chosen)


@pytest.mark.parametrize(
    ("text", "options", "message"),
    [
        ('{"text": "a"\n', [], "d.jsonl, line 1: not valid JSON"),
        ('{"body": "a", "labels": ["x"]}\n', [], '"text" must be a string'),
        ('{"text": "a", "labels": {"x": 1}}\n', [], '"labels" must be a list'),
        ("no tab here\n", ["--format", "tsv"], "d.jsonl, line 1: no tab"),
        ('{"text": "a", "labels": ["x"]}\n', ["--min-label-count", "2"], "no label occurs"),
        ('{"text": "a", "labels": ["x"]}\n', ["--candidates", "c.jsonl"], "--candidates describes"),
    ],
)
def test_bad_input_is_a_client_error(
    tmp_path: Path, capsys: pytest.CaptureFixture, text: str, options: list[str], message: str
) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(text)
    assert message in fail(capsys, "--train", path, "--output-dir", tmp_path / "o", *options)


def test_label_vocab_is_required_without_train(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    vocab = tmp_path / "vocab.json"
    vocab.write_text('{"<unk>": 0}')
    assert "--label-vocab" in fail(capsys, "--test", DOCS, "--vocab", vocab, "--output-dir", tmp_path / "o")
