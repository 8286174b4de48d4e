"""Logging setup for the programs: one format, in the style of SageMaker's built-in algorithms."""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "[%(asctime)s %(levelname)s %(name)s] %(message)s"
DATE_FORMAT = "%m/%d/%Y %H:%M:%S"


def configure_logging(level: int = logging.INFO) -> None:
    """One handler on stdout, flushed per line (`train`, `serve`, `index`, the training processes)."""
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # which CPU build it picked, at INFO


def configure_stderr_logging(logger_name: str, level: int | str, date_format: str = "%H:%M:%S") -> None:
    """Log `logger_name` to stderr, so that stdout carries only a program's report; leave existing handlers alone."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT, date_format))
        root.addHandler(handler)
    logging.getLogger(logger_name).setLevel(level)
