from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest

from object2vec.logs import configure_logging, configure_stderr_logging


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_programs_log_one_line_per_record_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging()
    configure_logging()  # twice: still one handler, so no line is written twice
    logging.getLogger("object2vec.test").info("hello")
    out = capsys.readouterr().out
    assert re.fullmatch(r"\[\d\d/\d\d/\d{4} \d\d:\d\d:\d\d INFO object2vec\.test\] hello\n", out)


def test_stderr_logging_keeps_stdout_for_the_report(capsys: pytest.CaptureFixture[str]) -> None:
    logging.getLogger().handlers[:] = []
    configure_stderr_logging("object2vec.prepare", "INFO")
    logging.getLogger("object2vec.prepare.x").info("progress")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d INFO object2vec\.prepare\.x\] progress\n", captured.err)
