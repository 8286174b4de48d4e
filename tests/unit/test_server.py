"""serve's process supervision (with stand-in children), its gunicorn options, and a model that
cannot be loaded stopping the workers without a traceback. The real server runs in
tests/integration/test_serve.py."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from object2vec.errors import ClientError
from object2vec.serving import server
from object2vec.serving.server import Child, Supervisor, gunicorn_options
from object2vec.serving.settings import ServerSettings

STOPS = {signal.SIGTERM: signal.SIGTERM, signal.SIGINT: signal.SIGINT}


def spawn(code: str) -> int:
    return os.posix_spawn(sys.executable, [sys.executable, "-c", code], os.environ)


def test_gunicorn_binds_the_port_or_the_given_socket() -> None:
    settings = ServerSettings.from_env({"SAGEMAKER_BIND_TO_PORT": "9001"}, cores=2)
    assert gunicorn_options(settings)["bind"] == ["0.0.0.0:9001"]
    assert gunicorn_options(settings, "unix:/tmp/x.sock")["bind"] == ["unix:/tmp/x.sock"]


def test_a_child_that_ends_by_itself_stops_the_other(caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor()
    sleeper = spawn("import time; time.sleep(60)")
    supervisor.children[sleeper] = Child("gunicorn", STOPS, 0)
    supervisor.children[spawn("raise SystemExit(1)")] = Child("nginx", STOPS, 8080)
    start = time.monotonic()
    assert supervisor.wait(kill_after_s=30) == 1
    assert time.monotonic() - start < 20  # the sleeper was stopped, not waited for
    assert "nginx ended with exit code 1" in caplog.text and "is port 8080 in use?" in caplog.text


def test_workers_that_cannot_load_the_model_are_named(caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor()
    supervisor.children[spawn(f"raise SystemExit({server.APP_LOAD_ERROR})")] = Child("gunicorn", STOPS, 0)
    assert supervisor.wait(kill_after_s=30) == 1
    assert "the workers could not load the model" in caplog.text


def test_a_stop_signal_is_forwarded_and_ends_with_0() -> None:
    supervisor = Supervisor()
    supervisor.children[spawn("import time; time.sleep(60)")] = Child("gunicorn", STOPS, 0)
    supervisor.stop(signal.SIGTERM)
    assert supervisor.wait(kill_after_s=30) == 0


def test_children_that_ignore_the_stop_are_killed_after_the_grace_period() -> None:
    supervisor = Supervisor()
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    )
    pid = spawn(stubborn)
    time.sleep(1)  # the child ignores SIGTERM by now (a busy machine may need the second)
    supervisor.children[pid] = Child("gunicorn", STOPS, 0)
    supervisor.stop(signal.SIGTERM)
    start = time.monotonic()
    assert supervisor.wait(kill_after_s=1) == 0
    assert time.monotonic() - start < 15


def test_a_child_started_after_the_stop_is_stopped_at_once() -> None:
    supervisor = Supervisor()
    supervisor.stop(signal.SIGTERM)
    supervisor._started(spawn("import time; time.sleep(60)"), Child("nginx", STOPS, 0))
    assert supervisor.wait(kill_after_s=30) == 0


FORK_THEN_STOP = """
import os, signal, sys, time
from object2vec.serving.server import hold_stop_signals_across_forks
signal.signal(signal.SIGTERM, lambda *_: None)  # like gunicorn's arbiter: its handler only queues
if sys.argv[1] == "hold":
    hold_stop_signals_across_forks()
pid = os.fork()
if pid == 0:  # a worker that has not installed its own handlers yet
    time.sleep(3)
    os._exit(0)
os.kill(pid, signal.SIGTERM)  # the arbiter's stop, right after the fork
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


@pytest.mark.parametrize(("mode", "worker_exit"), [("hold", -signal.SIGTERM), ("inherit", 0)])
def test_a_worker_stopped_right_after_its_fork_ends_at_once(mode: str, worker_exit: int) -> None:
    """gunicorn stops a worker it has just forked (the stop came while it spawned them): held
    across the fork, the signal ends the worker at once; inherited as is (the control), the
    arbiter's handler swallows it and the worker runs on (the 20 s wait seen once in CI)."""
    container = os.path.dirname(os.path.dirname(os.path.dirname(server.__file__)))
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [container, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-c", FORK_THEN_STOP, mode], env=environment, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == worker_exit  # -SIGTERM: ended by the stop, not after its sleep


def test_a_model_that_cannot_be_served_ends_the_worker_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(_name: str) -> None:
        raise ClientError("model.safetensors does not match model_config.json")

    monkeypatch.setattr(server.importlib, "import_module", refuse)
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_:
        server.load_wsgi_app()
    assert exit_.value.code == server.APP_LOAD_ERROR  # gunicorn: "App failed to load", no restart loop
    assert "The model cannot be served: model.safetensors does not match" in caplog.text


def test_a_worker_governs_its_threads_only_when_it_may_use_several_cores_and_the_user_set_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OBJECT2VEC_THREADS", raising=False)
    monkeypatch.setenv(server.MOST_THREADS_ENV, "1")
    assert server.worker_governor() is None  # one core per worker: nothing to re-count
    monkeypatch.setenv(server.MOST_THREADS_ENV, "2")
    governor = server.worker_governor()
    assert governor is not None and governor.most == 2
    monkeypatch.setenv("OBJECT2VEC_THREADS", "2")
    assert server.worker_governor() is None  # the user's count is kept as given
