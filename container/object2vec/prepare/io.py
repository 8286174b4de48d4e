"""File plumbing shared by the `prepare` subcommands: bounded line reading, atomic writers, reports.

Inputs are read line by line (plain or gzip, UTF-8), each line bounded in length, and every problem
becomes a ClientError naming the file and line. Outputs are written to a hidden temporary file in
the destination folder and renamed into place only when complete, so an interrupted run never
leaves a half-written train.jsonl behind.
"""

from __future__ import annotations

import csv
import gzip
import json
import sys
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson

from object2vec.errors import ClientError
from object2vec.files import atomic_path
from object2vec.record_format import INPUT_KEYS, LABEL_KEY, is_gzip

MAX_LINE_CHARS = 1 << 20  # 1 MiB of text per line: far above any sentence, document or ratings row


def open_text(path: Path) -> IO[str]:
    """Open a UTF-8 text file for reading, transparently gunzipping it when it is gzip-compressed."""
    try:
        with path.open("rb") as probe:
            compressed = is_gzip(probe.read(2))
        if compressed:
            return gzip.open(path, "rt", encoding="utf-8", newline="")
        return path.open("r", encoding="utf-8", newline="")
    except FileNotFoundError as err:
        raise ClientError(f"{path}: no such file; check the path") from err
    except IsADirectoryError as err:
        raise ClientError(f"{path}: is a folder; pass a file") from err
    except OSError as err:
        raise ClientError(f"{path}: cannot be opened: {err}") from err


def read_lines(path: Path, max_chars: int = MAX_LINE_CHARS) -> Iterator[tuple[int, str]]:
    """Yield (line_number, line without its line ending), one line at a time."""
    line_number = 0
    try:
        with open_text(path) as stream:
            for line_number, line in enumerate(stream, 1):
                if len(line) > max_chars:
                    raise ClientError(
                        f"{path}, line {line_number}: longer than {max_chars} characters; "
                        "split the line or check that the file is the text format expected"
                    )
                yield line_number, line.rstrip("\r\n")
    except UnicodeDecodeError as err:
        raise ClientError(
            f"{path}, line {line_number + 1}: not valid UTF-8 ({err.reason}); convert the file to UTF-8"
        ) from err
    except (EOFError, gzip.BadGzipFile) as err:
        raise ClientError(f"{path}: the gzip stream is corrupt or truncated ({err})") from err
    except OSError as err:
        raise ClientError(f"{path}, line {line_number + 1}: cannot be read: {err}") from err


def read_json_lines(path: Path, option: str, max_chars: int = MAX_LINE_CHARS) -> Iterator[tuple[str, Any]]:
    """Yield (where, value) for each non-blank line of a JSON Lines file; `where` ("--option FILE,
    line N") starts the ClientError of a value the caller finds wrong."""
    for line_number, line in read_lines(path, max_chars):
        if not line.strip():
            continue
        where = f"{option} {path}, line {line_number}"
        try:
            yield where, orjson.loads(line)
        except orjson.JSONDecodeError as err:
            raise ClientError(f"{where}: not valid JSON ({err}); write one JSON value per line") from err


def read_rows(
    path: Path, delimiter: str, quoting: int = csv.QUOTE_NONE, max_chars: int = MAX_LINE_CHARS
) -> Iterator[tuple[int, list[str]]]:
    """Yield (line_number, fields) of a delimited file; blank lines are skipped.

    QUOTE_NONE (the default) treats quotes as ordinary characters, as STS Benchmark's TSV files need.
    A multi-character delimiter (MovieLens-1M's "::") or "whitespace" is split without csv.
    """
    if delimiter == "whitespace":
        for line_number, line in read_lines(path, max_chars):
            if line.strip():
                yield line_number, line.split()
        return
    if len(delimiter) > 1:
        for line_number, line in read_lines(path, max_chars):
            if line.strip():
                yield line_number, line.split(delimiter)
        return
    numbered = read_lines(path, max_chars)
    current = [0]

    def lines() -> Iterator[str]:
        for line_number, line in numbered:
            current[0] = line_number
            yield line

    try:
        for fields in csv.reader(lines(), delimiter=delimiter, quoting=quoting, strict=True):
            if fields and any(field.strip() for field in fields):
                yield current[0], fields
    except csv.Error as err:
        raise ClientError(f"{path}, line {current[0]}: cannot be parsed as delimited text ({err})") from err


class AtomicFile:
    """A text file written under a temporary name and renamed into place on a clean exit (files.atomic_path)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stream: IO[str] | None = None
        self._target: AbstractContextManager[Path] | None = None

    def __enter__(self) -> IO[str]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._target = atomic_path(self.path)
            temporary = self._target.__enter__()
            self.stream = temporary.open("w", encoding="utf-8", newline="\n")
        except OSError as err:
            raise ClientError(f"{self.path}: cannot be written: {err}") from err
        return self.stream

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        assert self.stream is not None and self._target is not None
        self.stream.close()
        self._target.__exit__(kind, error, trace)  # renames into place, or removes the temporary file


class JsonlWriter:
    """Writes one compact JSON object per line, atomically; counts what it wrote."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._file = AtomicFile(path)
        self._stream: IO[str] | None = None

    def __enter__(self) -> JsonlWriter:
        self._stream = self._file.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._file.__exit__(kind, error, trace)

    def write(self, record: dict[str, Any]) -> None:
        assert self._stream is not None
        self._stream.write(orjson.dumps(record).decode())
        self._stream.write("\n")
        self.count += 1

    def write_all(self, records: Iterable[dict[str, Any]]) -> int:
        for record in records:
            self.write(record)
        return self.count


def pair(in0: list[int], in1: list[int], label: int | float) -> dict[str, Any]:
    """One training record in the order the AWS notebooks write it."""
    return {INPUT_KEYS[0]: in0, INPUT_KEYS[1]: in1, LABEL_KEY: label}


def write_json(path: Path, value: Any) -> None:
    """A small JSON document (a vocabulary), atomically, UTF-8 without escaping."""
    with AtomicFile(path) as stream:
        stream.write(json.dumps(value, ensure_ascii=False, indent=0 if isinstance(value, dict) else None))
        stream.write("\n")


def check_outputs(paths: Iterable[Path], overwrite: bool) -> None:
    """Refuse to replace existing outputs unless --overwrite was given (checked before any work)."""
    existing = [str(path) for path in paths if path.exists()]
    if existing and not overwrite:
        raise ClientError(
            f"{', '.join(existing)} already exist(s); pass --overwrite to replace, or choose another --output-dir"
        )


def print_report(report: dict[str, Any]) -> None:
    """The machine-readable result of a subcommand: one JSON document on stdout."""
    sys.stdout.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()
