"""SIGTERM/SIGINT handling: SageMaker's StopTrainingJob sends SIGTERM, then SIGKILL 120 s later.

Outside the training loop a signal stops at once (raises TrainingStopped where the program is).
Inside it (`deferred()`), the signal only sets a flag that the loop checks after every batch, so
the loop can end cleanly and the best model so far can be saved. During the program's start
(`at_once()`: the imports of torch and numpy, reading the environment) a signal ends the process
at once through a callback that writes the failure file: an exception raised in the middle of a
library's import can be swallowed by the library's own `except Exception` and leave a module
half-imported (seen: numpy without `matrix`, then a bogus AlgorithmError or ClientError instead
of TrainingStopped), and nothing has been done yet that needs cleaning up. `complete()` ends the job: a
signal that arrived during its last deferred steps still stops it (exit 143); once the outcome
is decided (`close()`), signals are only logged. See object2vec.startup for signals that arrive
before the handlers exist.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn

from object2vec.errors import TrainingStopped
from object2vec.startup import STOP_SIGNALS, unblock_stop_signals

logger = logging.getLogger(__name__)


class StopSignal:
    def __init__(self) -> None:
        self.requested: str | None = None  # the signal's name once one arrived
        self._deferred = False
        self._completed = False
        self._exit: Callable[[str], NoReturn] | None = None  # set within at_once()

    @classmethod
    def install(cls) -> StopSignal:
        stop = cls()
        stop.listen()
        return stop

    def listen(self) -> None:
        """Install the handlers, then unblock the signals: one that arrived since the process
        started (blocked by the image's `train`) raises TrainingStopped here."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)
        unblock_stop_signals()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._completed:
            logger.warning("Received %s after the job completed: ignored", name)
            return
        self.requested = name
        logger.warning("Received %s: stopping", self.requested)
        if self._exit is not None:
            self._exit(name)
        if not self._deferred:
            self.check()

    def check(self) -> None:
        """Raise TrainingStopped if a signal arrived (while deferred, or before a block ended)."""
        if self.requested and not self._completed:
            raise TrainingStopped(f"training stopped by {self.requested} before the first epoch ended")

    @contextmanager
    def at_once(self, exit_: Callable[[str], NoReturn]) -> Iterator[None]:
        """Within this block a signal calls exit_(signal name), which must end the process."""
        self._exit = exit_
        try:
            yield
        finally:
            self._exit = None

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Within this block a signal sets `requested` instead of raising."""
        self._deferred = True
        try:
            yield
        finally:
            self._deferred = False

    def close(self) -> None:
        """The outcome is decided: from now on a signal is only logged, so that it cannot
        interrupt the writing of the failure or success file."""
        self._completed = True

    def complete(self) -> None:
        """The job has done all its work: close(), and raise TrainingStopped if a signal arrived
        during its last deferred steps (evaluation, saving)."""
        self.close()
        if self.requested:
            raise TrainingStopped(f"training stopped by {self.requested} as it finished; the complete model was saved")
