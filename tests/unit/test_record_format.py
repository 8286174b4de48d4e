from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from object2vec import record_format
from object2vec.record_format import (
    JSONLINES,
    JSONLINES_TYPES,
    TooLarge,
    is_gzip,
    is_jsonlines,
    list_data_files,
    open_data_file,
    read_vocab_file,
    vocab_error,
)


@pytest.mark.parametrize(
    "content_type",
    [JSONLINES, "application/jsonl", "application/x-jsonlines", "application/json-lines", "Application/JSONLines; x=1"],
)
def test_every_spelling_of_json_lines_is_accepted(content_type: str) -> None:
    assert is_jsonlines(content_type)


@pytest.mark.parametrize("content_type", ["application/json", "text/csv", "", "application/jsonlinesx"])
def test_other_media_types_are_not_json_lines(content_type: str) -> None:
    assert not is_jsonlines(content_type)
    assert JSONLINES_TYPES[0] == JSONLINES


def test_gzip_is_recognised_by_content_not_name(tmp_path: Path) -> None:
    plain, packed = tmp_path / "a.gz", tmp_path / "b.jsonl"
    plain.write_bytes(b'{"in0": [1]}\n')
    packed.write_bytes(gzip.compress(b'{"in0": [2]}\n'))
    assert not is_gzip(plain.read_bytes()) and is_gzip(packed.read_bytes())
    assert not is_gzip(b"") and not is_gzip(b"\x1f")
    with open_data_file(plain) as stream:
        assert stream.read() == b'{"in0": [1]}\n'
    with open_data_file(packed) as stream:
        assert stream.read() == b'{"in0": [2]}\n'


def test_data_files_are_listed_in_nested_folders_without_hidden_ones(tmp_path: Path) -> None:
    for name in ("b/2.jsonl", "a.jsonl", ".hidden/x.jsonl", "b/.y.jsonl"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    assert list_data_files(tmp_path) == [tmp_path / "a.jsonl", tmp_path / "b" / "2.jsonl"]
    assert list_data_files(tmp_path / "missing") == []


def test_the_vocab_message_training_and_serving_share() -> None:
    assert vocab_error(1, 40, 40, "file f, line 3") == (
        'Inconsistent vocab for in1 found. Vocab id "40" is not less than vocab_size=40 (file f, line 3): '
        "ids must lie in [0, enc1_vocab_size)"
    )
    assert 'Vocab id "-1" is negative' in vocab_error(0, -1, 40, "instance 0")
    assert 'Vocab id "about 123" is not less' in vocab_error(0, 123, 40, "x", approximate=True)


def test_a_vocab_file_is_read_plain_or_gzip_within_its_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vocab = {"the": 0, "cat": 1}
    plain, packed = tmp_path / "vocab.json", tmp_path / "vocab.json.gz"
    plain.write_bytes(orjson.dumps(vocab))
    packed.write_bytes(gzip.compress(orjson.dumps({f"token{i}": i for i in range(100)})))
    assert read_vocab_file(plain) == vocab
    assert len(read_vocab_file(packed)) == 100
    monkeypatch.setattr(record_format, "MAX_VOCAB_FILE_BYTES", len(packed.read_bytes()) + 1)
    with pytest.raises(TooLarge):  # small on disk, too large once decompressed
        read_vocab_file(packed)
    monkeypatch.setattr(record_format, "MAX_VOCAB_FILE_BYTES", 5)
    with pytest.raises(TooLarge, match="is larger than 5 bytes"):
        read_vocab_file(plain)
