"""`prepare sentences`: sentence splitting, adjacent pairs, paragraph documents, eval negatives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from object2vec.prepare.cli import prepare_main
from object2vec.prepare.sentences import split_sentences

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "prepare"
DOCS = FIXTURES / "docs.txt"


def prepare(capsys: pytest.CaptureFixture, *argv: Any) -> dict[str, Any]:
    code = prepare_main([str(a) for a in ("sentences", *argv)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("One. Two! Three? Four", ["One.", "Two!", "Three?", "Four"]),
        ('He said "stop." Then left.', ['He said "stop."', "Then left."]),
        ("Pi is 3.14 today.  Yes.", ["Pi is 3.14 today.", "Yes."]),
        ("", []),
    ],
)
def test_split_sentences(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


def test_adjacent_sentences_become_positive_pairs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report = prepare(capsys, "--train", DOCS, "--output-dir", tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text())

    def ids(text: str) -> list[int]:
        return [vocab[token] for token in text.split()]

    assert records(tmp_path / "train.jsonl") == [
        {"in0": ids("the cat sat on the mat ."), "in1": ids("it was warm !"), "label": 1},
        {"in0": ids("it was warm !"), "in1": ids("was it happy ?"), "label": 1},
        {"in0": ids("was it happy ?"), "in1": ids("yes ."), "label": 1},
        {"in0": ids("rain fell all day ."), "in1": ids("the river rose quickly ."), "label": 1},
    ]
    assert report["hyperparameters"] == {
        "enc1_network": "enc0",
        "enc0_vocab_size": len(vocab),
        "enc0_max_seq_len": 7,
        "output_layer": "softmax",
        "num_classes": 2,
        "negative_sampling_rate": 3,
    }


def test_paragraph_documents_and_min_sentence_tokens(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "paragraphs.txt"
    path.write_text("First line of doc one.\nSecond line. Ok.\n\n\nDoc two starts. And ends.\n")
    report = prepare(
        capsys, "--train", path, "--documents", "paragraph", "--min-sentence-tokens", 3, "--output-dir", tmp_path
    )
    pairs = records(tmp_path / "train.jsonl")
    assert report["outputs"] == {"train.jsonl": 2, "candidates.jsonl": 4}  # "Ok." is dropped; no pair crosses documents
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    assert pairs[1]["in0"] == [vocab[t] for t in "doc two starts .".split()]


def test_eval_negatives_come_from_other_documents(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "docs.txt"
    path.write_text("".join(f"alpha{d} one. alpha{d} two. alpha{d} three.\n" for d in range(6)))
    report = prepare(capsys, "--train", path, "--test", path, "--eval-negatives", 2, "--output-dir", tmp_path / "o")
    assert report["outputs"] == {"train.jsonl": 12, "test.jsonl": 36, "candidates.jsonl": 18}
    vocab = json.loads((tmp_path / "o" / "vocab.json").read_text())
    doc_of = {vocab[f"alpha{d}"]: d for d in range(6)}
    test = records(tmp_path / "o" / "test.jsonl")
    assert [r["label"] for r in test[:3]] == [1, 0, 0]
    for record in test:
        same = doc_of[record["in0"][0]] == doc_of[record["in1"][0]]
        assert same == (record["label"] == 1)
    again = prepare(
        capsys,
        "--test",
        path,
        "--vocab",
        tmp_path / "o" / "vocab.json",
        "--eval-negatives",
        2,
        "--output-dir",
        tmp_path / "p",
    )
    assert again["outputs"] == {"test.jsonl": 36}
    assert (tmp_path / "p" / "test.jsonl").read_text() == (tmp_path / "o" / "test.jsonl").read_text()


def test_eval_negatives_need_two_documents(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "one.txt"
    path.write_text("Only one. Document here.\n")
    code = prepare_main(
        [
            "sentences",
            "--train",
            str(path),
            "--validation",
            str(path),
            "--eval-negatives",
            "1",
            "--output-dir",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2
    assert "at least two documents" in capsys.readouterr().err
    assert not (tmp_path / "o" / "validation.jsonl").exists()
