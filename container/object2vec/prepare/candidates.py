"""The candidates channel that `prepare` writes for retrieval: candidates.jsonl, one object per line.

{"id": <what responses return>, "in1": [token ids]}: ratings -> every item (id: the raw item id),
multilabel -> every label (id: the label's name), sentences -> every distinct sentence of the
corpus (id: the sentence's text). Give the file to a training job as the `candidates` channel (or
to `python -m object2vec index`), and the model serves top-k neighbours of in0 queries among them.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterable
from pathlib import Path

from object2vec.prepare.io import JsonlWriter

logger = logging.getLogger(__name__)

CANDIDATES_FILE = "candidates.jsonl"
MAX_ID_CHARS = 1000  # what the candidates channel accepts (object2vec.retrieval.candidates)


def add_candidates_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup, what: str) -> None:
    parser.add_argument(
        "--write-candidates",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"write {CANDIDATES_FILE}: {what}, one {{'id': ..., 'in1': [ids]}} per line, for the candidates "
        "channel (top-k retrieval) (default: on)",
    )


def candidates_path(args: argparse.Namespace) -> list[Path]:
    """The candidates file this run writes, as a list for check_outputs (empty with --no-write-candidates)."""
    return [args.output_dir / CANDIDATES_FILE] if args.write_candidates else []


def raw_id(token: str) -> str | int:
    """A raw id as a candidate id: an integer when the token is one (and reads back the same), else the text."""
    if token.isdigit() and str(int(token)) == token:
        return int(token)
    return token


def write_candidates(output_dir: Path, candidates: Iterable[tuple[str | int, list[int]]]) -> int:
    """Write candidates.jsonl (atomically); ids longer than MAX_ID_CHARS and repeated ids are skipped."""
    seen: set[str | int] = set()
    long = repeated = 0
    with JsonlWriter(output_dir / CANDIDATES_FILE) as writer:
        for identifier, ids in candidates:
            if isinstance(identifier, str) and len(identifier) > MAX_ID_CHARS:
                long += 1
            elif identifier in seen:
                repeated += 1
            else:
                seen.add(identifier)
                writer.write({"id": identifier, "in1": ids})
    if long or repeated:
        logger.info(
            "%s: skipped %d candidate(s) with an id over %d characters and %d repeat(s)",
            writer.path,
            long,
            MAX_ID_CHARS,
            repeated,
        )
    logger.info("%d candidates in %s", writer.count, writer.path)
    return writer.count
