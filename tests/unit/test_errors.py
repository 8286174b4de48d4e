from __future__ import annotations

import pytest

from object2vec.errors import (
    REPORTED,
    AlgorithmError,
    ClientError,
    RequestError,
    TrainingStopped,
    failure_of,
    from_report,
    reported,
)


def test_each_reported_class_carries_the_exit_code_sagemaker_sees() -> None:
    assert (ClientError.exit_code, AlgorithmError.exit_code, TrainingStopped.exit_code) == (1, 2, 143)
    assert sorted(REPORTED) == ["AlgorithmError", "ClientError", "TrainingStopped"]


@pytest.mark.parametrize("err", [ClientError("bad file"), AlgorithmError("bug"), TrainingStopped("SIGTERM")])
def test_our_errors_are_reported_as_raised(err: Exception) -> None:
    assert reported(err) is err


def test_any_other_exception_is_an_algorithm_error_naming_its_type() -> None:
    failure = reported(ZeroDivisionError("division by zero"))
    assert type(failure) is AlgorithmError
    assert str(failure) == "ZeroDivisionError: division by zero"
    assert type(reported(RequestError(400, "bad request"))) is AlgorithmError  # serving's, never a job outcome


def test_a_report_names_its_class_and_an_unknown_kind_is_an_internal_fault() -> None:
    for kind, cls in REPORTED.items():
        err = from_report(kind, "message")
        assert type(err) is cls and str(err) == "message"
    assert type(from_report("KeyboardInterrupt", "x")) is AlgorithmError


def test_one_failure_text_per_error_with_the_traceback_of_internal_faults_only() -> None:
    try:
        raise ClientError("enc_dim=3 must be at least 4")
    except ClientError as err:
        failure = failure_of(err)
    assert (failure.text, failure.detail, failure.exit_code) == ("ClientError: enc_dim=3 must be at least 4", "", 1)
    try:
        {}["missing"]
    except KeyError as err:
        failure = failure_of(err)
    assert failure.text == "AlgorithmError: KeyError: 'missing'" and failure.exit_code == 2
    assert failure.detail.startswith("Traceback") and "KeyError" in failure.detail
