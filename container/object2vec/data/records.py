"""Training records: JSON Lines {"in0": [ids], "in1": [ids], "label": L} -> tensors, parsed once.

A channel may hold many files in nested folders, plain or gzip-compressed. Every record is checked
(JSON, keys, integer ids inside the vocabulary, labels) and a bad one is a ClientError naming the
channel, file and line. Sequences are stored flat (values + offsets + lengths) and truncated to
max_seq_len, so memory follows the data, not the longest sequence.
"""

from __future__ import annotations

import functools
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson
import torch

from object2vec.config import Hyperparameters
from object2vec.environment import Channel
from object2vec.errors import AlgorithmError, ClientError
from object2vec.record_format import (
    INPUT_KEYS,
    LABEL_KEY,
    RECORD_EXAMPLE,
    is_jsonlines,
    list_data_files,
    open_data_file,
    vocab_error,
)

logger = logging.getLogger(__name__)

MAX_LINE_BYTES = 1 << 20  # a record of two 5000-token sequences is far below 1 MiB


@dataclass(frozen=True)
class TokenSequences:
    """N variable-length id sequences: sequence i is values[offsets[i] : offsets[i] + lengths[i]]."""

    values: torch.Tensor  # (total_tokens,) int64
    offsets: torch.Tensor  # (N,) int64
    lengths: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    @functools.cached_property
    def fixed_length(self) -> int | None:
        """The length every sequence has, when they all have the same (e.g. 1 for user or item
        ids), else None: batching then needs no per-token bookkeeping."""
        if len(self) == 0 or not bool((self.lengths == self.lengths[0]).all()):
            return None
        return int(self.lengths[0])

    @classmethod
    def from_lists(cls, sequences: list[list[int]]) -> TokenSequences:
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        flat = [token for sequence in sequences for token in sequence]
        return cls.from_flat(np.asarray(flat, dtype=np.int64), lengths)

    @classmethod
    def from_flat(cls, values: np.ndarray, lengths: np.ndarray) -> TokenSequences:
        offsets = np.zeros_like(lengths)
        np.cumsum(lengths[:-1], out=offsets[1:])
        return cls(torch.from_numpy(values), torch.from_numpy(offsets), torch.from_numpy(lengths))

    def truncated(self, max_len: int) -> TokenSequences:
        """Keep the first max_len tokens of every sequence."""
        if len(self) == 0 or int(self.lengths.max()) <= max_len:
            return self
        lengths = self.lengths.numpy()
        position = np.arange(self.values.shape[0]) - np.repeat(self.offsets.numpy(), lengths)
        values = self.values.numpy()[position < max_len]
        return TokenSequences.from_flat(values, np.minimum(lengths, max_len))

    def distinct(self) -> tuple[TokenSequences, torch.Tensor]:
        """The distinct sequences (in order of first appearance) and, for each of the N sequences,
        the index of its distinct one: (D sequences, (N,) int64), so sequences[i] == distinct[inverse[i]]."""
        fixed = self.fixed_length
        if fixed is not None:  # ids of users or items, or sequences padded alike: a row-wise unique
            rows = self.values[self.offsets[:, None] + torch.arange(max(fixed, 1))].numpy() if fixed else None
            rows = rows if rows is not None else np.zeros((len(self), 1), np.int64)  # all empty: one distinct
            _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
        else:
            values = self.values.numpy()
            seen: dict[bytes, int] = {}
            first_of: list[int] = []
            inverse = np.empty(len(self), dtype=np.int64)
            for i, (start, length) in enumerate(zip(self.offsets.tolist(), self.lengths.tolist(), strict=True)):
                key = values[start : start + length].tobytes()
                index = seen.setdefault(key, len(seen))
                if index == len(first_of):
                    first_of.append(i)
                inverse[i] = index
            first = np.asarray(first_of, dtype=np.int64)
        if len(first) == len(self):
            return self, torch.arange(len(self))
        # Renumber the distinct sequences in order of first appearance (np.unique sorts them).
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        inverse = rank[inverse.reshape(-1)]
        return self.select(torch.from_numpy(first[order])), torch.from_numpy(inverse)

    def select(self, index: torch.Tensor) -> TokenSequences:
        """The sequences at `index`, compacted."""
        lengths = self.lengths[index]
        width = int(lengths.max()) if len(lengths) else 0
        mask = torch.arange(width) < lengths[:, None]  # (n, width)
        gather = (self.offsets[index][:, None] + torch.arange(width))[mask]
        return TokenSequences.from_flat(self.values[gather].numpy(), lengths.numpy())


@dataclass(frozen=True)
class PairDataset:
    """Labelled pairs ready for batching."""

    in0: TokenSequences
    in1: TokenSequences
    labels: torch.Tensor  # (N,) int64 class ids for softmax, float32 values for regression

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def read_channel(channel: Channel, hp: Hyperparameters) -> PairDataset:
    """Every record of a File or FastFile channel, validated against the hyperparameters.

    A Pipe-mode channel arrives as FIFOs: data.pipe reads it, with the RecordReader of this module.
    """
    if channel.input_mode == "Pipe":
        raise AlgorithmError(f"channel {channel.name} is in Pipe mode: read it with data.pipe.read_pipe")
    check_content_type(channel)
    files = list_data_files(channel.path)
    if not files:
        raise ClientError(
            f"channel {channel.name} has no data files under {channel.path}: put one or more "
            "JSON Lines files (plain or .gz) there"
        )
    reader = RecordReader(channel.name, hp)
    for path in files:
        with open_data_file(path) as stream:
            reader.read(path.relative_to(channel.path), stream)
    dataset = reader.finish()
    logger.info(
        "Channel %s: %d records from %d file(s)%s",
        channel.name,
        len(dataset),
        len(files),
        f", {reader.blank_lines} blank line(s) skipped" if reader.blank_lines else "",
    )
    return dataset


def check_content_type(channel: Channel) -> None:
    if channel.content_type is None:
        return  # no ContentType on the channel means JSON Lines (the SDK's RecordSet sends none)
    if not is_jsonlines(channel.content_type):
        raise ClientError(
            f"channel {channel.name} has ContentType {channel.content_type!r}, but Object2Vec "
            "reads JSON Lines: set it to application/jsonlines (or leave it unset)"
        )


class RecordReader:
    """Accumulates records from files; converts and checks them in bulk at the end of each file."""

    def __init__(self, channel: str, hp: Hyperparameters) -> None:
        self.channel = channel
        self.hp = hp
        self.blank_lines = 0
        self.parts: list[tuple[list[np.ndarray], list[np.ndarray], np.ndarray]] = []

    def read(self, name: Path, stream: IO[bytes]) -> None:
        flat: tuple[list[Any], list[Any]] = ([], [])
        lengths: tuple[list[int], list[int]] = ([], [])
        labels: list[Any] = []
        line_numbers: list[int] = []
        try:
            for line_number, line in enumerate(stream, 1):
                if len(line) > MAX_LINE_BYTES:
                    self.fail(name, line_number, f"is longer than {MAX_LINE_BYTES} bytes")
                if not line.strip():
                    self.blank_lines += 1
                    continue
                record = self.parse(name, line_number, line)
                for side in (0, 1):
                    sequence = record[INPUT_KEYS[side]]
                    flat[side].extend(sequence)
                    lengths[side].append(len(sequence))
                labels.append(record[LABEL_KEY])
                line_numbers.append(line_number)
        except (OSError, EOFError, zlib.error) as err:  # a corrupt gzip stream, for instance
            raise ClientError(f"channel {self.channel}, file {name}: cannot be read: {err}") from err
        if not labels:
            return
        lines = np.asarray(line_numbers)
        sides = [self.check_ids(name, side, flat[side], lengths[side], lines) for side in (0, 1)]
        self.parts.append(
            (
                [sides[0][0], sides[1][0]],
                [sides[0][1], sides[1][1]],
                self.check_labels(name, labels, lines),
            )
        )

    def parse(self, name: Path, line_number: int, line: bytes) -> dict[str, Any]:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as err:
            self.fail(name, line_number, f"is not valid JSON ({err})")
        if not isinstance(record, dict):
            self.fail(name, line_number, f"must be a JSON object like {RECORD_EXAMPLE}")
        for key in (*INPUT_KEYS, LABEL_KEY):
            if key not in record:
                self.fail(name, line_number, f'has no "{key}"')
        for key in INPUT_KEYS:
            if not isinstance(record[key], list):
                self.fail(name, line_number, f'"{key}" must be a list of token ids, like [4, 17]')
        return record

    def check_ids(
        self, name: Path, side: int, flat: list[Any], lengths: list[int], lines: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Bulk type and range check of one input's ids; locate the first bad one by record."""
        key = INPUT_KEYS[side]
        lengths_array = np.asarray(lengths, dtype=np.int64)
        vocab_size = self.hp.encoder(side).vocab_size
        # set(map(type, ...)) runs in C: it catches floats, strings and booleans (which numpy
        # would silently turn into ids) before the bulk conversion.
        if flat and set(map(type, flat)) != {int}:
            record = _first_record_with(flat, lengths_array, lambda v: type(v) is not int)
            self.fail(name, int(lines[record]), f'"{key}" must hold integer token ids only')
        try:
            values = np.asarray(flat, dtype=np.int64) if flat else np.zeros(0, dtype=np.int64)
        except OverflowError:  # an id beyond 64 bits is certainly beyond the vocabulary
            values = np.asarray([min(max(v, -1), vocab_size) for v in flat], dtype=np.int64)
        bad = np.flatnonzero((values < 0) | (values >= vocab_size))
        if bad.size:
            record = int(np.searchsorted(np.cumsum(lengths_array), bad[0], side="right"))
            where = f"channel {self.channel}, file {name}, line {int(lines[record])}"
            raise ClientError(vocab_error(side, int(flat[bad[0]]), vocab_size, where))
        sequences = TokenSequences.from_flat(values, lengths_array)
        sequences = sequences.truncated(self.hp.encoder(side).max_seq_len)
        return sequences.values.numpy(), sequences.lengths.numpy()

    def check_labels(self, name: Path, labels: list[Any], lines: np.ndarray) -> np.ndarray:
        def is_number(value: Any) -> bool:
            return type(value) in (int, float)

        try:
            array = np.asarray(labels, dtype=np.float64)
        except (ValueError, TypeError):  # a list or object among them: mark only those
            array = np.asarray([v if is_number(v) else np.nan for v in labels], dtype=np.float64)
        if self.hp.is_classification:
            num_classes = self.hp.num_classes
            ok = np.isfinite(array) & (array == np.round(array)) & (array >= 0) & (array < num_classes)
            if not ok.all() or not all(map(is_number, labels)):
                index = next(i for i, v in enumerate(labels) if not (is_number(v) and ok[i]))
                self.fail(
                    name,
                    int(lines[index]),
                    f'"label" is {_show(labels[index])}, but output_layer=softmax needs an integer '
                    f"class 0..{num_classes - 1} (num_classes={num_classes})",
                )
            return array.astype(np.int64)
        ok = np.isfinite(array)
        if not ok.all() or not all(map(is_number, labels)):
            index = next(i for i, v in enumerate(labels) if not (is_number(v) and ok[i]))
            self.fail(
                name,
                int(lines[index]),
                f'"label" is {_show(labels[index])}, but output_layer=mean_squared_error needs a number',
            )
        return array.astype(np.float32)

    def fail(self, name: Path, line_number: int, problem: str) -> Any:
        raise ClientError(f"channel {self.channel}, file {name}, line {line_number}: record {problem}")

    def finish(self) -> PairDataset:
        if not self.parts:
            raise ClientError(
                f"channel {self.channel} holds no records: each line must be a JSON object like {RECORD_EXAMPLE}"
            )
        inputs = []
        for side in (0, 1):
            values = np.concatenate([part[0][side] for part in self.parts])
            lengths = np.concatenate([part[1][side] for part in self.parts])
            inputs.append(TokenSequences.from_flat(values, lengths))
        labels = torch.from_numpy(np.concatenate([part[2] for part in self.parts]))
        return PairDataset(in0=inputs[0], in1=inputs[1], labels=labels)


def _first_record_with(flat: list[Any], lengths: np.ndarray, is_bad: Any) -> int:
    position = next(i for i, value in enumerate(flat) if is_bad(value))
    return int(np.searchsorted(np.cumsum(lengths), position, side="right"))


def _show(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 40 else text[:37] + "..."
