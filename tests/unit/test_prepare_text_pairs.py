"""`prepare text-pairs`: STS-style TSV, shared vocabulary, labels, reuse of a vocabulary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from object2vec.config import Hyperparameters
from object2vec.data.records import read_channel
from object2vec.environment import Channel
from object2vec.prepare.cli import prepare_main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "prepare"
STS = FIXTURES / "sts.tsv"
STS_COLUMNS = ["--text-columns", "5,6", "--label-column", "4"]


def prepare(capsys: pytest.CaptureFixture, *argv: Any) -> dict[str, Any]:
    code = prepare_main([str(a) for a in ("text-pairs", *argv)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def fail(capsys: pytest.CaptureFixture, *argv: Any) -> str:
    assert prepare_main([str(a) for a in ("text-pairs", *argv)]) == 2
    return capsys.readouterr().err


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sts_format_matches_golden(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report = prepare(capsys, "--train", STS, *STS_COLUMNS, "--output-dir", tmp_path)
    assert report["hyperparameters"] == {
        "enc1_network": "enc0",
        "enc0_vocab_size": 38,
        "enc0_max_seq_len": 11,
        "tied_encoders": True,
        "output_layer": "mean_squared_error",
        "comparator_list": "cosine",  # the scores fitted by the embeddings' cosine (sixth round)
        "mlp_layers": 0,
    }
    assert report["outputs"] == {"train.jsonl": 6}
    golden = FIXTURES / "expected"
    assert (tmp_path / "vocab.json").read_text() == (golden / "sts_vocab.json").read_text()
    assert (tmp_path / "train.jsonl").read_text() == (golden / "sts_train.jsonl").read_text()


def test_quotes_and_extra_columns_are_plain_text(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    prepare(capsys, "--train", STS, *STS_COLUMNS, "--output-dir", tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    assert '"' in vocab and "obama" in vocab
    assert "extra" not in vocab  # trailing columns beyond 5 and 6 are ignored
    scores = [r["label"] for r in records(tmp_path / "train.jsonl")]
    assert scores == [5.0, 3.8, 3.8, 0.4, 2.5, 0.0]


def test_validation_and_test_reuse_the_training_vocab(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train, test = tmp_path / "train.tsv", tmp_path / "test.tsv"
    train.write_text("the cat\tthe dog\t1\nthe cat sat\ta dog\t2\n")
    test.write_text("the zebra\tcat\t0.5\n")
    prepare(capsys, "--train", train, "--test", test, "--output-dir", tmp_path / "a")
    vocab = json.loads((tmp_path / "a" / "vocab.json").read_text())
    assert records(tmp_path / "a" / "test.jsonl") == [
        {"in0": [vocab["the"], vocab["<unk>"]], "in1": [vocab["cat"]], "label": 0.5}
    ]
    report = prepare(capsys, "--test", test, "--vocab", tmp_path / "a" / "vocab.json", "--output-dir", tmp_path / "b")
    assert not (tmp_path / "b" / "vocab.json").exists()
    assert report["hyperparameters"]["enc0_vocab_size"] == len(vocab)
    assert (tmp_path / "b" / "test.jsonl").read_text() == (tmp_path / "a" / "test.jsonl").read_text()


def test_classification_with_label_map_and_dropped_labels(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "snli.tsv"
    path.write_text(
        "gold\ts1\ts2\n"
        "entailment\tA man runs.\tA person moves.\n"
        "-\tUnclear.\tVery.\n"
        "contradiction\tA man runs.\tA man sleeps.\n"
    )
    report = prepare(
        capsys,
        "--train",
        path,
        "--header",
        "--text-columns",
        "1,2",
        "--label-column",
        "0",
        "--task",
        "classification",
        "--label-map",
        "entailment=0,neutral=1,contradiction=2",
        "--drop-label",
        "-",
        "--output-dir",
        tmp_path / "o",
    )
    assert report["hyperparameters"]["num_classes"] == 3
    assert report["hyperparameters"]["output_layer"] == "softmax"
    assert [r["label"] for r in records(tmp_path / "o" / "train.jsonl")] == [0, 2]
    channel = tmp_path / "channel"
    channel.mkdir()
    shutil.copy(tmp_path / "o" / "train.jsonl", channel)
    hp = Hyperparameters.from_dict(report["hyperparameters"])
    assert len(read_channel(Channel("train", channel, None, "File", "FullyReplicated"), hp)) == 2


def test_label_map_from_json_file_and_integer_labels(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "p.tsv"
    path.write_text("a\tb\tyes\nc\td\tno\n")
    mapping = tmp_path / "labels.json"
    mapping.write_text('{"no": 0, "yes": 1}')
    common = ["--task", "classification", "--output-dir"]
    prepare(capsys, "--train", path, *common, tmp_path / "o", "--label-map", mapping)
    assert [r["label"] for r in records(tmp_path / "o" / "train.jsonl")] == [1, 0]
    path.write_text("a\tb\t1\nc\td\t0.0\n")
    report = prepare(capsys, "--train", path, *common, tmp_path / "p")
    assert report["hyperparameters"]["num_classes"] == 2


def test_truncation_and_length_suggestion(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "p.tsv"
    path.write_text("".join(f"{' '.join(['w'] * n)}\tx\t1\n" for n in range(1, 21)))
    report = prepare(capsys, "--train", path, "--output-dir", tmp_path / "o", "--length-percentile", "50")
    assert report["hyperparameters"]["enc0_max_seq_len"] == 10
    assert report["suggested_max_seq_len"] == {"in0": 10, "in1": 1}
    report = prepare(capsys, "--train", path, "--output-dir", tmp_path / "p", "--max-seq-len", "3")
    assert max(len(r["in0"]) for r in records(tmp_path / "p" / "train.jsonl")) == 3
    assert report["hyperparameters"]["enc0_max_seq_len"] == 3


def test_reserved_none_drops_unknown_tokens_and_empty_pairs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train, test = tmp_path / "train.tsv", tmp_path / "test.tsv"
    train.write_text("red fish\tblue fish\t1\n")
    test.write_text("red cat\tfish\t1\ncat\tdog\t2\n")
    report = prepare(capsys, "--train", train, "--test", test, "--reserved", "none", "--output-dir", tmp_path / "o")
    assert json.loads((tmp_path / "o" / "vocab.json").read_text()) == {"fish": 0, "blue": 1, "red": 2}
    assert records(tmp_path / "o" / "test.jsonl") == [{"in0": [2], "in1": [0], "label": 1.0}]
    assert report["outputs"]["test.jsonl"] == 1


def test_min_count_and_max_vocab(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "p.tsv"
    path.write_text("a a a b\tb c\t1\n")
    prepare(capsys, "--train", path, "--min-count", "2", "--output-dir", tmp_path / "o")
    assert json.loads((tmp_path / "o" / "vocab.json").read_text()) == {"<unk>": 0, "a": 1, "b": 2}
    prepare(capsys, "--train", path, "--max-vocab", "2", "--output-dir", tmp_path / "p")
    assert json.loads((tmp_path / "p" / "vocab.json").read_text()) == {"<unk>": 0, "a": 1}


def test_no_lowercase_keeps_case(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "p.tsv"
    path.write_text("The\tthe\t1\n")
    prepare(capsys, "--train", path, "--no-lowercase", "--output-dir", tmp_path / "o")
    assert set(json.loads((tmp_path / "o" / "vocab.json").read_text())) == {"<unk>", "The", "the"}


@pytest.mark.parametrize(
    ("text", "options", "message"),
    [
        ("a\tb\t1\na\tb\n", [], "p.tsv, line 2: 2 field(s), but column 2 is needed"),
        ("a\tb\thigh\n", [], "p.tsv, line 1: label 'high' is not a number"),
        ("a\tb\tyes\n", ["--task", "classification"], "--label-map"),
        ("a\tb\tmaybe\n", ["--task", "classification", "--label-map", "yes=1,no=0"], "not in --label-map"),
        ("a\tb\t1\n", ["--task", "classification", "--label-map", "yes"], "name=id"),
        ("a\tb\t1\n", ["--text-columns", "1"], "two 0-based column indexes"),
    ],
)
def test_bad_input_is_a_client_error(
    tmp_path: Path, capsys: pytest.CaptureFixture, text: str, options: list[str], message: str
) -> None:
    path = tmp_path / "p.tsv"
    path.write_text(text)
    assert message in fail(capsys, "--train", path, "--output-dir", tmp_path / "o", *options)


def test_inputs_are_required(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert "at least one of --train" in fail(capsys, "--output-dir", tmp_path)
    assert "pass --vocab" in fail(capsys, "--test", STS, "--output-dir", tmp_path)
