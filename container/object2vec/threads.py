"""CPU threads for training and serving: how idle OpenMP threads wait, and how many torch uses.

torch's CPU kernels run on a libgomp (OpenMP) pool. By default an idle pool thread spins for
about 3 ms before it sleeps: fastest on a machine of its own, but on a shared one the spinning
threads take the cores other processes need, and each parallel region waits for a thread the
scheduler has preempted (steps 30-60x slower were measured on a busy 2-core machine).

Two defaults keep a job fast on a machine of its own and bounded on a shared one
(benchmarks/threads.py measures both):
- idle pool threads sleep at once (OMP_WAIT_POLICY=PASSIVE) instead of spinning. `configure_threads()`
  sets it before torch loads (libgomp reads it once, when torch's library is loaded): the entry
  points call it first (cli.main; docker/gunicorn.conf.py). A variable the user set is kept.
- torch gets one thread per core that is idle when the job starts (`free_cores()`: the cores of
  this process's CPU set, sampled from /proc/stat for 0.1 s), at least one and at most the cores
  it may use: all of them on a dedicated instance, fewer next to other busy processes.

Environment variables (all optional):
- OBJECT2VEC_THREADS: torch threads per process (training) or per worker (serving), as given;
- OMP_WAIT_POLICY, GOMP_SPINCOUNT: libgomp's own, used as given when set.

Nothing here imports torch.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, MutableMapping

logger = logging.getLogger(__name__)

THREADS_ENV = "OBJECT2VEC_THREADS"
WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
SPIN_COUNT_ENV = "GOMP_SPINCOUNT"
MAX_THREADS = 1024
DEFAULT_WAIT_POLICY = "PASSIVE"
SAMPLE_SECONDS = 0.1  # how long free_cores() watches the cores
PROC_STAT = "/proc/stat"


def configure_threads(env: MutableMapping[str, str] | None = None) -> None:
    """Default the OpenMP wait policy; call before torch is imported. Keeps what the user set."""
    env = os.environ if env is None else env
    if WAIT_POLICY_ENV in env or SPIN_COUNT_ENV in env:
        return
    env[WAIT_POLICY_ENV] = DEFAULT_WAIT_POLICY


def thread_count(cores: int, env: Mapping[str, str] | None = None, free: float | None = None) -> int:
    """Torch threads for a process that may use `cores` cores: OBJECT2VEC_THREADS when set, else
    one per idle core (`free`, from free_cores(); all `cores` when unknown), between 1 and `cores`."""
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
    cores = max(cores, 1)
    if free is None:
        return cores
    return min(cores, max(1, int(free + 0.5)))


def free_cores(seconds: float = SAMPLE_SECONDS, stat_file: str = PROC_STAT) -> float | None:
    """How many of this process's cores sat idle over the next `seconds` (the sum of their idle
    fractions, from /proc/stat), or None where that cannot be read (not Linux)."""
    try:
        cores = os.sched_getaffinity(0)
        before = _cpu_times(stat_file, cores)
        time.sleep(seconds)
        after = _cpu_times(stat_file, cores)
    except (OSError, ValueError, AttributeError):
        return None
    free = 0.0
    for cpu, (idle, total) in after.items():
        if cpu in before and total > before[cpu][1]:
            free += (idle - before[cpu][0]) / (total - before[cpu][1])
    return free if after else None


def _cpu_times(stat_file: str, cores: set[int]) -> dict[int, tuple[int, int]]:
    """{cpu: (idle + iowait ticks, all ticks)} of the given cpus."""
    times: dict[int, tuple[int, int]] = {}
    with open(stat_file) as stat:
        for line in stat:
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cores:
                continue
            ticks = [int(value) for value in fields[:8]]  # user nice system idle iowait irq softirq steal
            times[int(name[3:])] = (ticks[3] + ticks[4], sum(ticks))
    return times


def describe_wait_policy(env: Mapping[str, str] | None = None) -> str:
    """How idle threads wait, for the log: e.g. "OMP_WAIT_POLICY=PASSIVE"."""
    env = os.environ if env is None else env
    given = [f"{name}={env[name]}" for name in (WAIT_POLICY_ENV, SPIN_COUNT_ENV) if name in env]
    return ", ".join(given) if given else "OpenMP's default wait policy"
