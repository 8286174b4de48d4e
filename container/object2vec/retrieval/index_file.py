"""The index artifact: one file, model/retrieval.index, written atomically and read memory-mapped.

Layout (all integers little-endian):

    MAGIC (8 bytes)
    sections, each starting at a multiple of ALIGN bytes: raw arrays (uint8, int64 or float32)
    header: UTF-8 JSON, at most MAX_HEADER_BYTES
    the header's length (uint64), MAGIC

The header (written last, so that sections stream out as they are made) describes every section
{"offset", "length", "dtype", "shape"} and holds the rest of the index's metadata. Reading checks
the magic at both ends, bounds the header before parsing it, and checks that each section lies
between the leading magic and the header, does not overlap another, and has exactly the length its
dtype and shape give; the sections are then numpy views of one read-only memory map, so nothing is
copied into the process and every server worker shares the same pages. Nothing in the file is
executable or pickled.

One file means one rename replaces an index: a reader sees the old index or the new one, never a
mix, and a worker that mapped the old file keeps reading it until it restarts.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from object2vec.errors import ClientError
from object2vec.files import atomic_path

INDEX_FILE = "retrieval.index"
MAGIC = b"O2VINDEX"
ALIGN = 64  # section starts: cache-line aligned arrays
MAX_HEADER_BYTES = 1 << 20
DTYPES = {"uint8": np.uint8, "int64": np.int64, "float32": np.float32}
TRAILER = struct.Struct("<Q8s")  # header length, MAGIC

# A section is an array, or a function that writes its bytes to a stream (a faiss index).
SectionSource = np.ndarray | Callable[[Callable[[bytes], Any]], None]


@dataclass(frozen=True)
class IndexFile:
    """A read index file: its header and its sections as read-only views of one memory map."""

    path: Path
    header: dict[str, Any]
    sections: dict[str, np.ndarray]
    size: int  # bytes


def write_index_file(path: Path, header: Mapping[str, Any], sections: Mapping[str, SectionSource]) -> int:
    """Write the file atomically (temp file, fsync, rename); returns its size in bytes.

    Array sections are written as they are; a callable section gets a `write(bytes)` function and
    is stored as uint8. The header gets a "sections" entry.
    """
    with atomic_path(path, durable=True) as tmp, open(tmp, "wb") as stream:
        stream.write(MAGIC)
        table: dict[str, dict[str, Any]] = {}
        for name, source in sections.items():
            _pad(stream)
            start = stream.tell()
            if isinstance(source, np.ndarray):
                array = np.ascontiguousarray(source)
                dtype = next(key for key, value in DTYPES.items() if array.dtype == value)
                stream.write(memoryview(array).cast("B"))
                shape = list(array.shape)
            else:
                source(stream.write)
                dtype, shape = "uint8", [stream.tell() - start]
            table[name] = {"offset": start, "length": stream.tell() - start, "dtype": dtype, "shape": shape}
        encoded = json.dumps({**header, "sections": table}, separators=(",", ":")).encode()
        if len(encoded) > MAX_HEADER_BYTES:
            raise ValueError(f"the index header needs {len(encoded)} bytes, more than {MAX_HEADER_BYTES}")
        stream.write(encoded)
        stream.write(TRAILER.pack(len(encoded), MAGIC))
        size = stream.tell()
    return size


def _pad(stream: IO[bytes]) -> None:
    stream.write(b"\0" * (-stream.tell() % ALIGN))


def read_index_file(path: Path) -> IndexFile:
    """Map the file and check its structure; ClientError (naming the file) if it is not a whole index file."""
    try:
        size = path.stat().st_size
        if size < len(MAGIC) + TRAILER.size:
            raise ValueError(f"it has only {size} bytes")
        mapping = np.memmap(path, dtype=np.uint8, mode="r")
        header, header_start = _header(mapping, size)
        sections = _sections(mapping, header, header_start)
    except (ValueError, OSError) as err:
        raise ClientError(
            f"{path} is not a usable retrieval index ({err}): rebuild it with "
            f"`python -m object2vec index --model-dir {path.parent} CANDIDATES...`"
        ) from err
    return IndexFile(path=path, header=header, sections=sections, size=size)


def _header(mapping: np.ndarray, size: int) -> tuple[dict[str, Any], int]:
    if bytes(mapping[: len(MAGIC)]) != MAGIC:
        raise ValueError("it does not start with the index file's magic bytes")
    length, magic = TRAILER.unpack(bytes(mapping[size - TRAILER.size :]))
    if magic != MAGIC:
        raise ValueError("it does not end with the index file's magic bytes: it may be cut short")
    start = size - TRAILER.size - length
    if length > MAX_HEADER_BYTES or start < len(MAGIC):
        raise ValueError(f"its header length {length} is out of bounds")
    try:
        header = json.loads(bytes(mapping[start : start + length]))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"its header is not valid JSON: {err}") from err
    if not isinstance(header, dict) or not isinstance(header.get("sections"), dict):
        raise ValueError('its header is not an object with "sections"')
    return header, start


def _sections(mapping: np.ndarray, header: dict[str, Any], end: int) -> dict[str, np.ndarray]:
    views: dict[str, np.ndarray] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in header["sections"].items():
        if not isinstance(entry, dict):
            raise ValueError(f"section {name!r} is not described by an object")
        offset, length, dtype, shape = (entry.get(key) for key in ("offset", "length", "dtype", "shape"))
        if dtype not in DTYPES or not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
            raise ValueError(f"section {name!r} has a bad dtype or shape")
        if type(offset) is not int or type(length) is not int or offset % ALIGN or length < 0:
            raise ValueError(f"section {name!r} has a bad offset or length")
        if offset < len(MAGIC) or offset + length > end:
            raise ValueError(f"section {name!r} lies outside the file's data")
        itemsize = np.dtype(DTYPES[dtype]).itemsize
        if int(np.prod(shape, dtype=np.int64)) * itemsize != length:
            raise ValueError(f"section {name!r} has {length} bytes, not what {dtype} {shape} needs")
        spans.append((offset, offset + length, name))
        views[name] = mapping[offset : offset + length].view(DTYPES[dtype]).reshape(shape)
    spans.sort()
    for (_, first_end, first), (second_start, _, second) in zip(spans, spans[1:], strict=False):
        if second_start < first_end:
            raise ValueError(f"sections {first!r} and {second!r} overlap")
    return views
