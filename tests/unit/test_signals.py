"""StopSignal: a real SIGTERM/SIGINT raises TrainingStopped, or only sets a flag inside deferred();
a signal blocked since the start is delivered by listen(); complete() stops a job whose last
deferred steps saw a signal; after close() signals are only logged."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from object2vec.errors import TrainingStopped
from object2vec.startup import STOP_SIGNALS
from object2vec.training.signals import StopSignal

SIGNALS = [signal.SIGTERM, signal.SIGINT]


@pytest.fixture
def stop() -> Iterator[StopSignal]:
    """StopSignal.install() with the process's previous handlers restored afterwards."""
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    try:
        yield StopSignal.install()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def deliver(signum: int) -> None:
    """Send a real signal to this process and give the interpreter a moment to run the handler."""
    os.kill(os.getpid(), signum)
    for _ in range(20):  # the handler runs between bytecodes of the main thread
        time.sleep(0.005)


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_outside_deferred_raises(stop: StopSignal, signum: int) -> None:
    name = signal.Signals(signum).name
    with pytest.raises(TrainingStopped, match=f"training stopped by {name} before the first epoch ended"):
        deliver(signum)
    assert stop.requested == name


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_inside_deferred_only_sets_the_flag(stop: StopSignal, signum: int) -> None:
    assert stop.requested is None
    with stop.deferred():
        deliver(signum)  # no exception
        assert stop.requested == signal.Signals(signum).name
    assert stop.requested == signal.Signals(signum).name  # still visible after the block


def test_deferred_ends_even_when_its_block_raises(stop: StopSignal) -> None:
    with pytest.raises(ValueError), stop.deferred():
        raise ValueError("boom")
    with pytest.raises(TrainingStopped):
        deliver(signal.SIGTERM)


def test_signals_raise_again_after_the_deferred_block(stop: StopSignal) -> None:
    with stop.deferred():
        deliver(signal.SIGTERM)
    with pytest.raises(TrainingStopped, match="SIGINT"):
        deliver(signal.SIGINT)
    assert stop.requested == "SIGINT"  # the latest signal


def test_a_new_stop_signal_has_no_request() -> None:
    assert StopSignal().requested is None


def test_a_signal_blocked_since_the_start_is_delivered_by_listen() -> None:
    """What the image's `train` does: Python starts with SIGTERM blocked (env --block-signal), the
    signal waits, and listen() delivers it once the handlers are there."""
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        # To this thread: a process-directed signal could go to a torch thread that does not block it.
        signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)  # pending, not acted upon
        stop = StopSignal()
        with pytest.raises(TrainingStopped):
            stop.listen()
        assert stop.requested == "SIGTERM"
        assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_complete_raises_for_a_signal_during_the_last_deferred_steps(stop: StopSignal) -> None:
    with stop.deferred():
        deliver(signal.SIGTERM)
    with pytest.raises(TrainingStopped, match="as it finished; the complete model was saved"):
        stop.complete()


def test_after_complete_signals_are_only_logged(stop: StopSignal, caplog: pytest.LogCaptureFixture) -> None:
    stop.complete()
    deliver(signal.SIGTERM)
    assert stop.requested is None
    assert "after the job completed: ignored" in caplog.text


def test_check_raises_after_a_deferred_signal(stop: StopSignal) -> None:
    """How train_main guards its imports: signals wait until check()."""
    with stop.deferred():
        deliver(signal.SIGTERM)
    with pytest.raises(TrainingStopped, match="stopped by SIGTERM"):
        stop.check()


def test_at_once_hands_the_signal_to_the_callback(stop: StopSignal) -> None:
    calls: list[str] = []

    def exit_(name: str) -> Any:
        calls.append(name)
        raise SystemExit(143)

    with pytest.raises(SystemExit), stop.at_once(exit_):
        deliver(signal.SIGINT)
    assert calls == ["SIGINT"]
    with stop.deferred():
        deliver(signal.SIGTERM)  # outside at_once again: only the flag
    assert calls == ["SIGINT"]
