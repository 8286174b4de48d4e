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
        ("one. two. three", ["one.", "two.", "three"]),  # lowercase text still splits after plain words
        # Abbreviations (9.8% of Reuters training sentences used to end at one):
        (
            "The U.S. Treasury said it will sell notes. Mr. Smith of Acme Inc. agreed.",
            ["The U.S. Treasury said it will sell notes.", "Mr. Smith of Acme Inc. agreed."],
        ),
        ("Sales rose in the U.S. The company said so.", ["Sales rose in the U.S.", "The company said so."]),
        ("It was sold to Acme Corp. It closed Jan. 5.", ["It was sold to Acme Corp.", "It closed Jan. 5."]),
        ("No. 3 rose. The answer is no. Fine!", ["No. 3 rose.", "The answer is no.", "Fine!"]),
        ("John F. Kennedy spoke. So did I. The end", ["John F. Kennedy spoke.", "So did I.", "The end"]),
        ("Dr. (Reuters) Prices rose 3.5 pct. Then?", ["Dr. (Reuters) Prices rose 3.5 pct.", "Then?"]),
        ("Stocks fell...  At 10 a.m. it rose.", ["Stocks fell...", "At 10 a.m. it rose."]),
        ("in the u.s. the firm rose.", ["in the u.s.", "the firm rose."]),  # all lowercase: starters decide
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
        "in_batch_negatives": True,
        "negative_sampling_rate": 0,
        "comparator_list": "cosine",
        "mlp_layers": 0,
        "tied_encoders": True,
    }


def test_paragraph_documents_and_min_sentence_tokens(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "paragraphs.txt"
    path.write_text("First line of doc one.\nSecond line. Ok.\n\n\nDoc two starts. And ends.\n")
    report = prepare(
        capsys, "--train", path, "--documents", "paragraph", "--min-sentence-tokens", 2, "--output-dir", tmp_path
    )
    pairs = records(tmp_path / "train.jsonl")
    assert report["outputs"] == {"train.jsonl": 2, "candidates.jsonl": 4}  # "Ok." is dropped; no pair crosses documents
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    assert pairs[1]["in0"] == [vocab[t] for t in "doc two starts .".split()]


def test_min_sentence_tokens_counts_known_words_only(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train = tmp_path / "train.txt"
    train.write_text("alpha beta gamma. delta epsilon zeta.\n")
    test = tmp_path / "test.txt"
    # Unknown words (<unk>) and punctuation are not "known tokens": "qqq rrr sss." and "alpha, ..."
    # are dropped; "alpha beta qqq gamma!" has three known words and is kept.
    test.write_text("alpha beta gamma. qqq rrr sss. alpha , , , !  alpha beta qqq gamma! delta epsilon zeta.\n")
    prepare(capsys, "--train", train, "--output-dir", tmp_path / "v")
    prepare(
        capsys,
        "--test",
        test,
        "--vocab",
        tmp_path / "v" / "vocab.json",
        "--min-sentence-tokens",
        3,
        "--output-dir",
        tmp_path / "o",
    )
    vocab = json.loads((tmp_path / "v" / "vocab.json").read_text())
    pairs = records(tmp_path / "o" / "test.jsonl")
    kept = [pairs[0]["in0"], *(pair["in1"] for pair in pairs)]
    unk = vocab["<unk>"]
    assert kept == [
        [vocab[t] for t in "alpha beta gamma .".split()],
        [vocab["alpha"], vocab["beta"], unk, vocab["gamma"], unk],  # "!" is not in the vocabulary
        [vocab[t] for t in "delta epsilon zeta .".split()],
    ]


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
