"""Error classes shared by training and serving, each with the exit code a program ends with.

SageMaker distinguishes a job that failed because of its inputs (the user can fix it) from one
that failed inside the algorithm. The failure file starts with the class name so that
DescribeTrainingJob's FailureReason tells which it was; `reported` turns any exception into the
error a program reports, so that one place (object2vec.cli) writes the failure file and exit code.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass

EXIT_CLIENT_ERROR = 1
EXIT_ALGORITHM_ERROR = 2
EXIT_STOPPED = 143  # 128 + SIGTERM, what a shell reports for a process ended by SIGTERM


class Object2VecError(Exception):
    """Base class of every error this package raises on purpose."""

    exit_code = EXIT_ALGORITHM_ERROR


class ClientError(Object2VecError):
    """Bad hyperparameters, data or files: the message says what is wrong and how to fix it."""

    exit_code = EXIT_CLIENT_ERROR


class AlgorithmError(Object2VecError):
    """An internal fault: not caused by the user's inputs."""

    exit_code = EXIT_ALGORITHM_ERROR


class TrainingStopped(Object2VecError):
    """Training was asked to stop (SIGTERM or SIGINT) before it finished."""

    exit_code = EXIT_STOPPED


class RequestError(Object2VecError):
    """A bad inference request; carries the HTTP status the server answers with."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


# The classes a program reports by name (the failure file's first word, a training process's report).
REPORTED: dict[str, type[Object2VecError]] = {
    cls.__name__: cls for cls in (ClientError, AlgorithmError, TrainingStopped)
}


def reported(err: BaseException) -> ClientError | AlgorithmError | TrainingStopped:
    """The error as a program reports it: ours as raised, anything else an AlgorithmError naming its type."""
    if isinstance(err, (ClientError, AlgorithmError, TrainingStopped)):
        return err
    return AlgorithmError(f"{type(err).__name__}: {err}")


@dataclass(frozen=True)
class Failure:
    """How a program reports an error: the line users read, the traceback of an internal fault, the exit code."""

    text: str  # "ClientError: <message>": the failure file's first line, DescribeTrainingJob's FailureReason
    detail: str  # the traceback, for an internal fault only ("" otherwise)
    exit_code: int


def failure_of(err: BaseException) -> Failure:
    """The one mapping from an exception to what a program reports; call it where `err` is being handled."""
    error = reported(err)
    detail = traceback.format_exc() if isinstance(error, AlgorithmError) else ""
    return Failure(f"{type(error).__name__}: {error}", detail, error.exit_code)


def from_report(kind: str, message: str) -> Object2VecError:
    """The error a (kind, message) report names; an unknown kind is an internal fault."""
    return REPORTED.get(kind, AlgorithmError)(message)
