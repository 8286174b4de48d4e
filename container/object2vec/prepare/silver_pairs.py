"""`prepare silver-pairs`: a teacher's embeddings of unlabelled objects -> scored training pairs.

Distillation (AugSBERT's recipe): a stronger model (the teacher; e.g. a pretrained transformer
served by this product, its embeddings from a batch transform) embeds the objects of the training
data; each object is paired with its nearest others by the teacher's cosine and with random others,
and each pair is labelled with that cosine. A regression job on these "silver" pairs, then the job
on the real labels starting from its model (init_model), teaches a small encoder what the teacher
knows. On STS-B this took bilstm from 0.692 to 0.737 test Pearson (benchmarks/RESULTS.md).

Inputs, line by line in the same order (blank lines skipped in both, as batch transform skips them):
- --instances: JSON Lines, one object per line, {"in0": [ids]} (or {"in1": [ids]}): the requests
  the teacher embedded, or the objects' token ids for the student when the teacher used another
  tokenization;
- --embeddings: the teacher's vectors, JSON Lines with {"embeddings": [floats]} (batch transform's
  output with Accept application/jsonlines) or a bare [floats] per line, or a (rows, dim) .npy.
Output: {"in0": ids, "in1": ids, "label": label_max x max(cosine, 0)} per line, each pair in both
orders unless --no-both-orders.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np

from object2vec.errors import ClientError
from object2vec.prepare.io import JsonlWriter, check_outputs, pair, read_json_lines
from object2vec.prepare.options import add_seed, non_negative_int, positive_float
from object2vec.record_format import INPUT_KEYS

logger = logging.getLogger(__name__)

MAX_OBJECTS = 200_000  # every object is compared with every other: 200,000^2 cosines at most
MAX_DIMENSION = 16_384
MAX_PARTNERS = 100  # --neighbours and --randoms each
DUPLICATE_COSINE = 0.999  # objects this close are the same object written twice: never paired
LABEL_DIGITS = 6
BLOCK_CELLS = 1 << 26  # cosines computed (rows, objects) at a time: 256 MiB of float32 at most


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "silver-pairs",
        help="a teacher model's embeddings of objects -> training pairs labelled with its cosine (distillation)",
        description="Pair each object of --instances with its --neighbours nearest and --randoms random others by "
        "the cosine of the teacher's --embeddings (line N of one file belongs to line N of the other) and label "
        "each pair with label_max x the cosine (negative cosines as 0). Train a mean_squared_error job on the "
        "output, then the job on your labels with init_model pointing at its model. Prints a JSON report.",
    )
    parser.add_argument(
        "--instances",
        type=Path,
        required=True,
        help='JSON Lines, one object per line: {"in0": [token ids]} (or "in1"); required',
    )
    parser.add_argument(
        "--embeddings",
        type=Path,
        required=True,
        help='the teacher\'s vector for each line of --instances: JSON Lines of {"embeddings": [...]} (batch '
        "transform output) or [...], or a .npy (rows, dim) matrix; required",
    )
    parser.add_argument("--output", type=Path, required=True, help="the pairs, JSON Lines; required")
    parser.add_argument(
        "--neighbours",
        type=non_negative_int,
        default=5,
        help=f"nearest others paired with each object (0-{MAX_PARTNERS}; default 5)",
    )
    parser.add_argument(
        "--randoms",
        type=non_negative_int,
        default=5,
        help=f"random others paired with each object, so that low labels are seen too (0-{MAX_PARTNERS}; default 5)",
    )
    parser.add_argument(
        "--label-max",
        type=positive_float,
        default=1.0,
        help="the label of a pair with cosine 1: use your labels' top, e.g. 5 for STS-B's 0-5 (default 1)",
    )
    parser.add_argument(
        "--both-orders",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write each pair as (a, b) and (b, a), for two encoders that do not share weights (default: on)",
    )
    add_seed(parser, "the random partners")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists (default: refuse)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    for name in ("neighbours", "randoms"):
        if getattr(args, name) > MAX_PARTNERS:
            raise ClientError(f"--{name} {getattr(args, name)}: at most {MAX_PARTNERS} partners per object")
    if args.neighbours == 0 and args.randoms == 0:
        raise ClientError("--neighbours and --randoms are both 0: no pair would be written; give either a count")
    check_outputs([args.output], args.overwrite)
    objects = read_instances(args.instances)
    embeddings = read_embeddings(args.embeddings)
    if len(embeddings) != len(objects):
        raise ClientError(
            f"--instances {args.instances} has {len(objects)} objects but --embeddings {args.embeddings} has "
            f"{len(embeddings)} vectors: give the teacher's output for exactly these instances, in their order"
        )
    if len(objects) < 2:
        raise ClientError(f"--instances {args.instances}: at least 2 objects are needed to make a pair")
    unit_vectors = normalised(embeddings, args.embeddings)
    scored = silver_pairs(unit_vectors, args.neighbours, args.randoms, args.label_max, args.seed)
    with JsonlWriter(args.output) as writer:
        for i, j, label in scored:
            writer.write(pair(objects[i], objects[j], label))
            if args.both_orders:
                writer.write(pair(objects[j], objects[i], label))
    labels = np.array([label for _, _, label in scored])
    logger.info("Wrote %d records (%d pairs of %d objects) to %s", writer.count, len(scored), len(objects), args.output)
    return {
        "command": "silver-pairs",
        "output": str(args.output),
        "objects": len(objects),
        "pairs": len(scored),
        "records": writer.count,
        "label_mean": round(float(labels.mean()), 6) if len(labels) else None,
        "hyperparameters": {"output_layer": "mean_squared_error"},
    }


def silver_pairs(
    embeddings: np.ndarray, neighbours: int, randoms: int, label_max: float = 1.0, seed: int = 0
) -> list[tuple[int, int, float]]:
    """Pairs (i, j, label), i < j, each once, sorted: every row of `embeddings` (unit length) with its
    `neighbours` nearest other rows by cosine and `randoms` random other rows, labelled
    label_max x max(cosine, 0). Rows with a cosine >= DUPLICATE_COSINE are never paired."""
    rng = np.random.default_rng(seed)
    count = len(embeddings)
    neighbours = min(neighbours, count - 1)
    found: set[tuple[int, int]] = set()
    rows = max(1, min(1024, BLOCK_CELLS // count))
    for start in range(0, count, rows):
        block = embeddings[start : start + rows] @ embeddings.T  # (rows, count) cosines
        for offset, row in enumerate(block):
            i = start + offset
            row[i] = -np.inf  # never itself
            nearest = np.argpartition(-row, neighbours - 1)[:neighbours] if neighbours > 0 else []
            for j in [*nearest, *rng.integers(0, count, randoms)]:
                if j != i and row[j] < DUPLICATE_COSINE:
                    found.add((min(i, int(j)), max(i, int(j))))
    # Rounded: float32 cosines carry about 7 significant digits, and the files stay small.
    return [
        (i, j, round(float(np.clip(label_max * float(embeddings[i] @ embeddings[j]), 0.0, label_max)), LABEL_DIGITS))
        for i, j in sorted(found)
    ]


def read_instances(path: Path) -> list[list[int]]:
    """The token ids of each non-blank line's one input ({"in0": ids} or {"in1": ids})."""
    objects: list[list[int]] = []
    for where, record in read_json_lines(path, "--instances"):
        if not isinstance(record, dict):
            raise ClientError(f'{where}: expected a JSON object like {{"in0": [1, 2, 3]}}')
        inputs = [key for key in INPUT_KEYS if key in record]
        if len(inputs) != 1:
            raise ClientError(f'{where}: expected exactly one of "in0" or "in1" (one object per line), found {inputs}')
        ids = record[inputs[0]]
        if not isinstance(ids, list) or not all(type(x) is int and x >= 0 for x in ids):
            raise ClientError(f'{where}: "{inputs[0]}" must be a list of non-negative integer token ids')
        objects.append(ids)
        if len(objects) > MAX_OBJECTS:
            raise ClientError(
                f"--instances {path}: more than {MAX_OBJECTS} objects (every object is compared with every other); "
                "split them into groups, e.g. by topic, and run once per group"
            )
    return objects


def read_embeddings(path: Path) -> np.ndarray:
    """(rows, dim) float32 from a .npy matrix or JSON Lines of vectors; finite values only."""
    if path.suffix == ".npy":
        return _npy_embeddings(path)
    rows: list[np.ndarray] = []  # float32 rows as they are read: Python floats would take 8x the memory
    for where, value in read_json_lines(path, "--embeddings", max_chars=MAX_DIMENSION * 32):
        if isinstance(value, dict):
            value = value.get("embeddings")
        if not isinstance(value, list) or not value or not all(_is_number(x) for x in value):
            raise ClientError(f'{where}: expected {{"embeddings": [numbers]}} or [numbers], one vector per line')
        if rows and len(value) != len(rows[0]):
            raise ClientError(f"{where}: {len(value)} values, but line 1's vector has {len(rows[0])}")
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused below
            row = np.asarray(value, dtype=np.float32)
        if len(row) > MAX_DIMENSION or not np.isfinite(row).all():
            raise ClientError(f"{where}: expected at most {MAX_DIMENSION} numbers, each finite as a float32")
        rows.append(row)
        if len(rows) > MAX_OBJECTS:
            raise ClientError(f"--embeddings {path}: more than {MAX_OBJECTS} vectors")
    return np.stack(rows) if rows else np.zeros((0, 1), dtype=np.float32)


def normalised(embeddings: np.ndarray, path: Path) -> np.ndarray:
    """Each row scaled to unit length, so that a dot product is a cosine; a zero row is an error."""
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)  # (rows, 1)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if len(zero):
        raise ClientError(f"--embeddings {path}: vector {int(zero[0]) + 1} is all zeros and has no direction")
    return (embeddings / norms).astype(np.float32)


def _npy_embeddings(path: Path) -> np.ndarray:
    try:
        matrix = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ClientError(f"--embeddings {path}: not a readable .npy matrix ({err})") from err
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.number):
        raise ClientError(f"--embeddings {path}: expected a 2-D numeric (rows, dim) matrix, got {matrix.shape}")
    if len(matrix) > MAX_OBJECTS or matrix.shape[1] > MAX_DIMENSION or matrix.shape[1] == 0:
        raise ClientError(
            f"--embeddings {path}: shape {matrix.shape}; at most {MAX_OBJECTS} rows of 1-{MAX_DIMENSION} values"
        )
    with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused below
        array = np.asarray(matrix, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ClientError(f"--embeddings {path}: holds NaN, infinite or beyond-float32 values")
    return array


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
