"""`prepare ratings`: formats, labels, ids, splits, errors, and records the trainer accepts."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from object2vec.config import Hyperparameters
from object2vec.data.records import read_channel
from object2vec.environment import Channel
from object2vec.prepare.cli import prepare_main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "prepare"
INTER = FIXTURES / "ratings.inter"


def prepare(capsys: pytest.CaptureFixture, *argv: Any) -> dict[str, Any]:
    code = prepare_main([str(a) for a in ("ratings", *argv)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def fail(capsys: pytest.CaptureFixture, *argv: Any) -> str:
    assert prepare_main([str(a) for a in ("ratings", *argv)]) == 2
    return capsys.readouterr().err


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_recbole_inter_file_matches_golden(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report = prepare(capsys, INTER, "--output-dir", tmp_path)
    assert report["hyperparameters"] == {
        "enc0_network": "pooled_embedding",
        "enc1_network": "pooled_embedding",
        "enc0_vocab_size": 7,
        "enc1_vocab_size": 11,
        "enc0_max_seq_len": 1,
        "enc1_max_seq_len": 1,
        "output_layer": "mean_squared_error",
    }
    assert report["outputs"] == {"train.jsonl": 24, "test.jsonl": 6, "candidates.jsonl": 10}
    expected = (FIXTURES / "expected" / "ratings_test.jsonl").read_text()
    assert (tmp_path / "test.jsonl").read_text() == expected
    assert not (tmp_path / "validation.jsonl").exists()


def test_split_is_a_seeded_partition(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    prepare(capsys, INTER, "--output-dir", tmp_path / "a", "--validation-fraction", "0.1")
    prepare(capsys, INTER, "--output-dir", tmp_path / "b", "--validation-fraction", "0.1")
    prepare(capsys, INTER, "--output-dir", tmp_path / "c", "--validation-fraction", "0.1", "--seed", "1")
    names = ["train.jsonl", "validation.jsonl", "test.jsonl"]
    for name in names:
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    assert (tmp_path / "a" / "test.jsonl").read_text() != (tmp_path / "c" / "test.jsonl").read_text()
    rows = [json.dumps(r, sort_keys=True) for name in names for r in records(tmp_path / "a" / name)]
    assert len(rows) == 30 and [len(records(tmp_path / "a" / n)) for n in names] == [21, 3, 6]
    source = INTER.read_text().splitlines()[1:]
    expected = sorted(
        json.dumps({"in0": [int(u)], "in1": [int(i)], "label": float(r)}, sort_keys=True)
        for u, i, r, _ in (line.split("\t") for line in source)
    )
    assert sorted(rows) == expected


def test_classification_by_threshold(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "u.data"
    path.write_text("1\t10\t4\t100\n1\t11\t3\t101\n2\t10\t5\t102\n2\t12\t1\t103\n")
    report = prepare(
        capsys, path, "--output-dir", tmp_path / "o", "--task", "classification", "--threshold", 4, "--split", "none"
    )
    assert report["hyperparameters"]["output_layer"] == "softmax"
    assert report["hyperparameters"]["num_classes"] == 2
    assert report["positive_fraction"] == 0.5
    labels = {(r["in0"][0], r["in1"][0]): r["label"] for r in records(tmp_path / "o" / "train.jsonl")}
    assert labels == {(1, 10): 1, (1, 11): 0, (2, 10): 1, (2, 12): 0}


def test_csv_with_named_columns_and_remap(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text("timestamp,movieId,userId,rating\n5,m9,alice,4.5\n6,m2,bob,3.0\n7,m9,bob,2.0\n")
    report = prepare(
        capsys,
        path,
        "--output-dir",
        tmp_path / "o",
        "--user-column",
        "userId",
        "--item-column",
        "movieId",
        "--rating-column",
        "rating",
        "--timestamp-column",
        "timestamp",
        "--remap",
        "--split",
        "none",
    )
    assert report["hyperparameters"]["enc0_vocab_size"] == 2
    assert report["hyperparameters"]["enc1_vocab_size"] == 2
    users = json.loads((tmp_path / "o" / "user_vocab.json").read_text())
    items = json.loads((tmp_path / "o" / "item_vocab.json").read_text())
    assert users == {"alice": 0, "bob": 1} and items == {"m2": 0, "m9": 1}
    got = sorted((r["in0"][0], r["in1"][0], r["label"]) for r in records(tmp_path / "o" / "train.jsonl"))
    assert got == [(0, 1, 4.5), (1, 0, 3.0), (1, 1, 2.0)]


def test_remap_sorts_numeric_ids_numerically(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "r.csv"
    path.write_text("10,1,1\n9,1,1\n100,1,1\n")
    prepare(capsys, path, "--output-dir", tmp_path / "o", "--remap", "--split", "none")
    assert json.loads((tmp_path / "o" / "user_vocab.json").read_text()) == {"9": 0, "10": 1, "100": 2}


@pytest.mark.parametrize(
    ("text", "delimiter"), [("1::2::5::9\n3::4::1::8\n", "auto"), ("1 2 5\n3 4 1\n", "whitespace")]
)
def test_other_delimiters(tmp_path: Path, capsys: pytest.CaptureFixture, text: str, delimiter: str) -> None:
    path = tmp_path / "ratings.dat"
    path.write_text(text)
    report = prepare(capsys, path, "--output-dir", tmp_path / "o", "--delimiter", delimiter, "--split", "none")
    assert report["hyperparameters"]["enc0_vocab_size"] == 4
    assert report["hyperparameters"]["enc1_vocab_size"] == 5


def test_per_user_split_holds_out_the_latest(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = []
    for user in (1, 2):
        for k, item in enumerate([5, 6, 7, 8]):
            rows.append(f"{user},{item + user},3,{1000 - 10 * k if user == 1 else 10 * k}")
    rows.append("3,1,3,0")  # a user with a single rating stays in train
    path = tmp_path / "r.csv"
    path.write_text("\n".join(rows) + "\n")
    report = prepare(capsys, path, "--output-dir", tmp_path / "o", "--split", "per-user", "--validation-per-user", 1)
    assert report["outputs"] == {"train.jsonl": 5, "validation.jsonl": 2, "test.jsonl": 2, "candidates.jsonl": 6}
    test = sorted((r["in0"][0], r["in1"][0]) for r in records(tmp_path / "o" / "test.jsonl"))
    validation = sorted((r["in0"][0], r["in1"][0]) for r in records(tmp_path / "o" / "validation.jsonl"))
    assert test == [(1, 6), (2, 10)]  # user 1's timestamps decrease, user 2's increase
    assert validation == [(1, 7), (2, 9)]


def test_per_user_split_without_timestamps_is_seeded(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "r.csv"
    path.write_text("".join(f"{u},{i},1\n" for u in range(1, 4) for i in range(1, 6)))
    prepare(capsys, path, "--output-dir", tmp_path / "a", "--split", "per-user")
    prepare(capsys, path, "--output-dir", tmp_path / "b", "--split", "per-user")
    test = records(tmp_path / "a" / "test.jsonl")
    assert sorted(r["in0"][0] for r in test) == [1, 2, 3]
    assert (tmp_path / "a" / "test.jsonl").read_text() == (tmp_path / "b" / "test.jsonl").read_text()


@pytest.mark.parametrize(
    "options", [["--task", "classification", "--threshold", 4], ["--item-raters", 2, "--remap"]], ids=["ids", "raters"]
)
def test_records_are_accepted_by_the_trainer(tmp_path: Path, capsys: pytest.CaptureFixture, options: list) -> None:
    report = prepare(capsys, INTER, "--output-dir", tmp_path / "o", *options)
    channel_dir = tmp_path / "channel"
    channel_dir.mkdir()
    shutil.copy(tmp_path / "o" / "train.jsonl", channel_dir)
    hp = Hyperparameters.from_dict(report["hyperparameters"])
    dataset = read_channel(Channel("train", channel_dir, "application/jsonlines", "File", "FullyReplicated"), hp)
    assert len(dataset) == report["outputs"]["train.jsonl"]


def test_item_raters_match_golden(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report = prepare(capsys, INTER, "--output-dir", tmp_path, "--item-raters", 3, "--validation-fraction", 0.1)
    # token = 11 (the item vocabulary) + user x 5 levels + (rating - 1)
    assert report["item_raters"] == {
        "limit": 3,
        "most_raters": 3,
        "levels": [1.0, 2.0, 3.0, 4.0, 5.0],
        "token_offset": 11,
        "token": "token_offset + user id x len(levels) + the rating's index in levels",
    }
    assert report["hyperparameters"]["enc1_vocab_size"] == 11 + 7 * 5
    assert report["hyperparameters"]["enc1_max_seq_len"] == 4
    for name in ("train.jsonl", "test.jsonl", "candidates.jsonl"):
        expected = (FIXTURES / "expected" / f"ratings_item_raters_{name}").read_text()
        assert (tmp_path / name).read_text() == expected, name


def test_item_raters_come_from_training_and_never_hold_the_pairs_own_rating(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    prepare(capsys, INTER, "--output-dir", tmp_path / "ids", "--validation-fraction", 0.2)
    prepare(capsys, INTER, "--output-dir", tmp_path / "raters", "--validation-fraction", 0.2, "--item-raters", 100)
    train = records(tmp_path / "ids" / "train.jsonl")
    # The same split and order with and without raters; each item's raters are its training ratings.
    raters = {item: set() for item in range(11)}
    for record in train:
        raters[record["in1"][0]].add(11 + record["in0"][0] * 5 + int(record["label"]) - 1)
    for name in ("train.jsonl", "validation.jsonl", "test.jsonl"):
        with_raters = records(tmp_path / "raters" / name)
        assert [(r["in0"], r["in1"][:1], r["label"]) for r in with_raters] == [
            (r["in0"], r["in1"], r["label"]) for r in records(tmp_path / "ids" / name)
        ]
        for record in with_raters:
            user, item = record["in0"][0], record["in1"][0]
            own = {11 + user * 5 + level for level in range(5)}
            expected = raters[item] - own if name == "train.jsonl" else raters[item]
            assert set(record["in1"][1:]) == expected
    candidates = records(tmp_path / "raters" / "candidates.jsonl")
    assert {c["id"]: set(c["in1"][1:]) for c in candidates} == {c["id"]: raters[c["id"]] for c in candidates}


def test_item_raters_with_dense_ids(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report = prepare(capsys, INTER, "--output-dir", tmp_path, "--item-raters", 2, "--remap")
    assert report["hyperparameters"]["enc1_vocab_size"] == 10 + 6 * 5  # 10 items, then 6 users x 5 levels
    assert report["item_raters"]["token_offset"] == 10
    assert max(max(c["in1"]) for c in records(tmp_path / "candidates.jsonl")) < 10 + 6 * 5


def test_item_raters_say_how_many_tokens_they_add(
    tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("object2vec.prepare.ratings.RATER_TOKENS_WARNING", 10)
    with caplog.at_level(logging.INFO, logger="object2vec.prepare.ratings"):
        prepare(capsys, INTER, "--output-dir", tmp_path, "--item-raters", 2)
    written = sum(len(r["in1"]) - 1 for name in ("train", "test") for r in records(tmp_path / f"{name}.jsonl"))
    assert f"--item-raters: {written} rater tokens written, {written / 30:.1f} per pair" in caplog.text
    assert "a smaller --item-raters keeps them in bounds" in caplog.text


@pytest.mark.parametrize(
    ("text", "options", "message"),
    [
        ("1,2,5\n1,3,five\n", [], "r.csv, line 2: rating 'five' is not a finite number"),
        ("1,2,5\nu2,3,4\n", [], "user id 'u2' is not an integer >= 0; pass --remap"),
        ("1,2,5\n1\n", [], "r.csv, line 2: 1 field(s)"),
        ("1,2,5\n", ["--task", "classification"], "--threshold"),
        ("1,2,5\n", ["--test-fraction", "0.6", "--validation-fraction", "0.5"], "must be below 1"),
        ("1,2,5\n", ["--user-column", "userId", "--header", "no"], "has no header line"),
        ("user,item,rating\n1,2,5\n", ["--user-column", "uid"], "no such column"),
        ("", [], "is empty"),
        ("1,2,5\n", ["--item-raters", "5000"], "--item-raters 5000: at most 4999 raters per item"),
        ("1,2,5\n", ["--item-raters", "-1"], "--item-raters: must be an integer >= 0"),
        (
            "".join(f"{u},2,{u / 10}\n" for u in range(1, 30)),
            ["--item-raters", "5", "--test-fraction", "0"],
            "take 29 distinct values",
        ),
    ],
)
def test_bad_input_is_a_client_error(
    tmp_path: Path, capsys: pytest.CaptureFixture, text: str, options: list[str], message: str
) -> None:
    path = tmp_path / "r.csv"
    path.write_text(text)
    err = fail(capsys, path, "--output-dir", tmp_path / "o", *options)
    assert message in err


def test_existing_outputs_need_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    prepare(capsys, INTER, "--output-dir", tmp_path)
    assert "--overwrite" in fail(capsys, INTER, "--output-dir", tmp_path)
    prepare(capsys, INTER, "--output-dir", tmp_path, "--overwrite")
