"""The catalogue a retrieval index holds: JSON Lines candidates, read in blocks and checked.

One JSON object per line, {"id": "m12", "in1": [4, 17]}: the id (a string of 1 to MAX_ID_CHARS
characters, or an integer) is what responses return; "in1" (or "in0") holds the candidate's token
ids, encoded by that side's encoder. Every record of a catalogue uses the same side. Other keys (a
title, say) are ignored. Files may be plain or gzip, in nested folders, like every channel; blank
lines are skipped. A malformed record, a repeated id, or a token id outside the vocabulary is a
ClientError naming the file and line, worded like the train channel's.

Records are handed on in blocks of at most BLOCK_RECORDS lines (one file at a time), so that a catalogue
of millions streams through encoding with bounded memory; ids are kept as their JSON encoding
(b'"m12"', b'12'), which is also how responses write them.
"""

from __future__ import annotations

import gc
import logging
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from object2vec.config import Hyperparameters
from object2vec.data.records import MAX_LINE_BYTES, TokenSequences, check_content_type
from object2vec.environment import Channel
from object2vec.errors import ClientError
from object2vec.record_format import INPUT_KEYS, list_data_files, open_data_file

logger = logging.getLogger(__name__)

CHANNEL = "candidates"
MAX_ID_CHARS = 1000
MAX_CANDIDATES = 100_000_000  # bounds the id table and the index; far above a real catalogue per model
BLOCK_RECORDS = 65_536
EXAMPLE = '{"id": "m12", "in1": [4, 17]}'

# A source of candidate lines: its name in messages and a function that opens it.
Source = tuple[str, Callable[[], IO[bytes]]]
# What JSON (and orjson) escapes in a string: a string id without these is written between quotes as it is.
_ESCAPED = re.compile(r'[\x00-\x1f"\\]')


@dataclass(frozen=True)
class CandidateBlock:
    """Consecutive candidates of one file, checked: ids and token ids of `side`'s encoder."""

    side: int  # 0: the records hold "in0" (enc0 objects), 1: "in1"
    ids: list[bytes]  # each id's JSON encoding
    sequences: TokenSequences  # not truncated (encoding truncates like requests)

    def __len__(self) -> int:
        return len(self.ids)


def channel_sources(channel: Channel) -> list[Source]:
    """The files of the candidates channel (File, FastFile) or its first FIFO (Pipe)."""
    check_content_type(channel)
    if channel.input_mode == "Pipe":
        from object2vec.data.pipe import open_pipe, wait_for_pipe

        return [(f"channel {channel.name}, pipe {channel.path.name}_0", lambda: open_pipe(wait_for_pipe(channel, 0)))]
    files = list_data_files(channel.path)
    if not files:
        raise ClientError(
            f"channel {channel.name} has no data files under {channel.path}: put one or more JSON Lines "
            f"files (plain or .gz) of candidates like {EXAMPLE} there, or leave the channel out"
        )
    return [(f"channel {channel.name}, file {path.relative_to(channel.path)}", _opener(path)) for path in files]


def path_sources(paths: Iterable[Path]) -> list[Source]:
    """Files given on a command line; a folder stands for every file under it (hidden ones skipped)."""
    sources: list[Source] = []
    for path in paths:
        if path.is_dir():
            files = list_data_files(path)
            if not files:
                raise ClientError(f"{path} holds no files: give JSON Lines files of candidates like {EXAMPLE}")
            sources += [(f"file {file}", _opener(file)) for file in files]
        elif path.is_file():
            sources.append((f"file {path}", _opener(path)))
        else:
            raise ClientError(f"{path}: no such file or folder")
    return sources


def read_catalogue(channel: Channel, hp: Hyperparameters) -> list[CandidateBlock]:
    """Every candidate of the channel, checked (the training job reads it before training, to fail fast)."""
    reader = CandidateReader(hp)
    blocks = list(reader.blocks(channel_sources(channel)))
    logger.info(
        "Channel %s: %d candidates (%s)%s",
        channel.name,
        reader.count,
        INPUT_KEYS[blocks[0].side],
        f", {reader.blank_lines} blank line(s) skipped" if reader.blank_lines else "",
    )
    return blocks


def _opener(path: Path) -> Callable[[], IO[bytes]]:
    return lambda: open_data_file(path)


class CandidateReader:
    """Reads sources one after the other, yielding checked blocks; remembers every id to refuse repeats."""

    def __init__(self, hp: Hyperparameters, block_records: int = BLOCK_RECORDS) -> None:
        self.hp = hp
        self.block_records = block_records
        self.side: int | None = None
        self.count = 0
        self.blank_lines = 0
        self._seen: set[bytes] = set()  # every id so far (its JSON encoding)
        # Per block: (source index, ids, their lines), to name the first record of a repeated id.
        self._history: list[tuple[int, list[bytes], Sequence[int]]] = []
        self._names: list[str] = []

    def blocks(self, sources: Iterable[Source]) -> Iterator[CandidateBlock]:
        for name, open_source in sources:
            self._names.append(name)
            try:
                with open_source() as stream:
                    yield from self._read(name, stream)
            except (OSError, EOFError, zlib.error) as err:  # a corrupt gzip stream, for instance
                raise ClientError(f"{name}: cannot be read: {err}") from err
        if self.count == 0:
            raise ClientError(f"the catalogue holds no candidates: give one JSON object per line like {EXAMPLE}")

    def _read(self, name: str, stream: IO[bytes]) -> Iterator[CandidateBlock]:
        """One block per BLOCK_RECORDS lines: checked in bulk, or line by line when the bulk check
        fails (which then finds the line to blame) or the lines include blank ones."""
        first_line = 1
        while chunk := list(islice(stream, self.block_records)):
            with _collector_paused():  # 65k new dicts at once would set off the cyclic GC again and again
                block = self._bulk(name, chunk, first_line)
            if block is None:
                block = self._line_by_line(name, chunk, first_line)
            if block is not None:
                yield block
            first_line += len(chunk)

    def _bulk(self, name: str, chunk: list[bytes], first_line: int) -> CandidateBlock | None:
        """The block when every line is a well-formed new candidate (one orjson call, checks in C
        loops); None otherwise, with nothing recorded."""
        if max(map(len, chunk)) > MAX_LINE_BYTES:
            return None
        try:
            records = orjson.loads(b"[" + b",".join(chunk) + b"]")
        except orjson.JSONDecodeError:  # a bad or blank line
            return None
        if len(records) != len(chunk) or set(map(type, records)) != {dict}:
            return None
        identifiers = [record.get("id") for record in records]
        kinds = set(map(type, identifiers))
        if not kinds <= {str, int} or (str in kinds and not _string_ids_fit(identifiers, kinds)):
            return None
        sides = {("in0" in record) + 2 * ("in1" in record) for record in records}  # 1: in0, 2: in1
        if len(sides) != 1 or sides.isdisjoint((1, 2)) or (self.side is not None and sides != {self.side + 1}):
            return None
        side = next(iter(sides)) - 1
        sequences = [record[INPUT_KEYS[side]] for record in records]
        if set(map(type, sequences)) != {list} or self.count + len(records) > MAX_CANDIDATES:
            return None
        keys = _json_ids(identifiers, kinds)
        if not self._seen.isdisjoint(keys):
            return None  # a repeated id: the line-by-line pass names both lines
        seen = len(self._seen)
        self._seen.update(keys)
        if len(self._seen) != seen + len(keys):  # an id repeated within the block: every one of them was new
            self._seen.difference_update(keys)
            return None
        lines = range(first_line, first_line + len(chunk))
        block = self._block(name, side, keys, list(chain.from_iterable(sequences)), list(map(len, sequences)), lines)
        self.side = side
        self.count += len(records)
        self._history.append((len(self._names) - 1, keys, lines))
        return block

    def _line_by_line(self, name: str, chunk: list[bytes], first_line: int) -> CandidateBlock | None:
        source = len(self._names) - 1
        ids: list[bytes] = []
        in_block: set[bytes] = set()
        flat: list[Any] = []
        lengths: list[int] = []
        lines: list[int] = []
        for line_number, line in enumerate(chunk, first_line):
            if len(line) > MAX_LINE_BYTES:
                self._fail(name, line_number, f"is longer than {MAX_LINE_BYTES} bytes")
            if not line.strip():
                self.blank_lines += 1
                continue
            key, sequence = self._parse(name, line_number, line)
            if key in self._seen or key in in_block:
                first_source, first_line_number = self._first_record(key, source, ids, lines)
                where = "" if first_source == source else f"{self._names[first_source]}, "
                self._fail(
                    name,
                    line_number,
                    f"repeats the id {key.decode()} of {where}line {first_line_number}: candidate ids must be unique",
                )
            ids.append(key)
            in_block.add(key)
            flat.extend(sequence)
            lengths.append(len(sequence))
            lines.append(line_number)
        if not ids:
            return None
        assert self.side is not None
        block = self._block(name, self.side, ids, flat, lengths, lines)
        self._seen |= in_block
        self._history.append((source, ids, lines))
        return block

    def _first_record(self, key: bytes, source: int, ids: list[bytes], lines: list[int]) -> tuple[int, int]:
        """(source index, line) of the first record with this id: a scan, made only to word an error."""
        for block_source, block_ids, block_lines in chain(self._history, [(source, ids, lines)]):
            if key in block_ids:
                return block_source, block_lines[block_ids.index(key)]
        raise AssertionError("a repeated id was seen before")

    def _parse(self, name: str, line_number: int, line: bytes) -> tuple[bytes, list[Any]]:
        """(the id's JSON encoding, the token list), the record's shape checked."""
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as err:
            self._fail(name, line_number, f"is not valid JSON ({err})")
        if not isinstance(record, dict):
            self._fail(name, line_number, f"must be a JSON object like {EXAMPLE}")
        if "id" not in record:
            self._fail(name, line_number, f'has no "id": every candidate needs one, like {EXAMPLE}')
        identifier = record["id"]
        if type(identifier) is str:
            if not 1 <= len(identifier) <= MAX_ID_CHARS:
                self._fail(name, line_number, f'"id" must be a string of 1 to {MAX_ID_CHARS} characters')
        elif type(identifier) is not int:
            self._fail(name, line_number, f'"id" must be a string or an integer, not {_show(identifier)}')
        present = [side for side in (0, 1) if INPUT_KEYS[side] in record]
        if len(present) != 1:
            self._fail(
                name,
                line_number,
                'must hold exactly one of "in0" and "in1": a candidate is one object, encoded by that side\'s encoder',
            )
        side = present[0]
        if self.side is None:
            self.side = side
        elif side != self.side:
            self._fail(
                name,
                line_number,
                f'has "{INPUT_KEYS[side]}" but the catalogue\'s first record has "{INPUT_KEYS[self.side]}": '
                "every candidate of a catalogue is on the same side",
            )
        sequence = record[INPUT_KEYS[side]]
        if type(sequence) is not list:
            self._fail(name, line_number, f'"{INPUT_KEYS[side]}" must be a list of token ids, like [4, 17]')
        self.count += 1
        if self.count > MAX_CANDIDATES:
            raise ClientError(f"the catalogue has more than {MAX_CANDIDATES} candidates: split it across models")
        return orjson.dumps(identifier), sequence

    def _block(
        self, name: str, side: int, ids: list[bytes], flat: list[Any], lengths: list[int], lines: Sequence[int]
    ) -> CandidateBlock:
        """Bulk type and range check of a block's token ids; the first bad one is located by line."""
        key = INPUT_KEYS[side]
        lengths_array = np.asarray(lengths, dtype=np.int64)
        vocab_size = self.hp.encoder(side).vocab_size
        # set(map(type, ...)) runs in C: floats, strings and booleans fail before numpy sees them.
        if flat and set(map(type, flat)) != {int}:
            position = next(i for i, value in enumerate(flat) if type(value) is not int)
            record = int(np.searchsorted(np.cumsum(lengths_array), position, side="right"))
            self._fail(name, lines[record], f'"{key}" must hold integer token ids only, found {_show(flat[position])}')
        try:
            values = np.asarray(flat, dtype=np.int64) if flat else np.zeros(0, dtype=np.int64)
        except OverflowError:  # beyond 64 bits is beyond the vocabulary
            values = np.asarray([min(max(v, -1), vocab_size) for v in flat], dtype=np.int64)
        bad = np.flatnonzero((values < 0) | (values >= vocab_size))
        if bad.size:
            record = int(np.searchsorted(np.cumsum(lengths_array), bad[0], side="right"))
            value = int(flat[bad[0]])
            problem = (
                f'Vocab id "{value}" is negative'
                if value < 0
                else f'Vocab id "{value}" is not less than vocab_size={vocab_size}'
            )
            raise ClientError(
                f"Inconsistent vocab for {key} found. {problem} ({name}, line {lines[record]}): ids must lie in "
                f"[0, enc{side}_vocab_size)"
            )
        return CandidateBlock(side=side, ids=ids, sequences=TokenSequences.from_flat(values, lengths_array))

    def _fail(self, name: str, line_number: int, problem: str) -> Any:
        raise ClientError(f"{name}, line {line_number}: candidate {problem}")


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The records parsed in bulk hold no reference cycles (refcounting frees them); a full
    collection per few hundred allocations made bulk parsing 3x slower."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _string_ids_fit(identifiers: list[Any], kinds: set[type]) -> bool:
    if kinds == {str}:
        lengths = list(map(len, identifiers))
        return min(lengths) >= 1 and max(lengths) <= MAX_ID_CHARS
    return all(1 <= len(value) <= MAX_ID_CHARS for value in identifiers if type(value) is str)


def _json_ids(identifiers: list[Any], kinds: set[type]) -> list[bytes]:
    """Each id's JSON encoding, exactly as orjson.dumps writes it, made in a few C-level passes.

    orjson.dumps per id cost about 2 us (a fresh page of memory each call: one page fault per id);
    the common catalogues (all string ids that need no escaping, or all integers) are joined into
    one text and split. Other blocks take orjson per id."""
    if kinds == {str} and _ESCAPED.search("".join(identifiers)) is None:
        try:
            # No id holds a control character, so "\x00" separates them; orjson writes non-ASCII as UTF-8.
            return ('"' + '"\x00"'.join(identifiers) + '"').encode().split(b"\x00")
        except UnicodeEncodeError:  # a lone surrogate (orjson refuses those when parsing, so not expected)
            pass
    elif kinds == {int}:
        return ",".join(map(str, identifiers)).encode().split(b",")
    return list(map(orjson.dumps, identifiers))


def _show(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 40 else text[:37] + "..."
