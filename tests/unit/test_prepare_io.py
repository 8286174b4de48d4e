"""Bounded line reading, delimited rows, atomic writers and the output check."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from object2vec.errors import ClientError
from object2vec.prepare.io import (
    AtomicFile,
    JsonlWriter,
    check_outputs,
    pair,
    read_json_lines,
    read_lines,
    read_rows,
    write_json,
)


def test_read_lines_numbers_lines_and_strips_line_endings(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"one\r\ntwo\n\nthree")
    assert list(read_lines(path)) == [(1, "one"), (2, "two"), (3, ""), (4, "three")]


def test_read_lines_reads_gzip_by_content(tmp_path: Path) -> None:
    path = tmp_path / "a.data"  # no .gz suffix: detected by the magic bytes
    path.write_bytes(gzip.compress("é\nb\n".encode()))
    assert [line for _, line in read_lines(path)] == ["é", "b"]


def test_read_lines_bounds_line_length(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("short\n" + "x" * 50 + "\n")
    with pytest.raises(ClientError, match=r"a.txt, line 2: longer than 20 characters"):
        list(read_lines(path, max_chars=20))


def test_read_lines_names_the_line_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"fine\n" * 3 + b"caf\xe9\n")
    with pytest.raises(ClientError, match="not valid UTF-8"):
        list(read_lines(path))


def test_read_lines_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match="no such file"):
        list(read_lines(tmp_path / "nope.txt"))


def test_read_lines_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "a.gz"
    path.write_bytes(gzip.compress(b"a\n" * 1000)[:30])
    with pytest.raises(ClientError, match="gzip"):
        list(read_lines(path))


@pytest.mark.parametrize(
    ("text", "delimiter", "rows"),
    [
        ('a\t"b\tc"\td\n', "\t", [["a", '"b', 'c"', "d"]]),  # QUOTE_NONE: quotes are ordinary characters
        ("1::2::3\n\n4::5::6\n", "::", [["1", "2", "3"], ["4", "5", "6"]]),
        ("1  2\t3\n", "whitespace", [["1", "2", "3"]]),
        ("1,2\n", ",", [["1", "2"]]),
    ],
)
def test_read_rows(tmp_path: Path, text: str, delimiter: str, rows: list[list[str]]) -> None:
    path = tmp_path / "rows.txt"
    path.write_text(text)
    assert [fields for _, fields in read_rows(path, delimiter)] == rows


def test_read_rows_reports_physical_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "rows.txt"
    path.write_text("a,b\n\n\nc,d\n")
    assert [n for n, _ in read_rows(path, ",")] == [1, 4]


def test_atomic_file_leaves_nothing_behind_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out" / "train.jsonl"
    with pytest.raises(RuntimeError), AtomicFile(target) as stream:
        stream.write("partial")
        raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_jsonl_writer_counts_and_writes_compact_lines(tmp_path: Path) -> None:
    target = tmp_path / "train.jsonl"
    with JsonlWriter(target) as writer:
        writer.write_all([pair([1, 2], [3], 1), pair([4], [5], 2.5)])
    assert writer.count == 2
    assert target.read_text() == '{"in0":[1,2],"in1":[3],"label":1}\n{"in0":[4],"in1":[5],"label":2.5}\n'


def test_write_json_keeps_unicode(tmp_path: Path) -> None:
    write_json(tmp_path / "v.json", {"café": 0})
    assert "café" in (tmp_path / "v.json").read_text(encoding="utf-8")


def test_check_outputs_refuses_to_overwrite(tmp_path: Path) -> None:
    existing = tmp_path / "train.jsonl"
    existing.write_text("")
    with pytest.raises(ClientError, match="--overwrite"):
        check_outputs([existing, tmp_path / "test.jsonl"], overwrite=False)
    check_outputs([existing], overwrite=True)


def test_read_json_lines_skips_blank_lines_and_names_the_bad_one(tmp_path: Path) -> None:
    path = tmp_path / "values.jsonl"
    path.write_text('{"in0": [1]}\n\n[2, 3]\n')
    assert list(read_json_lines(path, "--instances")) == [
        (f"--instances {path}, line 1", {"in0": [1]}),
        (f"--instances {path}, line 3", [2, 3]),
    ]
    path.write_text("[1]\n{not json\n")
    with pytest.raises(ClientError, match=r"--instances .*values.jsonl, line 2: not valid JSON"):
        list(read_json_lines(path, "--instances"))
