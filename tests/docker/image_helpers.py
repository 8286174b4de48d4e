"""Helpers for the image tests: the docker CLI, containers, a copy of /opt/ml, free ports."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from object2vec.local_job import copy_job

REPO = Path(__file__).resolve().parents[2]
TEST_DIR = REPO / "local_test" / "test_dir"
BASE_IMAGE = "python:3.11-slim"
IMAGE_ENV = "OBJECT2VEC_TEST_IMAGE"
DEFAULT_TEST_IMAGE = "object2vec:test"
BUILD_TIMEOUT_S = 1800  # a cold build takes about 5 min on 2 cores
LABEL = "object2vec-tests"  # on every container started here, to clean up leftovers


def is_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI; stdout and stderr are captured as text."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def engine_problem() -> str | None:
    """None when an engine answers, else why not."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    where = os.environ.get("DOCKER_HOST") or "the default socket (/var/run/docker.sock)"
    try:
        result = docker("version", "--format", "{{.Server.Version}}", timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return f"the Docker engine at {where} did not answer within 20 s"
    if result.returncode != 0:
        return f"no Docker engine reachable at {where}: {result.stderr.strip()[:300]}"
    return None


def make_opt_ml(dest: Path, **hyperparameters: str) -> Path:
    """A copy of local_test/test_dir's input (empty model/ and output/), with hyperparameters changed."""
    return copy_job(TEST_DIR, dest, **hyperparameters)


def make_long_training(dest: Path, copies: int = 30) -> Path:
    """make_opt_ml for a job that is still training seconds after its first epoch on any machine.

    The sample trains at ~60k records/s on an idle CI machine, so its 3,000 pairs took 0.05 s an
    epoch and early stopping ended the job before a test's signal reached it. `copies` copies of
    the train file make an epoch ~1.5 s there; the patience cap (5) still needs 6 epochs to stop."""
    opt_ml = make_opt_ml(dest, epochs="100", early_stopping_patience="5", early_stopping_tolerance="0.000001")
    train = opt_ml / "input" / "data" / "train" / "train.jsonl"
    train.write_text(train.read_text() * copies)
    return opt_ml


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Container:
    """A detached container started by start_container."""

    name: str

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return result.stdout + result.stderr

    def state(self) -> dict:
        return json.loads(docker("inspect", "-f", "{{json .State}}", self.name).stdout)

    def wait(self, timeout: float = 120) -> int:
        return int(docker("wait", self.name, timeout=timeout).stdout.strip())

    def stop(self, grace_s: int = 30) -> float:
        """`docker stop` (SIGTERM, then SIGKILL after grace_s); returns the seconds it took."""
        start = time.monotonic()
        docker("stop", "-t", str(grace_s), self.name, timeout=grace_s + 30)
        return time.monotonic() - start

    def wait_for_log(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.logs():
                return
            if not self.state()["Running"]:
                break
            time.sleep(0.5)
        pytest.fail(f"{needle!r} not in the logs of {self.name} within {timeout} s:\n{self.logs()[-4000:]}")

    def wait_for_ping(self, url: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if not self.state()["Running"]:
                pytest.fail(f"{self.name} exited before /ping answered 200:\n{self.logs()[-4000:]}")
            time.sleep(0.5)
        pytest.fail(f"{url}/ping did not answer 200 within {timeout} s:\n{self.logs()[-4000:]}")


def run_to_completion(image: str, command: str, *options: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`docker run --rm` in the foreground: the exit code and the logs (stdout + stderr)."""
    name = f"o2v-test-{uuid.uuid4().hex[:10]}"
    try:
        return docker(
            "run", "--rm", "--name", name, "--label", LABEL, *options, image, command, timeout=timeout, check=False
        )
    finally:
        docker("rm", "-f", name, check=False)
