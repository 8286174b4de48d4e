"""read_channel and TokenSequences: files, gzip, truncation, flat storage and every ClientError path."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from object2vec.config import Hyperparameters
from object2vec.data import records
from object2vec.data.records import TokenSequences, read_channel
from object2vec.environment import Channel
from object2vec.errors import AlgorithmError, ClientError

# enc0 and enc1 have their own vocab sizes and lengths, so a test can tell which one was checked.
HP = {
    "enc0_network": "pooled_embedding",
    "enc0_vocab_size": "10",
    "enc0_max_seq_len": "3",
    "enc1_network": "pooled_embedding",
    "enc1_vocab_size": "5",
    "enc1_max_seq_len": "2",
}


def hyperparameters(**changes: str) -> Hyperparameters:
    return Hyperparameters.from_dict({**HP, **changes})


def line(in0: Any = (1,), in1: Any = (2,), label: Any = 0) -> str:
    return json.dumps({"in0": list(in0) if isinstance(in0, tuple) else in0, "in1": list(in1), "label": label})


def channel(path: Path, content_type: str | None = None, mode: str = "File", name: str = "train") -> Channel:
    return Channel(name=name, path=path, content_type=content_type, input_mode=mode, distribution="FullyReplicated")


def write(root: Path, name: str, *lines: str, compress: bool = False) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(text + "\n" for text in lines).encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def sequences(seqs: TokenSequences) -> list[list[int]]:
    """The reference view of flat storage: one Python list per sequence."""
    return [
        seqs.values[offset : offset + length].tolist()
        for offset, length in zip(seqs.offsets.tolist(), seqs.lengths.tolist(), strict=True)
    ]


def read_error(root: Path, hp: Hyperparameters | None = None, **kwargs: Any) -> str:
    with pytest.raises(ClientError) as info:
        read_channel(channel(root, **kwargs), hp or hyperparameters())
    return str(info.value)


# ---------------------------------------------------------------------------------------------
# Files and lines


def test_reads_nested_plain_and_gzip_files_in_sorted_order(tmp_path: Path) -> None:
    write(tmp_path, "b.jsonl", line((2,), (1,), 1))
    write(tmp_path, "a/deep/x.jsonl.gz", line((3,), (1,), 0), compress=True)
    write(tmp_path, "a/y.jsonl", line((4,), (1,), 1))
    dataset = read_channel(channel(tmp_path), hyperparameters())
    # Sorted by path: a/deep/x.jsonl.gz, a/y.jsonl, b.jsonl.
    assert sequences(dataset.in0) == [[3], [4], [2]]
    assert dataset.labels.tolist() == [0, 1, 1]
    assert dataset.labels.dtype == torch.int64


@pytest.mark.parametrize(("name", "compress"), [("data.txt", True), ("data.gz", False), ("data", True)])
def test_gzip_is_detected_by_content_not_name(tmp_path: Path, name: str, compress: bool) -> None:
    write(tmp_path, name, line((1, 2)), line((3,)), compress=compress)
    assert sequences(read_channel(channel(tmp_path), hyperparameters()).in0) == [[1, 2], [3]]


def test_hidden_files_and_folders_are_skipped(tmp_path: Path) -> None:
    write(tmp_path, "data.jsonl", line((1,)))
    write(tmp_path, ".hidden.jsonl", "not json")
    write(tmp_path, ".cache/data.jsonl", "not json")
    write(tmp_path, "sub/.partial", "not json")
    assert len(read_channel(channel(tmp_path), hyperparameters())) == 1


def test_blank_lines_are_skipped_but_counted_in_line_numbers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path, "data.jsonl", line((1,)), "", "   ", line((2,)), '{"in0": [1], "in1": [9], "label": 0}')
    with pytest.raises(ClientError, match=r"line 5\)"):
        read_channel(channel(tmp_path), hyperparameters())
    write(tmp_path, "data.jsonl", line((1,)), "", "   ", line((2,)))
    with caplog.at_level("INFO", logger="object2vec.data.records"):
        dataset = read_channel(channel(tmp_path), hyperparameters())
    assert len(dataset) == 2
    assert "Channel train: 2 records from 1 file(s), 2 blank line(s) skipped" in caplog.text


def test_long_sequences_keep_their_first_tokens(tmp_path: Path) -> None:
    write(tmp_path, "data.jsonl", line((1, 2, 3, 4, 5), (4, 3, 2, 1)), line((6,), ()), line((7, 8, 9), (1, 2)))
    dataset = read_channel(channel(tmp_path), hyperparameters())
    assert sequences(dataset.in0) == [[1, 2, 3], [6], [7, 8, 9]]  # enc0_max_seq_len=3
    assert sequences(dataset.in1) == [[4, 3], [], [1, 2]]  # enc1_max_seq_len=2
    assert dataset.in0.lengths.tolist() == [3, 1, 3]


def test_empty_sequences_are_records(tmp_path: Path) -> None:
    write(tmp_path, "data.jsonl", line((), ()), line((1,), ()))
    dataset = read_channel(channel(tmp_path), hyperparameters())
    assert sequences(dataset.in0) == [[], [1]] and sequences(dataset.in1) == [[], []]


@pytest.mark.parametrize("content_type", [None, "application/jsonlines", "application/JSONLines; charset=utf-8"])
@pytest.mark.parametrize("mode", ["File", "FastFile"])
def test_accepted_content_types_and_modes(tmp_path: Path, content_type: str | None, mode: str) -> None:
    write(tmp_path, "data.jsonl", line())
    assert len(read_channel(channel(tmp_path, content_type=content_type, mode=mode), hyperparameters())) == 1


@pytest.mark.parametrize(
    ("output_layer", "labels", "dtype"),
    [("softmax", [0, 2, 1.0], torch.int64), ("mean_squared_error", [0.5, -3, 1e3], torch.float32)],
)
def test_labels_by_output_layer(tmp_path: Path, output_layer: str, labels: list[Any], dtype: torch.dtype) -> None:
    write(tmp_path, "data.jsonl", *(line(label=label) for label in labels))
    dataset = read_channel(channel(tmp_path), hyperparameters(output_layer=output_layer, num_classes="3"))
    assert dataset.labels.dtype == dtype
    assert dataset.labels.tolist() == [float(label) for label in labels]


# ---------------------------------------------------------------------------------------------
# Flat storage


SEQS = [[5, 6, 7], [], [1], [2, 3, 4, 8, 9], [0, 0]]


def test_from_lists_stores_values_offsets_and_lengths() -> None:
    seqs = TokenSequences.from_lists(SEQS)
    assert len(seqs) == 5
    assert seqs.values.tolist() == [5, 6, 7, 1, 2, 3, 4, 8, 9, 0, 0]
    assert seqs.offsets.tolist() == [0, 3, 3, 4, 9]
    assert seqs.lengths.tolist() == [3, 0, 1, 5, 2]
    assert sequences(seqs) == SEQS


@pytest.mark.parametrize("index", [[3, 0], [1], [4, 1, 4], [], [0, 1, 2, 3, 4]])
def test_select_matches_python_indexing(index: list[int]) -> None:
    selected = TokenSequences.from_lists(SEQS).select(torch.tensor(index, dtype=torch.int64))
    assert sequences(selected) == [SEQS[i] for i in index]
    assert selected.values.numel() == sum(len(SEQS[i]) for i in index)  # compacted


@pytest.mark.parametrize("max_len", [0, 1, 2, 4, 5, 10])
def test_truncated_matches_python_slicing(max_len: int) -> None:
    assert sequences(TokenSequences.from_lists(SEQS).truncated(max_len)) == [s[:max_len] for s in SEQS]


@pytest.mark.parametrize(
    "lists",
    [
        [[5, 6], [1], [5, 6], [], [1], [5, 6, 7], []],  # variable lengths, repeats and empties
        [[3], [1], [3], [3], [2]],  # one id each (users, items): the row-wise path
        [[4, 1], [4, 2], [4, 1]],  # equal lengths
        [[], [], []],  # all empty: one distinct
        SEQS,  # all distinct: returned as is
        [],
    ],
)
def test_distinct_sequences_in_order_of_first_appearance(lists: list[list[int]]) -> None:
    seqs = TokenSequences.from_lists(lists)
    unique, inverse = seqs.distinct()
    expected = list(dict.fromkeys(map(tuple, lists)))
    assert [tuple(s) for s in sequences(unique)] == expected
    assert inverse.dtype == torch.int64
    assert [expected[i] for i in inverse.tolist()] == [tuple(s) for s in lists]


def test_empty_collections() -> None:
    empty = TokenSequences.from_lists([])
    assert len(empty) == 0 and len(empty.truncated(1)) == 0
    assert sequences(TokenSequences.from_lists([[], []]).truncated(3)) == [[], []]


# ---------------------------------------------------------------------------------------------
# ClientError paths: each names the channel, the file (relative to the channel) and the line.


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "record is not valid JSON"),
        ("[1, 2]", 'record must be a JSON object like {"in0": [1, 2], "in1": [3], "label": 0}'),
        ('{"in1": [1], "label": 0}', 'record has no "in0"'),
        ('{"in0": [1], "label": 0}', 'record has no "in1"'),
        ('{"in0": [1], "in1": [1]}', 'record has no "label"'),
        ('{"in0": 1, "in1": [1], "label": 0}', 'record "in0" must be a list of token ids, like [4, 17]'),
        ('{"in0": [1], "in1": "1 2", "label": 0}', 'record "in1" must be a list of token ids, like [4, 17]'),
        ('{"in0": [1, 2.0], "in1": [1], "label": 0}', 'record "in0" must hold integer token ids only'),
        ('{"in0": [1.5], "in1": [1], "label": 0}', 'record "in0" must hold integer token ids only'),
        ('{"in0": ["3"], "in1": [1], "label": 0}', 'record "in0" must hold integer token ids only'),
        ('{"in0": [1, "a"], "in1": [1], "label": 0}', 'record "in0" must hold integer token ids only'),
        ('{"in0": [[1]], "in1": [1], "label": 0}', 'record "in0" must hold integer token ids only'),
        ('{"in0": [1], "in1": [null], "label": 0}', 'record "in1" must hold integer token ids only'),
        ('{"in0": [1], "in1": [1, {}], "label": 0}', 'record "in1" must hold integer token ids only'),
    ],
)
def test_bad_records_name_channel_file_and_line(tmp_path: Path, text: str, problem: str) -> None:
    write(tmp_path, "sub/data.jsonl", line(), line(), text, line())
    message = read_error(tmp_path, name="validation")
    assert message.startswith(f"channel validation, file {Path('sub/data.jsonl')}, line 3: {problem}")


def test_the_first_bad_record_of_many_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "data.jsonl", *[line()] * 7, line((1.5,)), *[line()] * 3, line(("x",)))
    assert read_error(tmp_path).startswith("channel train, file data.jsonl, line 8: ")


@pytest.mark.parametrize(
    ("in0", "in1", "expected"),
    [
        (
            (1, 10),
            (1,),
            'Inconsistent vocab for in0 found. Vocab id "10" is not less than vocab_size=10 '
            "(channel train, file data.jsonl, line 2): ids must lie in [0, enc0_vocab_size)",
        ),
        (
            (9,),
            (4, 5),
            'Inconsistent vocab for in1 found. Vocab id "5" is not less than vocab_size=5 '
            "(channel train, file data.jsonl, line 2): ids must lie in [0, enc1_vocab_size)",
        ),
        (
            (1, -1),
            (1,),
            'Inconsistent vocab for in0 found. Vocab id "-1" is negative '
            "(channel train, file data.jsonl, line 2): ids must lie in [0, enc0_vocab_size)",
        ),
    ],
)
def test_ids_outside_the_vocabulary(tmp_path: Path, in0: tuple[int, ...], in1: tuple[int, ...], expected: str) -> None:
    write(tmp_path, "data.jsonl", line(), line(in0, in1))
    assert read_error(tmp_path) == expected


def test_each_input_is_checked_against_its_own_vocabulary(tmp_path: Path) -> None:
    # 7 is a valid enc0 id (vocab 10) but not a valid enc1 id (vocab 5).
    write(tmp_path, "data.jsonl", line((7,), (1,)))
    assert len(read_channel(channel(tmp_path), hyperparameters())) == 1
    write(tmp_path, "data.jsonl", line((1,), (7,)))
    assert 'Vocab id "7" is not less than vocab_size=5' in read_error(tmp_path)


def test_ids_are_checked_before_truncation(tmp_path: Path) -> None:
    # The out-of-vocabulary id sits beyond max_seq_len: the data is still wrong.
    write(tmp_path, "data.jsonl", line((1, 2, 3, 99)))
    assert 'Vocab id "99"' in read_error(tmp_path)


@pytest.mark.parametrize(
    ("label", "shown"),
    [
        (3, "3"),
        (-1, "-1"),
        (1.5, "1.5"),
        ("1", '"1"'),
        (True, "true"),
        (None, "null"),
        pytest.param([0], "[0]"),
    ],
)
def test_bad_softmax_labels(tmp_path: Path, label: Any, shown: str) -> None:
    write(tmp_path, "data.jsonl", line(), line(label=label))
    assert read_error(tmp_path, hyperparameters(num_classes="3")) == (
        f'channel train, file data.jsonl, line 2: record "label" is {shown}, but output_layer=softmax '
        "needs an integer class 0..2 (num_classes=3)"
    )


@pytest.mark.parametrize(
    ("label", "shown"),
    [("0.5", '"0.5"'), (False, "false"), (None, "null"), pytest.param({}, "{}")],
)
def test_bad_regression_labels(tmp_path: Path, label: Any, shown: str) -> None:
    write(tmp_path, "data.jsonl", line(label=0.5), line(label=label))
    assert read_error(tmp_path, hyperparameters(output_layer="mean_squared_error")) == (
        f'channel train, file data.jsonl, line 2: record "label" is {shown}, but '
        "output_layer=mean_squared_error needs a number"
    )


def test_too_long_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "MAX_LINE_BYTES", 64)
    write(tmp_path, "data.jsonl", line(), line((1,) * 40))
    assert read_error(tmp_path) == "channel train, file data.jsonl, line 2: record is longer than 64 bytes"


def test_channel_with_only_blank_lines(tmp_path: Path) -> None:
    write(tmp_path, "data.jsonl", "", "  ")
    assert read_error(tmp_path).startswith("channel train holds no records")


@pytest.mark.parametrize("layout", ["missing", "empty", "hidden only"])
def test_channel_without_files(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "train"
    if layout != "missing":
        root.mkdir()
    if layout == "hidden only":
        write(root, ".data.jsonl", line())
    assert read_error(root).startswith(f"channel train has no data files under {root}")


@pytest.mark.parametrize("content_type", ["text/csv", "application/x-recordio-protobuf", "application/json"])
def test_wrong_content_type(tmp_path: Path, content_type: str) -> None:
    write(tmp_path, "data.jsonl", line())
    message = read_error(tmp_path, content_type=content_type)
    assert message.startswith(f"channel train has ContentType {content_type!r}, but Object2Vec reads JSON Lines")


def test_pipe_mode_is_not_read_from_the_folder(tmp_path: Path) -> None:
    # Pipe mode reads FIFOs named <channel>_<n> next to the channel folder (data/pipe.py, tested in
    # test_pipe.py), never the folder's files.
    write(tmp_path / "train", "data.jsonl", line())
    with pytest.raises(AlgorithmError, match="channel train is in Pipe mode"):
        read_channel(channel(tmp_path / "train", mode="Pipe"), hyperparameters())


def test_truncated_gzip_file(tmp_path: Path) -> None:
    path = write(tmp_path, "data.jsonl.gz", *[line()] * 50, compress=True)
    path.write_bytes(path.read_bytes()[:-12])  # cut off the trailer and some data
    assert read_error(tmp_path).startswith("channel train, file data.jsonl.gz: cannot be read")


def test_corrupt_gzip_file(tmp_path: Path) -> None:
    (tmp_path / "data.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"garbage" * 4)
    assert read_error(tmp_path).startswith("channel train, file data.jsonl.gz: cannot be read")


def test_id_beyond_int64(tmp_path: Path) -> None:
    write(tmp_path, "data.jsonl", '{"in0": [9223372036854775808, 1], "in1": [1], "label": 0}')
    message = read_error(tmp_path)
    assert message.startswith("Inconsistent vocab for in0 found.") or "integer token ids" in message


def test_boolean_id_among_integers(tmp_path: Path) -> None:
    write(tmp_path, "data.jsonl", '{"in0": [1, true], "in1": [1], "label": 0}')
    assert 'record "in0" must hold integer token ids only' in read_error(tmp_path)
