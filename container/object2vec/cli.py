"""Entry points: `python -m object2vec train|serve|prepare` (the image's `train` and `serve`).

Thin by design: configure logging, call the library, and turn each error class into the
failure file and exit code SageMaker expects, in this one place.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from object2vec.errors import AlgorithmError, ClientError, TrainingStopped
from object2vec.threads import configure_threads

logger = logging.getLogger(__name__)

USAGE = "usage: python -m object2vec {train,serve,prepare} [args...]"
EXIT_CLIENT_ERROR = 1
EXIT_ALGORITHM_ERROR = 2
EXIT_STOPPED = 143  # 128 + SIGTERM, what a shell reports for a process ended by SIGTERM
FAILURE_REASON_LIMIT = 1024  # DescribeTrainingJob shows the first 1024 characters


def configure_logging(level: int = logging.INFO) -> None:
    """One handler on stdout, flushed per line, in the style of SageMaker's built-in algorithms."""
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("[%(asctime)s %(levelname)s %(name)s] %(message)s", "%m/%d/%Y %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def main(argv: Sequence[str]) -> int:
    configure_threads()  # OpenMP reads its wait policy once, when torch loads: before any import of torch
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], list(argv[1:])
    if command == "train":
        return train_main(rest)
    if command == "serve":
        from object2vec.serving.server import serve_main

        return serve_main(rest)
    if command == "prepare":
        from object2vec.prepare.cli import prepare_main

        return prepare_main(rest)
    print(f"unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


def train_main(argv: Sequence[str]) -> int:
    """Run a training job on SAGEMAKER_BASE_DIR (default /opt/ml)."""
    configure_logging()
    if argv:
        logger.warning("Ignoring arguments after 'train': %s", " ".join(argv))
    from object2vec.environment import TrainingEnvironment, base_dir
    from object2vec.training.job import run_training
    from object2vec.training.signals import StopSignal

    failure_file = base_dir() / "output" / "failure"
    stop = StopSignal.install()
    try:
        env = TrainingEnvironment.from_sagemaker()
        run_training(env, stop)
    except ClientError as err:
        return _fail(failure_file, "ClientError", str(err), EXIT_CLIENT_ERROR)
    except TrainingStopped as err:
        return _fail(failure_file, "TrainingStopped", str(err), EXIT_STOPPED)
    except AlgorithmError as err:
        return _fail(failure_file, "AlgorithmError", str(err), EXIT_ALGORITHM_ERROR, detail=traceback.format_exc())
    except Exception as err:  # an internal fault: reported, never a bare traceback
        message = f"{type(err).__name__}: {err}"
        return _fail(failure_file, "AlgorithmError", message, EXIT_ALGORITHM_ERROR, detail=traceback.format_exc())
    (failure_file.parent / "success").touch()
    return 0


def _fail(failure_file: Path, kind: str, message: str, code: int, detail: str = "") -> int:
    """Write the failure file (message first: only 1024 characters are shown) and log it."""
    text = f"{kind}: {message}"
    logger.error("Reporting training FAILURE: %s", text)
    if detail:
        logger.error("%s", detail.rstrip())
    try:
        failure_file.parent.mkdir(parents=True, exist_ok=True)
        failure_file.write_text(text + ("\n\n" + detail if detail else "") + "\n")
    except OSError as err:
        logger.error("Could not write %s: %s", failure_file, err)
    if len(text) > FAILURE_REASON_LIMIT:
        logger.warning("The failure reason is longer than the %d characters SageMaker shows", FAILURE_REASON_LIMIT)
    return code


def exit_process(code: int) -> NoReturn:
    """End the process with `code`, skipping the interpreter's teardown: with torch loaded that
    teardown takes seconds (3-4 s measured on a busy 2-core machine, more than the ML-100k job's
    data and saving together) and does nothing a finished command needs. Every file the commands
    write is closed by then; the log and the standard streams are flushed here."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can be written
            pass
    os._exit(code)


def main_entry() -> None:
    """Console-script entry point."""
    exit_process(main(sys.argv[1:]))
