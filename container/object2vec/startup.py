"""The stop signals at process start, for `train` and `serve` alike.

In the image, Python runs as PID 1, and the kernel discards a signal sent to PID 1 while that
signal has no handler. Python installs none for SIGTERM, and ours could only be installed once
the interpreter had started: a StopTrainingJob or `docker stop` in those first moments (or,
before this, in the 1-2 s of importing torch) was lost, and the job ran on to the end.

So the image's `train` and `serve` (docker/program/) start Python with SIGTERM and SIGINT
*blocked* (`env --block-signal`): a blocked signal is never discarded, it waits. Each program
installs its handlers first and then calls unblock_stop_signals(), which delivers a signal that
arrived meanwhile to those handlers. Outside the image nothing is blocked and this is a no-op.
"""

from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def unblock_stop_signals() -> None:
    """Deliver SIGTERM/SIGINT from now on (a pending one at once, to the handlers installed)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
