"""Fixtures for the image tests: find the Docker engine, build the image once, run containers.

The engine is whatever the docker CLI reaches (DOCKER_HOST, else the default socket); .ci/run
starts one. Without an engine these tests skip, except under CI=true, where they fail: CI must
never pass by skipping them. Set OBJECT2VEC_TEST_IMAGE to test an image built beforehand instead
of building one (docker/build.sh -t object2vec:test, reused from the layer cache when unchanged).
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from image_helpers import (
    BASE_IMAGE,
    BUILD_TIMEOUT_S,
    DEFAULT_TEST_IMAGE,
    IMAGE_ENV,
    LABEL,
    REPO,
    Container,
    docker,
    engine_problem,
    is_ci,
)


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """The engine's version; skips (fails under CI=true) when none can be reached."""
    problem = engine_problem()
    if problem:
        if is_ci():
            pytest.fail(f"CI=true but {problem}: .ci/run must start dockerd and export DOCKER_HOST")
        pytest.skip(f"{problem} (start one, e.g. as .ci/run does, to run the image tests)")
    return docker("version", "--format", "{{.Server.Version}}").stdout.strip()


@pytest.fixture(scope="session")
def image(docker_engine: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The image under test: OBJECT2VEC_TEST_IMAGE, or built by docker/build.sh once per session."""
    given = os.environ.get(IMAGE_ENV)
    if given:
        docker("image", "inspect", given)
        return given
    log = tmp_path_factory.mktemp("build") / "build.log"
    # No registry here: make a python:3.11-slim stand-in from Debian packages when it is missing.
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode != 0:
        _run_logged([str(REPO / "docker" / "make_base_image.sh"), BASE_IMAGE], log, 900, "making the base image")
    start = time.monotonic()
    _run_logged([str(REPO / "docker" / "build.sh"), "-t", DEFAULT_TEST_IMAGE], log, BUILD_TIMEOUT_S, "building")
    print(f"\nbuilt {DEFAULT_TEST_IMAGE} in {time.monotonic() - start:.0f} s (log: {log})")
    return DEFAULT_TEST_IMAGE


def _run_logged(command: Sequence[str], log: Path, timeout: float, what: str) -> None:
    with log.open("a") as out:
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, cwd=REPO)
    if result.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        pytest.fail(f"{what} failed ({' '.join(command)} exited {result.returncode}); log {log}:\n{tail}")


@pytest.fixture(scope="session", autouse=True)
def _remove_leftover_containers() -> Iterator[None]:
    """Containers started here carry a label; remove any that a test left behind."""
    yield
    if engine_problem() is None:
        ids = docker("ps", "-aq", "--filter", f"label={LABEL}", check=False).stdout.split()
        if ids:
            docker("rm", "-f", *ids, check=False)


@pytest.fixture
def start_container() -> Iterator:
    """start_container(image, command, *docker_run_options) -> Container; removed after the test."""
    started: list[Container] = []

    def start(image: str, command: str, *options: str) -> Container:
        name = f"o2v-test-{uuid.uuid4().hex[:10]}"
        docker("run", "-d", "--name", name, "--label", LABEL, *options, image, command)
        container = Container(name)
        started.append(container)
        return container

    yield start
    for container in started:
        docker("rm", "-f", container.name, check=False)
