"""candidates.jsonl from `prepare`: every item, every label, every distinct sentence; the channel reads it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from object2vec.config import Hyperparameters
from object2vec.prepare.candidates import MAX_ID_CHARS, raw_id, write_candidates
from object2vec.prepare.cli import prepare_main
from object2vec.retrieval.candidates import CandidateReader, path_sources

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "prepare"


def prepare(capsys: pytest.CaptureFixture, *argv: Any) -> dict[str, Any]:
    code = prepare_main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def candidates(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (path / "candidates.jsonl").read_text().splitlines()]


def channel_accepts(path: Path, report: dict[str, Any]) -> int:
    """The candidates channel reads the file with the hyperparameters prepare reported."""
    hp = Hyperparameters.from_dict(report["hyperparameters"])
    reader = CandidateReader(hp)
    list(reader.blocks(path_sources([path / "candidates.jsonl"])))
    return reader.count


def test_ratings_every_item_by_raw_id(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report = prepare(capsys, "ratings", FIXTURES / "ratings.inter", "--output-dir", tmp_path / "raw")
    items = candidates(tmp_path / "raw")
    assert items == [{"id": i, "in1": [i]} for i in sorted(record["id"] for record in items)]
    assert len(items) == report["items"] == report["outputs"]["candidates.jsonl"] == 10
    assert channel_accepts(tmp_path / "raw", report) == 10
    remapped = prepare(capsys, "ratings", FIXTURES / "ratings.inter", "--remap", "--output-dir", tmp_path / "dense")
    vocab = json.loads((tmp_path / "dense" / "item_vocab.json").read_text())
    assert candidates(tmp_path / "dense") == [{"id": int(raw), "in1": [dense]} for raw, dense in vocab.items()]
    assert channel_accepts(tmp_path / "dense", remapped) == 10


def test_multilabel_every_label_by_name(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report = prepare(capsys, "multilabel", "--train", FIXTURES / "docs.jsonl", "--output-dir", tmp_path)
    labels = json.loads((tmp_path / "label_vocab.json").read_text())
    assert candidates(tmp_path) == [{"id": name, "in1": [i]} for name, i in sorted(labels.items(), key=lambda x: x[1])]
    assert channel_accepts(tmp_path, report) == len(labels)


def test_sentences_every_distinct_sentence_of_the_train_corpus(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The cat sat. The dog ran!\nThe cat sat. A bird sang?\n")
    report = prepare(capsys, "sentences", "--train", corpus, "--output-dir", tmp_path / "out")
    vocab = json.loads((tmp_path / "out" / "vocab.json").read_text())
    found = candidates(tmp_path / "out")
    assert [item["id"] for item in found] == ["The cat sat.", "The dog ran!", "A bird sang?"]
    assert found[1]["in1"] == [vocab[token] for token in ("the", "dog", "ran", "!")]
    assert channel_accepts(tmp_path / "out", report) == 3


def test_no_write_candidates(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report = prepare(capsys, "ratings", FIXTURES / "ratings.inter", "--no-write-candidates", "--output-dir", tmp_path)
    assert "candidates.jsonl" not in report["outputs"] and not (tmp_path / "candidates.jsonl").exists()


def test_an_existing_candidates_file_needs_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "candidates.jsonl").write_text("keep me\n")
    assert prepare_main(["ratings", str(FIXTURES / "ratings.inter"), "--output-dir", str(tmp_path)]) == 2
    assert "candidates.jsonl" in capsys.readouterr().err
    assert (tmp_path / "candidates.jsonl").read_text() == "keep me\n"


def test_writer_skips_overlong_and_repeated_ids(tmp_path: Path) -> None:
    written = write_candidates(
        tmp_path, [("a", [1]), ("x" * (MAX_ID_CHARS + 1), [2]), ("a", [3]), (1, [4]), ("1", [5])]
    )
    assert written == 3
    assert candidates(tmp_path) == [{"id": "a", "in1": [1]}, {"id": 1, "in1": [4]}, {"id": "1", "in1": [5]}]


@pytest.mark.parametrize(("token", "expected"), [("242", 242), ("0", 0), ("007", "007"), ("m12", "m12"), ("-3", "-3")])
def test_raw_ids_are_integers_only_when_they_read_back_the_same(token: str, expected: str | int) -> None:
    assert raw_id(token) == expected
