"""CPU threads for training and serving: how idle OpenMP threads wait, and how many torch uses.

torch's CPU kernels run on a libgomp (OpenMP) pool whose idle threads spin a while (GOMP_SPINCOUNT
rounds) before they sleep, so that the next parallel region starts at once. On a machine of its
own that is the fastest setting (sleeping at once, OMP_WAIT_POLICY=PASSIVE, cost 35% on an idle
2-core machine: waking threads for each of many small parallel regions). Next to other busy
processes it collapses: a spinning thread holds a core another process needs, and each parallel
region waits for a thread the scheduler has preempted (6-40x slower steps measured on a busy
2-core machine, even against niced processes).

So the default keeps the spin and gives torch only the cores nobody else uses
(benchmarks/threads.py measures it idle, under load, and with load that arrives mid-run):
- `configure_threads()` states libgomp's default spin (GOMP_SPINCOUNT=300000) before torch loads
  (libgomp reads it once); the entry points call it first (cli.main; docker/gunicorn.conf.py). A
  wait policy the user set (OMP_WAIT_POLICY or GOMP_SPINCOUNT) is kept. Programs whose threads no
  governor re-counts (prepare, index) sleep at once instead (OMP_WAIT_POLICY=PASSIVE).
- At start, torch gets one thread per core of this process's CPU set that is idle (`free_cores()`,
  sampled from /proc/stat for 0.1 s; a core counts when at least FREE_ENOUGH of it is idle): all
  of them on a dedicated instance, one on a busy machine.
- While training runs (and in a serving worker that may use several cores), a `ThreadGovernor`
  re-counts the idle cores every ADJUST_SECONDS (the busy time of the cores minus this process's
  own CPU time) and sets torch's thread count again, so that load arriving mid-run costs at most a
  fraction of a second of collapse, and threads come back when it leaves. With one thread no
  parallel region starts, so nothing spins.

Environment variables (all optional):
- OBJECT2VEC_THREADS: torch threads per process (training) or per worker (serving), as given and
  never re-counted; its idle threads sleep at once (OMP_WAIT_POLICY=PASSIVE) unless a wait policy
  is set too;
- OMP_WAIT_POLICY, GOMP_SPINCOUNT: libgomp's own, used as given when set.

Nothing here imports torch until a governor starts.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, MutableMapping

logger = logging.getLogger(__name__)

THREADS_ENV = "OBJECT2VEC_THREADS"
WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
SPIN_COUNT_ENV = "GOMP_SPINCOUNT"
MAX_THREADS = 1024
DEFAULT_SPIN_COUNT = "300000"  # libgomp's own default, stated (its estimate: about 3 ms of spinning)
# A thread per core that others leave at least this idle: a spinning thread on a core another
# process wants half the time is slower than no thread there at all.
FREE_ENOUGH = 0.75
SAMPLE_SECONDS = 0.1  # how long free_cores() watches the cores
ADJUST_SECONDS = 0.5  # how often a ThreadGovernor re-counts the cores other processes leave idle
PROC_STAT = "/proc/stat"


def configure_threads(env: MutableMapping[str, str] | None = None, governed: bool = True) -> None:
    """State the OpenMP wait policy; call before torch is imported. Keeps what the user set.

    Threads spin only where a ThreadGovernor re-counts them (`governed`: train and serve). A count
    nobody re-counts (a program without a governor, or OBJECT2VEC_THREADS, which is kept as given)
    cannot step aside when other work arrives: its idle threads sleep at once (PASSIVE)."""
    env = os.environ if env is None else env
    if WAIT_POLICY_ENV in env or SPIN_COUNT_ENV in env:
        return
    if governed and not env.get(THREADS_ENV, "").strip():
        env[SPIN_COUNT_ENV] = DEFAULT_SPIN_COUNT
    else:
        env[WAIT_POLICY_ENV] = "PASSIVE"


def thread_count(cores: int, env: Mapping[str, str] | None = None, free: float | None = None) -> int:
    """Torch threads for a process that may use `cores` cores: OBJECT2VEC_THREADS when set, else
    `threads_for(free)` (`free`: idle cores, from free_cores(); all `cores` when unknown)."""
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
    return cores if free is None else threads_for(free, cores)


def threads_for(free: float, most: int) -> int:
    """One thread per idle core (`free`: the sum of the cores' idle fractions, FREE_ENOUGH of a
    core counting as a whole one), between 1 and `most`."""
    return min(max(most, 1), max(1, int(free + 1.0 - FREE_ENOUGH)))


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


class ThreadGovernor:
    """Keeps torch's thread count at the cores other processes leave idle while a job runs.

    The count chosen at start goes stale when other work arrives later: threads that wait for a
    core the scheduler gave to another process slow every parallel region (and spinning ones take
    CPU time from it). `tick()`, called once per step from the thread that runs torch (the count is
    per OpenMP thread), does nothing until `seconds` have passed; then it reads the busy ticks of
    this process's cores (/proc/stat), subtracts this process's own CPU time (its spinning threads
    included), and sets `threads_for()` the cores the rest left idle, between 1 and `most`. The new
    count applies from the next parallel region.
    """

    def __init__(
        self,
        most: int,
        set_threads: Callable[[int], None],
        threads: int,
        seconds: float = ADJUST_SECONDS,
        stat_file: str = PROC_STAT,
        wall: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.process_time,
    ) -> None:
        self.most = max(most, 1)
        self.set_threads = set_threads
        self.threads = threads  # the count in force
        self.seconds = seconds
        self.stat_file = stat_file
        self.wall = wall
        self.cpu = cpu
        self.cores = os.sched_getaffinity(0)
        self.tick_seconds = 1.0 / os.sysconf("SC_CLK_TCK")  # /proc/stat counts USER_HZ ticks
        self.changes = 0
        self.since = self.wall()
        self.baseline = self._sample()

    @classmethod
    def start(cls, most: int, env: Mapping[str, str] | None = None) -> ThreadGovernor | None:
        """A governor of torch's threads, or None where the user set the count or /proc/stat is unreadable."""
        env = os.environ if env is None else env
        if env.get(THREADS_ENV, "").strip() or most <= 1:
            return None
        import torch  # only by then: configure_threads() must run before torch loads

        try:
            return cls(most, torch.set_num_threads, torch.get_num_threads())
        except (OSError, ValueError, AttributeError):
            return None

    def _sample(self) -> tuple[float, float, float] | None:
        """(wall seconds, busy seconds of our cores, CPU seconds of this process), or None."""
        try:
            times = _cpu_times(self.stat_file, self.cores)
        except (OSError, ValueError):
            return None
        busy = sum(total - idle for idle, total in times.values()) * self.tick_seconds
        return self.wall(), busy, self.cpu()

    def tick(self) -> None:
        if self.wall() - self.since < self.seconds:
            return
        sample = self._sample()
        self.since = self.wall()
        if sample is None or self.baseline is None:
            self.baseline = sample
            return
        (wall0, busy0, own0), (wall1, busy1, own1) = self.baseline, sample
        self.baseline = sample
        elapsed = wall1 - wall0
        if elapsed <= 0:
            return
        others = max(0.0, (busy1 - busy0) - (own1 - own0)) / elapsed  # cores busy with other processes
        wanted = threads_for(len(self.cores) - others, self.most)
        if wanted != self.threads:
            logger.debug("Torch threads %d -> %d (other processes busy on %.1f cores)", self.threads, wanted, others)
            self.set_threads(wanted)
            self.threads = wanted
            self.changes += 1
