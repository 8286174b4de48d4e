"""The index file: round trip, memory-mapped sections, every structural check, atomic replacement."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from object2vec.errors import ClientError
from object2vec.retrieval.index_file import ALIGN, MAGIC, MAX_HEADER_BYTES, read_index_file, write_index_file


def sample(path: Path, values: float = 1.0) -> int:
    return write_index_file(
        path,
        {"count": 3, "note": "é"},
        {
            "vectors": np.full((3, 4), values, dtype=np.float32),
            "offsets": np.arange(4, dtype=np.int64),
            "blob": lambda write: (write(b"abc"), write(b"de")),
        },
    )


def test_round_trip_of_arrays_callables_and_header(tmp_path: Path) -> None:
    path = tmp_path / "x.index"
    size = sample(path, 2.5)
    read = read_index_file(path)
    assert read.size == size == path.stat().st_size
    assert read.header["count"] == 3 and read.header["note"] == "é"
    assert read.sections["vectors"].dtype == np.float32 and read.sections["vectors"].shape == (3, 4)
    assert (read.sections["vectors"] == 2.5).all()
    assert read.sections["offsets"].tolist() == [0, 1, 2, 3]
    assert bytes(read.sections["blob"]) == b"abcde"
    assert all(entry["offset"] % ALIGN == 0 for entry in read.header["sections"].values())
    assert isinstance(read.sections["vectors"].base, np.memmap) or isinstance(read.sections["vectors"], np.memmap)
    with pytest.raises(ValueError):
        read.sections["vectors"][0, 0] = 1.0  # read-only


def test_replacement_is_atomic_and_an_open_mapping_keeps_the_old_data(tmp_path: Path) -> None:
    path = tmp_path / "x.index"
    sample(path, 1.0)
    old = read_index_file(path)
    sample(path, 7.0)
    assert (old.sections["vectors"] == 1.0).all()  # the old inode stays mapped
    assert (read_index_file(path).sections["vectors"] == 7.0).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.index"]  # no temp file left


def test_a_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "x.index"
    sample(path, 1.0)
    before = path.read_bytes()

    def broken(write) -> None:
        write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_index_file(path, {}, {"a": np.zeros(3, np.float32), "b": broken})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.index"]


def trailer(path: Path, header_length: int) -> None:
    path.write_bytes(path.read_bytes()[:-16] + struct.pack("<Q", header_length) + MAGIC)


def rewrite_header(path: Path, change) -> None:
    data = path.read_bytes()
    length = struct.unpack("<Q", data[-16:-8])[0]
    header = json.loads(data[-16 - length : -16])
    change(header)
    encoded = json.dumps(header).encode()
    path.write_bytes(data[: -16 - length] + encoded + struct.pack("<Q", len(encoded)) + MAGIC)


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda p: p.write_bytes(b"x" * 10), "only 10 bytes"),
        (lambda p: p.write_bytes(b"NOTINDEX" + p.read_bytes()[8:]), "does not start with"),
        (lambda p: p.write_bytes(p.read_bytes()[:-5]), "does not end with"),
        (lambda p: trailer(p, MAX_HEADER_BYTES + 1), "header length"),
        (lambda p: trailer(p, 10**12), "header length"),
        (lambda p: rewrite_header(p, lambda h: h.pop("sections")), 'with "sections"'),
        (lambda p: rewrite_header(p, lambda h: h["sections"]["vectors"].update(shape=[4, 4])), "not what float32"),
        (lambda p: rewrite_header(p, lambda h: h["sections"]["vectors"].update(dtype="float16")), "bad dtype"),
        (lambda p: rewrite_header(p, lambda h: h["sections"]["vectors"].update(offset=3)), "bad offset"),
        (lambda p: rewrite_header(p, lambda h: h["sections"]["blob"].update(offset=10**9)), "outside the file"),
        (lambda p: rewrite_header(p, lambda h: h["sections"]["offsets"].update(offset=64)), "overlap"),
    ],
    ids=["tiny", "magic", "truncated", "huge-header", "header-past-start", "no-sections", "shape", "dtype",
         "unaligned", "outside", "overlap"],
)  # fmt: skip
def test_damaged_files_are_client_errors_that_say_how_to_rebuild(tmp_path: Path, damage, needle: str) -> None:
    path = tmp_path / "retrieval.index"
    sample(path)
    damage(path)
    with pytest.raises(ClientError) as caught:
        read_index_file(path)
    assert needle in str(caught.value) and "python -m object2vec index" in str(caught.value), str(caught.value)


def test_header_json_errors(tmp_path: Path) -> None:
    path = tmp_path / "retrieval.index"
    sample(path)
    data = path.read_bytes()
    length = struct.unpack("<Q", data[-16:-8])[0]
    path.write_bytes(data[: -16 - length] + b"{" * length + data[-16:])
    with pytest.raises(ClientError, match="not valid JSON"):
        read_index_file(path)


def test_a_header_over_the_limit_is_not_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="header needs"):
        write_index_file(tmp_path / "x.index", {"big": "x" * MAX_HEADER_BYTES}, {})
    assert not any(tmp_path.iterdir())
