"""CPU thread policy (threads.py): the OpenMP wait policy default, thread counts, and that the
entry point sets the policy before torch loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from object2vec import threads
from object2vec.threads import (
    DEFAULT_WAIT_POLICY,
    THREADS_ENV,
    configure_threads,
    describe_wait_policy,
    thread_count,
)

CONTAINER = Path(__file__).resolve().parents[2] / "container"


def test_the_default_wait_policy_is_set_when_the_user_set_none() -> None:
    env: dict[str, str] = {}
    configure_threads(env)
    assert env == {"OMP_WAIT_POLICY": DEFAULT_WAIT_POLICY}
    assert describe_wait_policy(env) == f"OMP_WAIT_POLICY={DEFAULT_WAIT_POLICY}"


@pytest.mark.parametrize("given", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "10000"}])
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
    assert result.stdout.split()[-1] == DEFAULT_WAIT_POLICY


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
    ("cores", "free", "expected"), [(2, 2.0, 2), (2, 0.6, 1), (2, 0.0, 1), (8, 5.4, 5), (4, 9.0, 4)]
)
def test_threads_follow_the_idle_cores(cores: int, free: float, expected: int) -> None:
    assert thread_count(cores, {}, free) == expected
    assert thread_count(cores, {THREADS_ENV: "3"}, free) == 3  # the user's count wins
