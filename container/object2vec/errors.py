"""Error classes shared by training and serving.

SageMaker distinguishes a job that failed because of its inputs (the user can fix it) from one
that failed inside the algorithm. The failure file starts with the class name so that
DescribeTrainingJob's FailureReason tells which it was.
"""

from __future__ import annotations


class Object2VecError(Exception):
    """Base class of every error this package raises on purpose."""


class ClientError(Object2VecError):
    """Bad hyperparameters, data or files: the message says what is wrong and how to fix it."""


class AlgorithmError(Object2VecError):
    """An internal fault: not caused by the user's inputs."""


class TrainingStopped(Object2VecError):
    """Training was asked to stop (SIGTERM or SIGINT) before it finished."""


class RequestError(Object2VecError):
    """A bad inference request; carries the HTTP status the server answers with."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
