"""The record format every part shares: JSON Lines objects {"in0": [ids], "in1": [ids], "label": L}.

Training channels (File and Pipe mode), inference requests, retrieval candidates and prepare's
output all speak it, so its media types, keys, compression and the vocabulary check's message
are defined here once. Light on purpose (no torch): serving's codec and prepare import it.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import IO, Any

import orjson

JSONLINES = "application/jsonlines"  # what answers and prepare's reports use
# Other spellings of JSON Lines seen in the wild, accepted wherever JSONLINES is.
JSONLINES_ALIASES = ("application/jsonl", "application/x-jsonlines", "application/json-lines")
JSONLINES_TYPES = (JSONLINES, *JSONLINES_ALIASES)
INPUT_KEYS = ("in0", "in1")  # encoder 0's and encoder 1's token ids
LABEL_KEY = "label"
RECORD_EXAMPLE = '{"in0": [1, 2], "in1": [3], "label": 0}'
GZIP_MAGIC = b"\x1f\x8b"  # compression is recognised by content, never by file name
MAX_VOCAB_FILE_BYTES = 1 << 30  # a 3,000,000-token vocab is well below 1 GiB of JSON


def is_jsonlines(content_type: str) -> bool:
    """Whether a Content-Type (parameters allowed, any case) names JSON Lines."""
    return content_type.split(";")[0].strip().lower() in JSONLINES_TYPES


def is_gzip(head: bytes) -> bool:
    """Whether a stream that starts with `head` (its first two bytes at least) is gzip-compressed."""
    return head[:2] == GZIP_MAGIC


def open_data_file(path: Path) -> IO[bytes]:
    """A binary stream of the file's lines, decompressed when it is gzip (by content, not name)."""
    with open(path, "rb") as probe:
        compressed = is_gzip(probe.read(2))
    # Opened by path, so that closing the returned stream closes the file (a GzipFile handed an
    # open file object leaves that file open).
    return gzip.open(path, "rb") if compressed else open(path, "rb")  # type: ignore[return-value]


def list_data_files(root: Path) -> list[Path]:
    """Files under root, in nested folders too, in a stable order; hidden files are skipped."""
    if not root.is_dir():
        return []
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )


class TooLarge(ValueError):
    """A file beyond its size bound."""


def read_vocab_file(path: Path) -> Any:
    """The JSON value of a vocabulary file (token -> id), plain or gzip, at most MAX_VOCAB_FILE_BYTES.

    Training (data/vocab.py) and prepare (prepare/text.py) each check the ids by their own rules.
    Raises TooLarge, OSError or EOFError (unreadable, or a corrupt gzip stream), or
    orjson.JSONDecodeError (a ValueError).
    """
    if path.stat().st_size > MAX_VOCAB_FILE_BYTES:
        raise TooLarge(f"is larger than {MAX_VOCAB_FILE_BYTES} bytes")
    with open_data_file(path) as stream:
        text = stream.read(MAX_VOCAB_FILE_BYTES + 1)  # bounded: a small gzip file can expand a lot
    if len(text) > MAX_VOCAB_FILE_BYTES:
        raise TooLarge(f"is larger than {MAX_VOCAB_FILE_BYTES} bytes")
    return orjson.loads(text)


def vocab_error(side: int, value: int, vocab_size: int, where: str, approximate: bool = False) -> str:
    """The message for a token id outside [0, vocab_size), the same in training and serving.

    `where` names the record (channel, file and line; or the request's instance and field).
    """
    shown = f"about {value}" if approximate else str(value)
    problem = (
        f'Vocab id "{shown}" is negative'
        if value < 0
        else f'Vocab id "{shown}" is not less than vocab_size={vocab_size}'
    )
    return (
        f"Inconsistent vocab for {INPUT_KEYS[side]} found. {problem} ({where}): ids must lie in "
        f"[0, enc{side}_vocab_size)"
    )
