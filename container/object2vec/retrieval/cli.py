"""`python -m object2vec index --model-dir DIR CANDIDATES...`: a new retrieval index for a trained model.

The catalogue changes more often than the model. This encodes the candidates (JSON Lines files or
folders of them, plain or gzip; the candidates channel's format) with the model in DIR and
replaces DIR/retrieval.index atomically: a server that is running keeps the index it mapped, a
server started afterwards gets the new one. The input is streamed in blocks, with a progress line
every few seconds. `--set retrieval_ivf_nprobe=32` (repeatable) changes a retrieval_*
hyperparameter for this index; the model's other hyperparameters cannot change without retraining.

Exit codes: 0 done, 1 a problem with the inputs (ClientError, on stderr), 2 an internal fault.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from object2vec.config import Hyperparameters
from object2vec.errors import ClientError, failure_of
from object2vec.logs import configure_logging

logger = logging.getLogger(__name__)

RETRIEVAL_PREFIX = "retrieval_"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m object2vec index",
        description="Build the retrieval index of a trained model from a catalogue of candidates, one JSON object "
        'per line: {"id": "m12", "in1": [4, 17]} (or "in0"). Replaces MODEL_DIR/retrieval.index atomically.',
    )
    parser.add_argument("--model-dir", type=Path, required=True, help="the folder `train` wrote the model to")
    parser.add_argument(
        "candidates", type=Path, nargs="+", metavar="CANDIDATES", help="JSON Lines files (plain or .gz), or folders"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a retrieval_* hyperparameter for this index, e.g. retrieval_index=ivf or retrieval_top_n=200 "
        "(default: the model's)",
    )
    return parser


def index_main(argv: Sequence[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exit_:  # --help (0) or a usage error (2), already printed by argparse
        return exit_.code if isinstance(exit_.code, int) else 2
    configure_logging()
    try:
        run(args.model_dir, args.candidates, args.set)
    except Exception as err:  # an internal fault is reported with its traceback, never a bare one
        failure = failure_of(err)
        print(failure.text + (f"\n\n{failure.detail}" if failure.detail else ""), file=sys.stderr)
        return failure.exit_code
    return 0


def run(model_dir: Path, candidates: list[Path], settings: list[str]) -> dict:
    from object2vec.retrieval.build import build_index
    from object2vec.retrieval.candidates import CandidateReader, path_sources
    from object2vec.serving.predictor import Predictor

    started = time.monotonic()
    sources = path_sources(candidates)  # every path checked before the model loads
    predictor = Predictor.load(model_dir)
    hp = with_settings(predictor.hp, settings)
    reader = CandidateReader(hp)
    summary = build_index(predictor, reader.blocks(sources), hp, model_dir)
    logger.info(
        "Indexed %d candidates from %d file(s) in %.1f s%s",
        reader.count,
        len(sources),
        time.monotonic() - started,
        f" ({reader.blank_lines} blank line(s) skipped)" if reader.blank_lines else "",
    )
    return summary


def with_settings(hp: Hyperparameters, settings: list[str]) -> Hyperparameters:
    """The model's hyperparameters with retrieval_* ones replaced, through the one parser."""
    raw = hp.to_dict()
    for setting in settings:
        key, sep, value = setting.partition("=")
        key = key.strip()
        if not sep or not key.startswith(RETRIEVAL_PREFIX) or key not in raw:
            retrieval = sorted(name for name in raw if name.startswith(RETRIEVAL_PREFIX))
            raise ClientError(
                f"--set {setting!r}: give KEY=VALUE with one of {', '.join(retrieval)}; the model's other "
                "hyperparameters cannot change without retraining"
            )
        raw[key] = value.strip()
    return Hyperparameters.from_dict(raw)
