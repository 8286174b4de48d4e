"""`python -m object2vec prepare SUBCOMMAND ...`: raw data -> JSON Lines + vocab files for training.

Each subcommand module adds its own argparse parser and a `run(args) -> report` function; this
module parses, runs, prints the report (the hyperparameters to use, the files written) as JSON on
stdout, logs to stderr, and turns a ClientError into one `error: ...` line and exit code 2. An
internal fault (a bug of ours, not the user's input) says so in one line, with its traceback logged
below it for the bug report, and exits 1; Ctrl-C exits 130 without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from object2vec import program_name
from object2vec.errors import ClientError, failure_of
from object2vec.logs import configure_stderr_logging
from object2vec.prepare import embeddings, instances, multilabel, ratings, sentences, silver_pairs, text_pairs
from object2vec.prepare.io import print_report

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_INTERNAL = 1  # what Python's own uncaught exception gives, kept for scripts that test it
EXIT_USAGE = 2  # what argparse uses for usage errors; bad input files are reported the same way
EXIT_INTERRUPTED = 130
SUBCOMMANDS = (ratings, text_pairs, multilabel, sentences, embeddings, instances, silver_pairs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{program_name()} prepare",
        description="Prepare data for Object2Vec: write train/validation/test JSON Lines files "
        '({"in0": [ids], "in1": [ids], "label": L}) and vocabulary files for the auxiliary channel, and '
        "print the matching hyperparameters as JSON on stdout. Progress goes to stderr. "
        "Run a subcommand with --help for its options.",
    )
    parser.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default="INFO",
        help="how much progress to log on stderr (default: INFO)",
    )
    subparsers = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(subparsers)
    return parser


def prepare_main(argv: Sequence[str]) -> int:
    """Run one subcommand; 0 on success, 2 on a usage error or a problem with the inputs."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exit_:  # --help (0) or a usage error (2), already printed by argparse
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    # stderr, so that stdout carries only the JSON report
    configure_stderr_logging("object2vec.prepare", args.log_level)
    try:
        report = args.run(args)
    except ClientError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted; the outputs of this run may be incomplete", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - the one place an unexpected fault becomes a report
        logger.debug("internal fault", exc_info=True)
        print(
            f"error: internal fault of object2vec prepare ({failure_of(err).text}); this is a bug, not a "
            "problem with your input: please report it with the command line and the traceback below",
            file=sys.stderr,
        )
        print(failure_of(err).detail, end="", file=sys.stderr)
        return EXIT_INTERNAL
    if report is not None:  # None: the subcommand wrote its output to stdout itself (tokenize)
        print_report(report)
    return EXIT_OK
