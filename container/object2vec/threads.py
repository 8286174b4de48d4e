"""CPU threads for training and serving: how idle OpenMP threads wait, and how many torch uses.

torch's CPU kernels run on a libgomp (OpenMP) pool. By default an idle pool thread spins for
about 3 ms before it sleeps: fastest on a machine of its own, but on a shared one the spinning
threads take the cores other processes need, and each parallel region waits for a thread the
scheduler has preempted (steps 30-60x slower were measured on a busy 2-core machine).

`configure_threads()` sets the wait policy before torch loads (libgomp reads it once, when torch's
library is loaded): the entry points call it first (cli.main; docker/gunicorn.conf.py). A
variable the user set is never overridden. `thread_count()` gives the number of torch threads.

Environment variables (all optional):
- OBJECT2VEC_THREADS: torch threads per process (training) or per worker (serving);
- OMP_WAIT_POLICY, GOMP_SPINCOUNT: libgomp's own, used as given when set.

Nothing here imports torch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, MutableMapping

logger = logging.getLogger(__name__)

THREADS_ENV = "OBJECT2VEC_THREADS"
WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
SPIN_COUNT_ENV = "GOMP_SPINCOUNT"
MAX_THREADS = 1024
# Idle pool threads sleep at once instead of spinning (see benchmarks/threads.py for the
# measurements behind this default).
DEFAULT_WAIT_POLICY = "PASSIVE"


def configure_threads(env: MutableMapping[str, str] | None = None) -> None:
    """Default the OpenMP wait policy; call before torch is imported. Keeps what the user set."""
    env = os.environ if env is None else env
    if WAIT_POLICY_ENV in env or SPIN_COUNT_ENV in env:
        return
    env[WAIT_POLICY_ENV] = DEFAULT_WAIT_POLICY


def thread_count(cores: int, env: Mapping[str, str] | None = None) -> int:
    """Torch threads for a process that may use `cores` cores: OBJECT2VEC_THREADS when set, else all."""
    env = os.environ if env is None else env
    raw = env.get(THREADS_ENV, "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if 1 <= value <= MAX_THREADS:
            return value
        logger.warning("Ignoring %s=%r: must be an integer in [1, %d]", THREADS_ENV, raw, MAX_THREADS)
    return max(cores, 1)


def describe_wait_policy(env: Mapping[str, str] | None = None) -> str:
    """How idle threads wait, for the log: e.g. "OMP_WAIT_POLICY=PASSIVE"."""
    env = os.environ if env is None else env
    given = [f"{name}={env[name]}" for name in (WAIT_POLICY_ENV, SPIN_COUNT_ENV) if name in env]
    return ", ".join(given) if given else "OpenMP's default wait policy"
