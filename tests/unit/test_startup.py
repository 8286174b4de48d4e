from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from types import FrameType

import pytest

from object2vec.startup import STOP_SIGNALS, unblock_stop_signals


@pytest.fixture(autouse=True)
def restore_signals() -> Iterator[None]:
    handler = signal.getsignal(signal.SIGTERM)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        signal.signal(signal.SIGTERM, handler)


def test_a_blocked_signal_waits_for_unblock() -> None:
    received: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
    signal.signal(signal.SIGTERM, handler)
    assert received == []  # held back while blocked
    unblock_stop_signals()
    assert received == [signal.SIGTERM]
    assert not set(STOP_SIGNALS) & signal.pthread_sigmask(signal.SIG_BLOCK, [])


def test_unblock_is_harmless_when_nothing_is_blocked() -> None:
    unblock_stop_signals()
    assert not set(STOP_SIGNALS) & signal.pthread_sigmask(signal.SIG_BLOCK, [])
