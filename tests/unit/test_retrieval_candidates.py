"""The candidates channel: records, blocks, files (plain, gzip, nested, Pipe), and every ClientError."""

from __future__ import annotations

import gzip
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from object2vec.config import Hyperparameters
from object2vec.environment import Channel
from object2vec.errors import ClientError
from object2vec.retrieval.candidates import (
    MAX_ID_CHARS,
    CandidateReader,
    channel_sources,
    path_sources,
    read_catalogue,
)

HP = Hyperparameters.from_dict(
    {"enc0_network": "pooled_embedding", "enc0_vocab_size": 50, "enc0_max_seq_len": 3, "enc1_network": "hcnn",
     "enc1_vocab_size": 20, "enc1_max_seq_len": 4}
)  # fmt: skip


def lines(*records: Any) -> str:
    return "".join((record if isinstance(record, str) else json.dumps(record)) + "\n" for record in records)


def read(tmp_path: Path, text: str, block_records: int = 1000) -> tuple[CandidateReader, list]:
    path = tmp_path / "candidates.jsonl"
    path.write_text(text)
    reader = CandidateReader(HP, block_records)
    return reader, list(reader.blocks(path_sources([path])))


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ClientError) as caught:
        read(tmp_path, text)
    return str(caught.value)


def test_ids_and_token_ids_in_blocks(tmp_path: Path) -> None:
    reader, blocks = read(
        tmp_path,
        lines({"id": "m1", "in1": [1, 2]}, "", {"id": 7, "in1": [], "title": "ignored"}, {"id": "é", "in1": [19]}),
        block_records=2,
    )
    assert [len(block) for block in blocks] == [1, 2]  # blocks of block_records lines, blank ones skipped
    assert [key for block in blocks for key in block.ids] == [b'"m1"', b"7", '"é"'.encode()]
    assert blocks[0].side == 1 and blocks[0].sequences.values.tolist() == [1, 2]
    assert blocks[1].sequences.lengths.tolist() == [0, 1] and blocks[1].sequences.values.tolist() == [19]
    assert (reader.count, reader.blank_lines, reader.side) == (3, 1, 1)


def test_in0_candidates_are_checked_against_enc0(tmp_path: Path) -> None:
    _, blocks = read(tmp_path, lines({"id": 1, "in0": [49]}))
    assert blocks[0].side == 0
    assert "vocab_size=50 (file" in error(tmp_path, lines({"id": 1, "in0": [50]}))


def test_gzip_and_nested_folders_in_a_stable_order(tmp_path: Path) -> None:
    root = tmp_path / "catalogue"
    (root / "b").mkdir(parents=True)
    (root / "a.jsonl").write_text(lines({"id": "a", "in1": [1]}))
    with gzip.open(root / "b" / "c.jsonl.gz", "wt") as stream:
        stream.write(lines({"id": "c", "in1": [2]}))
    (root / ".hidden").write_text("not a record\n")
    reader = CandidateReader(HP)
    ids = [key for block in reader.blocks(path_sources([root])) for key in block.ids]
    assert ids == [b'"a"', b'"c"']


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json\n", "line 1: candidate is not valid JSON"),
        (lines([1, 2]), "must be a JSON object like"),
        (lines({"in1": [1]}), 'has no "id"'),
        (lines({"id": 1.5, "in1": [1]}), '"id" must be a string or an integer, not 1.5'),
        (lines({"id": True, "in1": [1]}), "not true"),
        (lines({"id": "", "in1": [1]}), f"string of 1 to {MAX_ID_CHARS} characters"),
        (lines({"id": "x" * (MAX_ID_CHARS + 1), "in1": [1]}), f"string of 1 to {MAX_ID_CHARS} characters"),
        (lines({"id": 1, "in0": [1], "in1": [1]}), 'exactly one of "in0" and "in1"'),
        (lines({"id": 1}), 'exactly one of "in0" and "in1"'),
        (lines({"id": 1, "in1": [1]}, {"id": 2, "in0": [1]}), 'line 2: candidate has "in0" but the catalogue\'s'),
        (lines({"id": 1, "in1": 3}), '"in1" must be a list of token ids'),
        (lines({"id": 1, "in1": [1]}, {"id": 2, "in1": [1, "2"]}), 'line 2: candidate "in1" must hold integer'),
        (lines({"id": 1, "in1": [True]}), "found true"),
        (lines({"id": 1, "in1": [1]}, {"id": 2, "in1": [3, 20]}), 'Vocab id "20" is not less than vocab_size=20'),
        (lines({"id": 1, "in1": [-1]}), 'Vocab id "-1" is negative'),
        (lines({"id": 1, "in1": [2**70]}), "must hold integer token ids only"),  # orjson: a float
        (
            lines({"id": "m", "in1": [1]}, {"id": "n", "in1": [1]}, {"id": "m", "in1": [2]}),
            'repeats the id "m" of line 1',
        ),
        ("\n\n", "holds no candidates"),
        ("x" * (1 << 20) + "\n", "longer than"),
    ],
)
def test_bad_records_are_client_errors_with_file_and_line(tmp_path: Path, text: str, needle: str) -> None:
    message = error(tmp_path, text)
    assert needle in message, message
    assert "candidates.jsonl" in message or "no candidates" in message


def test_vocab_error_names_the_line_in_training_words(tmp_path: Path) -> None:
    message = error(tmp_path, lines({"id": 1, "in1": [1]}, "", {"id": 2, "in1": [25]}))
    assert message == (
        f'Inconsistent vocab for in1 found. Vocab id "25" is not less than vocab_size=20 (file '
        f"{tmp_path / 'candidates.jsonl'}, line 3): ids must lie in [0, enc1_vocab_size)"
    )


def test_repeated_id_in_another_file_names_both(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(lines({"id": 5, "in1": [1]}))
    (tmp_path / "b.jsonl").write_text(lines({"id": "5", "in1": [1]}, {"id": 5, "in1": [2]}))  # "5" is not 5
    reader = CandidateReader(HP)
    with pytest.raises(ClientError, match=r"b.jsonl, line 2: candidate repeats the id 5 of file .*a.jsonl, line 1"):
        list(reader.blocks(path_sources([tmp_path / "a.jsonl", tmp_path / "b.jsonl"])))


def test_missing_paths_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match="no such file or folder"):
        path_sources([tmp_path / "nope.jsonl"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClientError, match="holds no files"):
        path_sources([tmp_path / "empty"])


def test_corrupt_gzip_is_a_client_error(tmp_path: Path) -> None:
    path = tmp_path / "candidates.jsonl.gz"
    path.write_bytes(gzip.compress(lines({"id": 1, "in1": [1]}).encode())[:-12])
    with pytest.raises(ClientError, match="cannot be read"):
        list(CandidateReader(HP).blocks(path_sources([path])))


def channel(tmp_path: Path, mode: str = "File", content_type: str | None = None) -> Channel:
    return Channel("candidates", tmp_path / "candidates", content_type, mode, "FullyReplicated")


def test_channel_in_file_mode(tmp_path: Path) -> None:
    (tmp_path / "candidates" / "part").mkdir(parents=True)
    (tmp_path / "candidates" / "part" / "x.jsonl").write_text(lines({"id": 1, "in1": [1]}, {"id": 2, "in1": [2]}))
    blocks = read_catalogue(channel(tmp_path), HP)
    assert [key for block in blocks for key in block.ids] == [b"1", b"2"]
    with pytest.raises(ClientError, match=r"channel candidates, file part/x.jsonl, line 1"):
        (tmp_path / "candidates" / "part" / "x.jsonl").write_text("oops\n")
        read_catalogue(channel(tmp_path), HP)


def test_channel_errors(tmp_path: Path) -> None:
    (tmp_path / "candidates").mkdir()
    with pytest.raises(ClientError, match="has no data files"):
        channel_sources(channel(tmp_path))
    with pytest.raises(ClientError, match="reads JSON Lines"):
        channel_sources(channel(tmp_path, content_type="text/csv"))


def test_channel_in_pipe_mode_reads_the_first_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "candidates_0"
    os.mkfifo(fifo)
    data = gzip.compress(lines({"id": "p", "in1": [3]}).encode())

    def write() -> None:
        with open(fifo, "wb") as stream:
            stream.write(data)

    writer = threading.Thread(target=write)
    writer.start()
    blocks = read_catalogue(channel(tmp_path, mode="Pipe"), HP)
    writer.join(timeout=30)
    assert blocks[0].ids == [b'"p"'] and blocks[0].sequences.values.tolist() == [3]


@pytest.mark.parametrize(
    "ids",
    [
        ["m1", "é", "日本", "a b", "x" * MAX_ID_CHARS],  # strings written as they are
        ['q"uote', "back\\slash", "tab\there", "nul\x00", "\u2028"],  # strings JSON escapes
        [0, -5, 12345678901234567890, 7],  # integers
        ["5", 5, "five"],  # both kinds in one block
    ],
)
def test_ids_are_kept_as_json_writes_them(tmp_path: Path, ids: list) -> None:
    """Blocks parsed in bulk encode ids in a few passes; each must equal orjson.dumps of the id, the
    form responses splice in and exclude_self compares."""
    import orjson

    _, blocks = read(tmp_path, lines(*({"id": identifier, "in1": [1]} for identifier in ids)))
    assert [key for block in blocks for key in block.ids] == [orjson.dumps(identifier) for identifier in ids]


def test_repeated_id_in_an_earlier_block_names_its_line(tmp_path: Path) -> None:
    text = lines({"id": "a", "in1": [1]}, {"id": "b", "in1": [1]}, {"id": "c", "in1": [1]}, {"id": "b", "in1": [2]})
    with pytest.raises(ClientError, match=r"line 4: candidate repeats the id \"b\" of line 2"):
        read(tmp_path, text, block_records=2)
    with pytest.raises(ClientError, match=r"line 4: candidate repeats the id \"b\" of line 2"):
        read(tmp_path, text, block_records=10)  # within one block
