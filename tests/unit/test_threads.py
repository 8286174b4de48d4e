"""CPU thread policy (threads.py): the OpenMP wait policy default, thread counts, that the entry
point sets the policy before torch loads, and the governor that re-counts idle cores mid-run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from object2vec import threads
from object2vec.threads import (
    DEFAULT_SPIN_COUNT,
    THREADS_ENV,
    ThreadGovernor,
    configure_threads,
    describe_wait_policy,
    thread_count,
)

CONTAINER = Path(__file__).resolve().parents[2] / "container"


def test_the_default_wait_policy_is_set_when_the_user_set_none() -> None:
    env: dict[str, str] = {}
    configure_threads(env)
    assert env == {"GOMP_SPINCOUNT": DEFAULT_SPIN_COUNT}
    assert describe_wait_policy(env) == f"GOMP_SPINCOUNT={DEFAULT_SPIN_COUNT}"


def test_a_count_nobody_re_counts_sleeps_when_idle() -> None:
    env = {THREADS_ENV: "2"}  # never re-counted, so it must not spin on a core another process wants
    configure_threads(env)
    assert env == {THREADS_ENV: "2", "OMP_WAIT_POLICY": "PASSIVE"}
    env = {}
    configure_threads(env, governed=False)  # a program without a ThreadGovernor (prepare, index)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}


@pytest.mark.parametrize("given", [{"OMP_WAIT_POLICY": "PASSIVE"}, {"GOMP_SPINCOUNT": "10000"}])
def test_a_wait_policy_the_user_set_is_kept(given: dict[str, str]) -> None:
    env = dict(given)
    configure_threads(env)
    assert env == given
    assert describe_wait_policy(env) == ", ".join(f"{k}={v}" for k, v in given.items())
    assert describe_wait_policy({}) == "OpenMP's default wait policy"


@pytest.mark.parametrize(
    ("cores", "given", "expected"),
    [(4, None, 4), (0, None, 1), (4, "2", 2), (1, "8", 8), (4, "0", 4), (4, "two", 4), (4, "100000", 4), (4, " 3 ", 3)],
)
def test_thread_count(cores: int, given: str | None, expected: int, caplog: pytest.LogCaptureFixture) -> None:
    env = {THREADS_ENV: given} if given is not None else {}
    assert thread_count(cores, env) == expected
    if given is not None and expected == cores and given.strip() != str(cores):
        assert f"Ignoring {THREADS_ENV}" in caplog.text


def test_the_entry_point_sets_the_policy_before_torch_loads() -> None:
    # libgomp reads OMP_WAIT_POLICY once, when torch's library loads: `python -m object2vec`
    # must set it before anything imports torch.
    code = (
        "import sys, os\n"
        "from object2vec import cli\n"
        "assert 'torch' not in sys.modules\n"
        "cli.main(['--help'])\n"
        "assert 'torch' not in sys.modules\n"
        "print(os.environ.get('OMP_WAIT_POLICY'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["PYTHONPATH"] = str(CONTAINER)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "PASSIVE"  # no governor in `--help` (see test_cli for train)


def stat_text(rows: dict[int, tuple[int, int]]) -> str:
    """/proc/stat with cpuN lines whose idle + iowait and total ticks are as given."""
    lines = ["cpu  1 2 3 4 5 6 7 8 0 0"]
    for cpu, (idle, total) in rows.items():
        lines.append(f"cpu{cpu} {total - idle} 0 0 {idle // 2} {idle - idle // 2} 0 0 0 0 0")
    return "\n".join([*lines, "intr 12345", ""])


def test_free_cores_sums_the_idle_fraction_of_this_process_cores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stat = tmp_path / "stat"
    stat.write_text(stat_text({0: (100, 200), 1: (50, 100), 7: (0, 0)}))
    later = stat_text({0: (200, 300), 1: (50, 200), 7: (100, 100)})
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(threads.time, "sleep", lambda seconds: stat.write_text(later))  # time passes
    # Over the sample cpu0 was idle all 100 ticks, cpu1 none of its 100; cpu7 is not ours.
    assert threads.free_cores(stat_file=str(stat)) == pytest.approx(1.0)


def test_free_cores_is_none_without_proc_stat(tmp_path: Path) -> None:
    assert threads.free_cores(seconds=0.0, stat_file=str(tmp_path / "missing")) is None


@pytest.mark.parametrize(
    ("cores", "free", "expected"),
    [(2, 2.0, 2), (2, 1.8, 2), (2, 1.7, 1), (2, 0.6, 1), (2, 0.0, 1), (8, 5.4, 5), (8, 5.7, 5), (4, 9.0, 4)],
)
def test_threads_follow_the_idle_cores(cores: int, free: float, expected: int) -> None:
    assert thread_count(cores, {}, free) == expected
    assert thread_count(cores, {THREADS_ENV: "3"}, free) == 3  # the user's count wins


class FakeMachine:
    """/proc/stat of cpus 0 and 1 plus this process's CPU clock, advanced by hand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.wall = 0.0
        self.own_cpu = 0.0
        self.busy_ticks = {0: 0, 1: 0}
        self.all_ticks = {0: 0, 1: 0}
        self.write()

    def write(self) -> None:
        rows = {cpu: (self.all_ticks[cpu] - self.busy_ticks[cpu], self.all_ticks[cpu]) for cpu in (0, 1)}
        self.path.write_text(stat_text(rows))

    def run(self, seconds: float, own_busy: float, others_busy: float) -> None:
        """`seconds` pass with this process busy on `own_busy` cores and others on `others_busy`."""
        self.wall += seconds
        self.own_cpu += own_busy * seconds
        ticks = int(round(seconds * 100))  # USER_HZ
        busy = own_busy + others_busy
        for cpu in (0, 1):
            self.all_ticks[cpu] += ticks
            self.busy_ticks[cpu] += int(round(ticks * min(1.0, max(0.0, busy - cpu))))
        self.write()


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeMachine:
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(threads.os, "sysconf", lambda name: 100)
    return FakeMachine(tmp_path / "stat")


def governor_on(machine: FakeMachine, set_to: list[int], threads: int = 2) -> ThreadGovernor:
    return ThreadGovernor(
        2, set_to.append, threads, seconds=0.5, stat_file=str(machine.path),
        wall=lambda: machine.wall, cpu=lambda: machine.own_cpu,
    )  # fmt: skip


def test_the_governor_drops_to_one_thread_when_load_arrives_and_returns_when_it_leaves(machine: FakeMachine) -> None:
    set_to: list[int] = []
    governor = governor_on(machine, set_to)
    machine.run(0.5, own_busy=2.0, others_busy=0.0)  # alone: its own spinning threads are not load
    governor.tick()
    assert set_to == [] and governor.threads == 2
    machine.run(0.5, own_busy=1.0, others_busy=1.0)  # another process busy on one core
    governor.tick()
    assert set_to == [1] and governor.threads == 1
    machine.run(0.5, own_busy=1.0, others_busy=0.5)  # half a core busy: still too busy for a thread
    governor.tick()
    assert set_to == [1]
    machine.run(0.5, own_busy=1.0, others_busy=0.1)  # the load left
    governor.tick()
    assert set_to == [1, 2] and governor.changes == 2


def test_the_governor_looks_only_every_interval(machine: FakeMachine) -> None:
    set_to: list[int] = []
    governor = governor_on(machine, set_to)
    machine.run(0.2, own_busy=0.0, others_busy=2.0)
    governor.tick()  # 0.2 s after the start: too soon to look
    assert set_to == []
    machine.run(0.4, own_busy=0.0, others_busy=2.0)
    governor.tick()
    assert set_to == [1]


def test_the_governor_keeps_the_count_when_proc_stat_cannot_be_read(machine: FakeMachine) -> None:
    set_to: list[int] = []
    governor = governor_on(machine, set_to)
    machine.path.unlink()
    machine.wall += 1.0
    governor.tick()
    assert set_to == [] and governor.threads == 2


def test_no_governor_when_the_user_set_the_count_or_there_is_one_core() -> None:
    assert ThreadGovernor.start(4, {THREADS_ENV: "2"}) is None
    assert ThreadGovernor.start(1, {}) is None
