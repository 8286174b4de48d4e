"""SIGTERM/SIGINT handling: SageMaker's StopTrainingJob sends SIGTERM, then SIGKILL 120 s later.

Outside the training loop a signal stops at once (raises TrainingStopped where the program is).
Inside it (`deferred()`), the signal only sets a flag that the loop checks after every batch, so
the loop can end cleanly and the best model so far can be saved.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from object2vec.errors import TrainingStopped

logger = logging.getLogger(__name__)


class StopSignal:
    def __init__(self) -> None:
        self.requested: str | None = None  # the signal's name once one arrived
        self._deferred = False

    @classmethod
    def install(cls) -> StopSignal:
        stop = cls()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, stop._handle)
        return stop

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.requested = signal.Signals(signum).name
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
