"""The entry points: command dispatch and usage, and train_main's failure file and exit codes."""

from __future__ import annotations

import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from object2vec import cli, errors
from object2vec.environment import TrainingEnvironment
from object2vec.errors import AlgorithmError, ClientError, TrainingStopped
from object2vec.threads import SPIN_COUNT_ENV, WAIT_POLICY_ENV


@pytest.fixture
def base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """SAGEMAKER_BASE_DIR in tmp_path; the logging and signal handlers train_main installs are undone."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    signals = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path / "opt_ml"))
    try:
        yield tmp_path / "opt_ml"
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for signum, handler in signals.items():
            signal.signal(signum, handler)


@pytest.fixture(autouse=True)
def thread_environment_kept() -> Iterator[None]:
    """main() states the OpenMP wait policy in os.environ (for the torch it loads next): put it
    back afterwards, so no later test of the session inherits it."""
    saved = {name: os.environ.get(name) for name in (WAIT_POLICY_ENV, SPIN_COUNT_ENV)}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def job(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replaces the environment and the job: set job["raise"] to make the job fail."""
    state: dict[str, Any] = {"raise": None, "calls": 0}
    env = object()

    def run_training(given_env: Any, stop: Any) -> None:
        assert given_env is env
        state["calls"] += 1
        if state["raise"] is not None:
            raise state["raise"]

    monkeypatch.setattr(TrainingEnvironment, "from_sagemaker", classmethod(lambda cls: env))
    monkeypatch.setattr("object2vec.training.job.run_training", run_training)
    return state


# ---------------------------------------------------------------------------------------------
# main()


@pytest.mark.parametrize(("argv", "code"), [([], 2), (["-h"], 0), (["--help"], 0)])
def test_usage(capsys: pytest.CaptureFixture[str], argv: list[str], code: int) -> None:
    assert cli.main(argv) == code
    out = capsys.readouterr().out
    assert out == cli.usage() + "\n"
    for command, (_, summary) in cli.COMMANDS.items():
        assert f"  {command}  " in out and summary in out


@pytest.mark.parametrize(
    ("argv0", "program"),
    [
        ("/usr/local/bin/object2vec", "object2vec"),  # the console script of `pip install`
        ("/opt/venv/lib/python3.11/site-packages/object2vec/__main__.py", "python -m object2vec"),
    ],
)
def test_usage_names_the_program_as_it_was_started(monkeypatch: pytest.MonkeyPatch, argv0: str, program: str) -> None:
    monkeypatch.setattr("sys.argv", [argv0, "--help"])
    assert cli.usage().startswith(f"usage: {program} COMMAND [args...]\n")
    from object2vec.prepare.cli import build_parser

    assert build_parser().format_usage().startswith(f"usage: {program} prepare ")


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["fit", "x"]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"unknown command 'fit'\n{cli.usage()}\n" and captured.out == ""


def test_every_command_is_dispatched_to_a_function() -> None:
    for target, _ in cli.COMMANDS.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), target


@pytest.mark.parametrize(
    ("command", "target"),
    [
        ("train", "object2vec.cli.train_main"),
        ("serve", "object2vec.serving.server.serve_main"),
        ("prepare", "object2vec.prepare.cli.prepare_main"),
    ],
)
def test_dispatch_passes_the_remaining_arguments(monkeypatch: pytest.MonkeyPatch, command: str, target: str) -> None:
    calls = []
    monkeypatch.setattr(target, lambda argv: calls.append(list(argv)) or 7)
    assert cli.main([command, "--a", "b"]) == 7
    assert calls == [["--a", "b"]]


@pytest.mark.parametrize(
    ("command", "governed"), [("train", True), ("serve", True), ("prepare", False), ("index", False)]
)
def test_threads_spin_only_in_programs_that_re_count_them(
    monkeypatch: pytest.MonkeyPatch, command: str, governed: bool
) -> None:
    seen: list[bool] = []
    monkeypatch.setattr(cli, "configure_threads", lambda governed: seen.append(governed))
    monkeypatch.setattr(cli, "_command_function", lambda target: lambda argv: 0)
    assert cli.main([command]) == 0
    assert seen == [governed]  # threads.configure_threads: spin where a ThreadGovernor runs, else PASSIVE


def end_without_exiting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """exit_ ends the process with os._exit after the atexit functions: raise instead (and keep
    pytest's own atexit functions for pytest); returns the calls made."""
    calls: list[str] = []

    def os_exit(code: int) -> None:
        calls.append("os._exit")
        raise SystemExit(code)

    monkeypatch.setattr(cli.os, "_exit", os_exit)
    monkeypatch.setattr(cli.atexit, "_run_exitfuncs", lambda: calls.append("atexit"))
    return calls


def test_main_entry_exits_with_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["object2vec", "train"])
    monkeypatch.setattr("object2vec.cli.train_main", lambda argv: 3)
    end_without_exiting(monkeypatch)
    with pytest.raises(SystemExit) as info:
        cli.main_entry()
    assert info.value.code == 3


# ---------------------------------------------------------------------------------------------
# train_main()


def test_success_touches_the_success_file(base: Path, job: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    (base / "output").mkdir(parents=True)
    assert cli.train_main(["extra"]) == 0
    assert job["calls"] == 1
    assert (base / "output" / "success").exists() and not (base / "output" / "failure").exists()
    assert "Ignoring arguments after 'train': extra" in capsys.readouterr().out


def test_client_error(base: Path, job: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    job["raise"] = ClientError("enc_dim=2 is out of range")
    assert cli.train_main([]) == errors.EXIT_CLIENT_ERROR == 1
    # The user's message and nothing else: no traceback for a user error.
    assert (base / "output" / "failure").read_text() == "ClientError: enc_dim=2 is out of range\n"
    out = capsys.readouterr().out
    assert "Reporting training FAILURE: ClientError: enc_dim=2 is out of range" in out
    assert "Traceback" not in out
    assert not (base / "output" / "success").exists()


def test_client_error_from_the_environment_itself(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # No hyperparameters.json under the base dir: the real from_sagemaker reports it.
    assert cli.train_main([]) == 1
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith(f"ClientError: {base / 'input' / 'config' / 'hyperparameters.json'} does not exist")
    assert "Traceback" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("error", "prefix", "code"),
    [
        (AlgorithmError("the model has no parameters"), "AlgorithmError: the model has no parameters\n\n", 2),
        (KeyError("enc0"), "AlgorithmError: KeyError: 'enc0'\n\n", 2),
        (RuntimeError("CUDA error: out of memory"), "AlgorithmError: RuntimeError: CUDA error: out of memory\n\n", 2),
        (TrainingStopped("training stopped by SIGTERM after 2 epochs"), "TrainingStopped: training stopped by", 143),
    ],
)
def test_other_failures(base: Path, job: dict[str, Any], error: Exception, prefix: str, code: int) -> None:
    job["raise"] = error
    assert cli.train_main([]) == code
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith(prefix)  # the message comes first: SageMaker shows 1024 characters
    if isinstance(error, TrainingStopped):
        assert failure == f"TrainingStopped: {error}\n"
    else:
        assert "Traceback (most recent call last):" in failure  # details after the message


def test_a_read_only_output_after_success_is_a_warning(
    base: Path, job: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    base.mkdir()
    (base / "output").write_text("not a folder")  # what root cannot write either
    assert cli.train_main([]) == 0
    assert "the model is complete" in capsys.readouterr().out


def test_a_signal_before_the_job_starts_stops_it_at_once(
    base: Path, job: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image's `train` starts Python with SIGTERM blocked: a StopTrainingJob in the first
    moments waits, and ends the process as soon as the handlers exist, during the imports, with
    the failure file written (os._exit: no exception through a library's import)."""

    def exit_(code: int) -> None:
        raise SystemExit(code)  # instead of ending pytest

    monkeypatch.setattr(cli.os, "_exit", exit_)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
    try:
        signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
        with pytest.raises(SystemExit) as exit_info:
            cli.train_main([])
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    assert exit_info.value.code == errors.EXIT_STOPPED
    assert job["calls"] == 0
    failure = (base / "output" / "failure").read_text()
    assert failure == "TrainingStopped: training stopped by SIGTERM before it started\n"


def test_a_signal_while_the_job_finishes_stops_it(
    base: Path, job: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM during the last deferred steps (test metrics, saving): the model is complete, but
    the job was asked to stop: exit 143, not success."""

    def run_training(_env: Any, stop: Any) -> None:
        with stop.deferred():
            signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)

    monkeypatch.setattr("object2vec.training.job.run_training", run_training)
    (base / "output").mkdir(parents=True)
    assert cli.train_main([]) == errors.EXIT_STOPPED
    assert "as it finished; the complete model was saved" in (base / "output" / "failure").read_text()
    assert not (base / "output" / "success").exists()


def test_long_messages_are_written_whole_with_a_warning(
    base: Path, job: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    job["raise"] = ClientError("x" * 2000)
    assert cli.train_main([]) == 1
    assert (base / "output" / "failure").read_text() == "ClientError: " + "x" * 2000 + "\n"
    assert "longer than the 1024 characters SageMaker shows" in capsys.readouterr().out


def test_an_unwritable_failure_file_is_logged(
    base: Path, job: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    base.mkdir()
    (base / "output").write_text("not a folder")
    job["raise"] = ClientError("bad")
    assert cli.train_main([]) == 1
    assert f"Could not write {base / 'output' / 'failure'}" in capsys.readouterr().out


def test_logging_goes_to_stdout_in_the_builtin_style(
    base: Path, job: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    job["raise"] = ClientError("bad")
    cli.train_main([])
    line = next(x for x in capsys.readouterr().out.splitlines() if "Reporting training FAILURE" in x)
    assert line.startswith("[") and " ERROR object2vec.cli] Reporting training FAILURE: ClientError: bad" in line


def test_exit_runs_the_atexit_functions_and_skips_the_teardown(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = end_without_exiting(monkeypatch)
    monkeypatch.setattr(cli.gc, "freeze", lambda: calls.append("freeze"))
    with pytest.raises(SystemExit) as exit_info:
        cli.exit_(143)
    assert exit_info.value.code == 143 and calls == ["freeze", "atexit", "os._exit"]


def test_a_finished_command_leaves_at_once_with_its_output_flushed(tmp_path: Path) -> None:
    # python -m object2vec ends through exit_: the exit code and everything printed arrive.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "container")}
    result = subprocess.run(
        [sys.executable, "-m", "object2vec", "nonsense"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "unknown command 'nonsense'" in result.stderr
