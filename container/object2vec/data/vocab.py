"""The auxiliary channel: vocab files (token -> id JSON) and pretrained token-embedding files.

A pretrained embedding file is GloVe-style text: one token per line followed by its vector's
floats, separated by spaces, no header; a word2vec-style first line "count dim" is recognised and
skipped; gzip is detected by content. Files such as glove.840B.300d.txt are gigabytes, so the file
is streamed once, line by line, and only the lines whose token is in the vocab are parsed and kept:
memory follows the vocabulary, not the file, and the unmatched lines cost one `find` and one dict
look-up each (the floats of a line are parsed only when its token is wanted).

Rules (documented in the README):
- a token found in the file initialises the embedding row of its vocab id; the first line of a
  token wins when the file repeats it; when several tokens share an id, the first of them found
  in the file wins;
- tokens that contain spaces are found too (GloVe 840B has a few): such a line is split from the
  right, since the vector always has exactly `dim` fields;
- a vector dimension other than encX_token_embedding_dim is a ClientError naming both numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import orjson
import torch
from torch import nn

from object2vec.config import Hyperparameters
from object2vec.environment import AUXILIARY, Channel
from object2vec.errors import ClientError
from object2vec.record_format import TooLarge, open_data_file, read_vocab_file

logger = logging.getLogger(__name__)

LISTED_FILES = 10  # how many of the channel's files a "not found" message names
FROZEN_ROWS = "frozen_rows"  # the non-persistent (V,) bool buffer set on a token embedding


@dataclass(frozen=True)
class PretrainedRows:
    """What a pretrained file gave a vocabulary: ids[i] takes vectors[i]."""

    ids: np.ndarray  # (F,) int64, distinct, sorted
    vectors: np.ndarray  # (F, dim) float32
    dim: int
    lines: int  # vector lines read from the file

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def read_vocab(path: Path, vocab_size: int, name: str = "vocab file") -> dict[str, int]:
    """A token -> id JSON map (plain or gzip), every id checked to lie in [0, vocab_size)."""
    try:
        vocab = read_vocab_file(path)
    except TooLarge as err:
        raise ClientError(f"{name} {path.name} {err}: not a vocab file") from err
    except (orjson.JSONDecodeError, OSError, EOFError) as err:
        raise ClientError(f"{name} {path.name} is not valid JSON: {err}") from err
    if not isinstance(vocab, dict):
        raise ClientError(f'{name} {path.name} must be a JSON object mapping token to id, like {{"the": 0, "cat": 1}}')
    for token, index in vocab.items():
        if type(index) is not int:
            raise ClientError(f"{name} {path.name}: token {token!r} has id {index!r}, which is not an integer")
        if not 0 <= index < vocab_size:
            raise ClientError(
                f"{name} {path.name}: token {token!r} has id {index}, outside [0, {vocab_size}): the vocab file "
                "must use the ids of the training data, which lie below the encoder's vocab_size"
            )
    return vocab


def read_pretrained(
    stream: IO[bytes], vocab: dict[str, int], dim: int | None = None, name: str = "embedding file"
) -> PretrainedRows:
    """Stream a GloVe/word2vec text file and keep the vectors of the vocab's tokens.

    `dim`, when given, is the dimension the caller needs; the file's own is checked against it on
    the first vector line, so a mismatch fails before the file is read through.
    """
    wanted: dict[bytes, int] = {token.encode(): index for token, index in vocab.items()}
    # First words of vocab tokens that contain spaces: only their lines need the slow split.
    spaced_heads = {token.split(b" ", 1)[0] for token in wanted if b" " in token}
    slots: dict[int, int] = {}  # id -> row of `vectors`
    vectors: np.ndarray | None = None
    file_dim = 0
    lines = 0
    for line_number, line in _numbered_lines(stream):
        if file_dim == 0:
            file_dim, is_header = _first_line(line, line_number, name)
            if dim is not None and file_dim != dim:
                raise ClientError(
                    f"{name} has {file_dim}-dimensional vectors, but the token embedding dimension is {dim}: "
                    f"set the encoder's token_embedding_dim to {file_dim} (the file's), not {dim}"
                )
            # np.empty reserves address space only: pages are touched as rows are found.
            vectors = np.empty((len(set(wanted.values())), file_dim), dtype=np.float32)
            if is_header:
                continue
        lines += 1
        space = line.find(b" ")
        token = line[:space]
        index = wanted.get(token)
        if index is None and token not in spaced_heads:
            continue
        fields = line[space + 1 :].split()
        if len(fields) != file_dim:  # a token with spaces: the last file_dim fields are the vector
            parts = line.rstrip().rsplit(b" ", file_dim)
            if len(parts) != file_dim + 1:
                raise ClientError(
                    f"{name}, line {line_number}: has {len(line.split()) - 1} values after the token, "
                    f"expected {file_dim} (the dimension of the first vector line)"
                )
            token, fields = parts[0], parts[1:]
            index = wanted.get(token)
        if index is None or index in slots:
            continue
        try:
            row = np.array(fields, dtype=np.float32)
        except ValueError as err:
            raise ClientError(f"{name}, line {line_number}: a vector value is not a number ({err})") from err
        if not np.isfinite(row).all():
            raise ClientError(f"{name}, line {line_number}: the vector has a value that is not finite")
        slots[index] = len(slots)
        assert vectors is not None
        vectors[slots[index]] = row
    if file_dim == 0:
        raise ClientError(f"{name} holds no vectors: each line must be a token followed by its floats")
    assert vectors is not None
    ids = np.fromiter(slots.keys(), dtype=np.int64, count=len(slots))
    rows = np.fromiter(slots.values(), dtype=np.int64, count=len(slots))
    order = np.argsort(ids)
    return PretrainedRows(ids=ids[order], vectors=vectors[rows[order]], dim=file_dim, lines=lines)


def _numbered_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    for line_number, line in enumerate(stream, 1):
        line = line.rstrip(b"\r\n")
        if line:
            yield line_number, line


def _first_line(line: bytes, line_number: int, name: str) -> tuple[int, bool]:
    """(vector dimension, whether the line is a word2vec "count dim" header)."""
    parts = line.split()
    if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
        return int(parts[1]), True
    if len(parts) < 2:
        raise ClientError(f"{name}, line {line_number}: expected a token followed by its vector's floats")
    return len(parts) - 1, False


# ---------------------------------------------------------------------------------------------
# The training job's side: find the files in the auxiliary channel and initialise the model.


@dataclass(frozen=True)
class EncoderInit:
    """What the log reports for one encoder's token embedding."""

    index: int
    vocab_size: int
    pretrained_rows: int  # rows of its table initialised from a pretrained file
    frozen_rows: int  # rows of its table kept fixed in training
    files: tuple[str, ...]  # the pretrained files that gave its table rows
    tied_to: int | None = None  # tied weights: the encoder whose table this one shares

    def describe(self) -> str:
        tied = f" (tied: one table shared with enc{self.tied_to})" if self.tied_to is not None else ""
        if not self.files:
            return (
                f"enc{self.index} token embedding: 0 of {self.vocab_size} vocab rows from a pretrained file "
                f"(none given){tied}; all rows trainable"
            )
        if self.frozen_rows == 0:
            state = "trainable"
        elif self.frozen_rows == self.pretrained_rows:
            state = "frozen"
        else:
            state = f"{self.frozen_rows} of them frozen"
        return (
            f"enc{self.index} token embedding: {self.pretrained_rows} of {self.vocab_size} vocab rows from "
            f"pretrained file {', '.join(self.files)}, {state}{tied}"
        )


def auxiliary_file(channel: Channel | None, key: str, file_name: str) -> Path:
    """The file named by hyperparameter `key`, checked to be a regular file atop the channel."""
    if channel is None:
        raise ClientError(
            f"{key}={file_name} names a file in the auxiliary channel, but the job has no channel named "
            f"{AUXILIARY}: add one holding {file_name}"
        )
    path = channel.path / file_name
    if not path.exists():
        present = sorted(p.name for p in channel.path.iterdir()) if channel.path.is_dir() else []
        listing = ", ".join(present[:LISTED_FILES]) + (", ..." if len(present) > LISTED_FILES else "")
        raise ClientError(
            f"{key}={file_name}: no such file at the top of the auxiliary channel ({channel.path}); "
            f"it holds: {listing or 'nothing'}"
        )
    if not path.is_file():
        raise ClientError(f"{key}={file_name}: {path} is not a regular file")
    return path


def check_auxiliary_files(hp: Hyperparameters, channel: Channel | None) -> None:
    """Fail fast, before the data is read, when a named auxiliary file is missing."""
    for index in (0, 1):
        enc = hp.encoder(index)
        for name in ("vocab_file", "pretrained_embedding_file"):
            if getattr(enc, name):
                auxiliary_file(channel, f"enc{index}_{name}", getattr(enc, name))


def initialise_token_embeddings(model: nn.Module, hp: Hyperparameters, channel: Channel | None) -> list[EncoderInit]:
    """Copy the pretrained rows into each encoder's token embedding and mark the frozen ones.

    Frozen rows are recorded as a non-persistent bool buffer `frozen_rows` on the nn.Embedding
    (it follows the model to its device and is not saved); the optimizer keeps those rows fixed.

    Tied weights (one table): enc0's file is applied first, then enc1's file fills only the rows
    enc0's did not give; a row is frozen when the encoder whose file gave it freezes. With
    enc1_network=enc0 both encoders name the same files, which are read once.
    """
    cache: dict[tuple[str, str], PretrainedRows] = {}
    given: dict[int, torch.Tensor] = {}  # id(table) -> (V,) bool: rows set from a file
    files: dict[int, list[str]] = {}  # id(table) -> the files that gave it rows
    tables: dict[int, nn.Embedding] = {}
    for index in (0, 1):
        enc = hp.encoder(index)
        if enc.is_transformer:  # its token embedding comes from its checkpoint (data/pretrained.py)
            continue
        table: nn.Embedding = model.token_embedding(index)  # type: ignore[operator]
        tables[index] = table
        rows_given = given.setdefault(id(table), torch.zeros(table.num_embeddings, dtype=torch.bool))
        table_files = files.setdefault(id(table), [])
        if enc.vocab_file and not enc.pretrained_embedding_file:
            path = auxiliary_file(channel, f"enc{index}_vocab_file", enc.vocab_file)
            read_vocab(path, enc.vocab_size, f"enc{index}_vocab_file {enc.vocab_file}")
            logger.info(
                "enc%d_vocab_file %s read; it initialises nothing without enc%d_pretrained_embedding_file",
                index,
                enc.vocab_file,
                index,
            )
        if not enc.pretrained_embedding_file:
            continue
        key = (enc.vocab_file, enc.pretrained_embedding_file)
        if key not in cache:
            cache[key] = load_pretrained(channel, hp, index)
        rows = cache[key]
        ids = torch.from_numpy(rows.ids)
        keep = ~rows_given[ids]  # tied: rows an earlier file gave are kept
        ids, vectors = ids[keep], torch.from_numpy(rows.vectors[keep.numpy()])
        weight = table.weight
        with torch.no_grad():
            weight[ids.to(weight.device)] = vectors.to(weight.device, weight.dtype)
        rows_given[ids] = True
        if enc.pretrained_embedding_file not in table_files:
            table_files.append(enc.pretrained_embedding_file)
        if enc.freeze_pretrained_embedding:
            frozen = _frozen_mask(table)
            frozen[ids.to(frozen.device)] = True
    reports = []
    for index, table in tables.items():
        frozen = getattr(table, FROZEN_ROWS, None)
        report = EncoderInit(
            index=index,
            vocab_size=table.num_embeddings,
            pretrained_rows=int(given[id(table)].sum()),
            frozen_rows=int(frozen.sum()) if frozen is not None else 0,
            files=tuple(files[id(table)]),
            tied_to=(1 - index) if len(tables) == 2 and tables[0] is tables[1] else None,
        )
        logger.info("%s", report.describe())
        reports.append(report)
    return reports


def load_pretrained(channel: Channel | None, hp: Hyperparameters, index: int) -> PretrainedRows:
    enc = hp.encoder(index)
    vocab_path = auxiliary_file(channel, f"enc{index}_vocab_file", enc.vocab_file)
    vectors_path = auxiliary_file(channel, f"enc{index}_pretrained_embedding_file", enc.pretrained_embedding_file)
    vocab = read_vocab(vocab_path, enc.vocab_size, f"enc{index}_vocab_file {enc.vocab_file}")
    name = f"enc{index}_pretrained_embedding_file {enc.pretrained_embedding_file}"
    with open_data_file(vectors_path) as stream:
        try:
            rows = read_pretrained(stream, vocab, enc.token_embedding_dim, name)
        except (OSError, EOFError) as err:
            raise ClientError(f"{name} cannot be read: {err}") from err
    logger.info(
        "%s: %d vector lines read; %d of the %d vocab tokens found",
        name,
        rows.lines,
        len(rows),
        len(vocab),
    )
    return rows


def _frozen_mask(embedding: nn.Embedding) -> torch.Tensor:
    mask = getattr(embedding, FROZEN_ROWS, None)
    if mask is None:
        mask = torch.zeros(embedding.num_embeddings, dtype=torch.bool, device=embedding.weight.device)
        embedding.register_buffer(FROZEN_ROWS, mask, persistent=False)
    return mask
