"""SIGTERM/SIGINT handling: SageMaker's StopTrainingJob sends SIGTERM, then SIGKILL 120 s later.

Outside the training loop a signal stops at once (raises TrainingStopped where the program is).
Inside it (`deferred()`), the signal only sets a flag that the loop checks after every batch, so
the loop can end cleanly and the best model so far can be saved. `complete()` ends the job: a
signal that arrived during its last deferred steps still stops it (exit 143); once the outcome
is decided (`close()`), signals are only logged. See object2vec.startup for signals that arrive
before the handlers exist.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from object2vec.errors import TrainingStopped
from object2vec.startup import STOP_SIGNALS, unblock_stop_signals

logger = logging.getLogger(__name__)


class StopSignal:
    def __init__(self) -> None:
        self.requested: str | None = None  # the signal's name once one arrived
        self._deferred = False
        self._completed = False

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
        if not self._deferred:
            raise TrainingStopped(f"training stopped by {self.requested} before the first epoch ended")

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
