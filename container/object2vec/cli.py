"""Entry points: `object2vec COMMAND` (the console script `pip install` makes) or
`python -m object2vec COMMAND` (the image's `train` and `serve`, a source checkout).

Thin by design: configure logging, call the library, and turn each error class into the
failure file and exit code SageMaker expects, in this one place.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from object2vec import program_name
from object2vec.errors import TrainingStopped, failure_of
from object2vec.logs import configure_logging
from object2vec.threads import configure_threads

if TYPE_CHECKING:
    from object2vec.training.signals import StopSignal

logger = logging.getLogger(__name__)

# command -> ("module:function" run with the remaining arguments, one line for the usage text).
# Imported only when chosen, so that `train` never pays for Flask or `prepare` for torch.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("object2vec.cli:train_main", "run the training job in SAGEMAKER_BASE_DIR (default /opt/ml)"),
    "serve": (
        "object2vec.serving.server:serve_main",
        "serve SAGEMAKER_BASE_DIR/model over HTTP (nginx + gunicorn + Flask)",
    ),
    "prepare": ("object2vec.prepare.cli:prepare_main", "turn raw data into channel files (prepare --help)"),
    "index": ("object2vec.retrieval.cli:index_main", "build a model's retrieval index from candidates (index --help)"),
}
GOVERNED_COMMANDS = ("train", "serve")  # they re-count their torch threads as load changes (threads.py)
FAILURE_REASON_LIMIT = 1024  # DescribeTrainingJob shows the first 1024 characters


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {program_name()} COMMAND [args...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    # OpenMP reads its wait policy once, when torch loads: before any import of torch.
    configure_threads(governed=bool(argv) and argv[0] in GOVERNED_COMMANDS)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], list(argv[1:])
    if command not in COMMANDS:
        print(f"unknown command {command!r}\n{usage()}", file=sys.stderr)
        return 2
    return _command_function(COMMANDS[command][0])(rest)


def _command_function(target: str) -> Callable[[list[str]], int]:
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]


def train_main(argv: Sequence[str]) -> int:
    """Run a training job on SAGEMAKER_BASE_DIR (default /opt/ml)."""
    configure_logging()
    if argv:
        logger.warning("Ignoring arguments after 'train': %s", " ".join(argv))
    from object2vec.environment import FAILURE_FILE, SUCCESS_FILE, base_dir  # light, like StopSignal: before torch
    from object2vec.training.signals import StopSignal

    failure_file, success_file = base_dir() / FAILURE_FILE, base_dir() / SUCCESS_FILE
    stop = StopSignal()

    def stop_at_once(signal_name: str) -> NoReturn:
        code = _fail(stop, failure_file, TrainingStopped(f"training stopped by {signal_name} before it started"))
        sys.stdout.flush()
        os._exit(code)  # no exception through the imports in progress (see training/signals.py)

    try:
        # A signal since the start (held back by the image's `train`, see object2vec.startup) or
        # during the imports ends the job at once.
        with stop.at_once(stop_at_once):
            stop.listen()
            from object2vec.environment import TrainingEnvironment
            from object2vec.training.job import run_training

            env = TrainingEnvironment.from_sagemaker()  # imports sagemaker-training
        run_training(env, stop)
        stop.complete()
    except Exception as err:  # every failure, an internal fault included: reported, never a bare traceback
        return _fail(stop, failure_file, err)
    try:
        success_file.touch()
    except OSError as err:  # the model is complete: a read-only output/ does not fail the job
        logger.warning("Could not write %s (%s); the model is complete", success_file, err)
    return 0


def _fail(stop: StopSignal, failure_file: Path, err: BaseException) -> int:
    """Write the failure file (message first: only 1024 characters are shown), log it, return the exit code.

    The one place a training failure becomes SageMaker's outcome: an internal fault's file and log
    also carry the traceback.
    """
    stop.close()
    failure = failure_of(err)
    text, detail = failure.text, failure.detail
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
    return failure.exit_code


def main_entry() -> None:
    """Console-script entry point."""
    exit_(main(sys.argv[1:]))


def exit_(code: int) -> NoReturn:
    """End the process with `code`, its outcome written, without the interpreter's teardown.

    With torch loaded, that teardown walks every object torch made and unloads its modules:
    3-7 s on a busy 2-core machine (0.8 s with the objects frozen out of the final collection),
    time a finished `train` adds to its run and a stopped job spends inside SageMaker's grace
    period, to free memory the OS frees anyway. What a finished command needs still runs: the
    atexit functions (logging's shutdown among them) and the flushing of stdout and stderr.
    """
    gc.freeze()  # should an exit function collect, it skips torch's objects
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can be written
            pass
    os._exit(code)
