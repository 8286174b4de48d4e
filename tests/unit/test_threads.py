"""CPU thread policy (threads.py): the OpenMP wait policy default, thread counts, and that the
entry point sets the policy before torch loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
