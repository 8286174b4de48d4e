"""Metric lines (exact format), the MetricDefinitions regexes, and MetricAccumulator's numbers."""

from __future__ import annotations

import math
import re

import pytest
import torch

from object2vec.training.metrics import (
    METRIC_DEFINITIONS,
    MetricAccumulator,
    emit_metric_line,
    log_progress,
    log_quality,
    log_throughput,
    loss_name,
)

LOGGER = "object2vec.metrics"


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOGGER]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("algo-1", "validation", "cross_entropy", 0.7604, 3),
            "#quality_metric: host=algo-1, epoch=3, validation cross_entropy <loss>=0.7604",
        ),
        (
            ("algo-1", "validation", "accuracy", 0.6688, 3),
            "#quality_metric: host=algo-1, epoch=3, validation accuracy <score>=0.6688",
        ),
        (
            ("algo-2", "train", "mean_squared_error", 1.25, 0),
            "#quality_metric: host=algo-2, epoch=0, train mean_squared_error <loss>=1.25",
        ),
        (
            ("algo-1", "train", "mean_absolute_error", 0.5, 12),
            "#quality_metric: host=algo-1, epoch=12, train mean_absolute_error <loss>=0.5",
        ),
        (("algo-1", "test", "accuracy", 0.82, None), "#quality_metric: host=algo-1, test accuracy <score>=0.82"),
        (
            ("algo-1", "test", "cross_entropy", 1 / 3, None),
            "#quality_metric: host=algo-1, test cross_entropy <loss>=0.33333333",
        ),
        (("algo-1", "test", "accuracy", 1.0, None), "#quality_metric: host=algo-1, test accuracy <score>=1"),
        (
            ("algo-1", "test", "mean_squared_error", 123456789.0, None),
            "#quality_metric: host=algo-1, test mean_squared_error <loss>=1.2345679e+08",
        ),
    ],
)
def test_quality_line(caplog: pytest.LogCaptureFixture, args: tuple, expected: str) -> None:
    host, split, name, value, epoch = args
    with caplog.at_level("INFO", logger=LOGGER):
        log_quality(host, split, name, value, epoch)
    assert lines(caplog) == [expected]


@pytest.mark.parametrize(("percent", "shown"), [(40.0, "40"), (100.0, "100"), (33.333, "33"), (0.0, "0")])
def test_progress_line(caplog: pytest.LogCaptureFixture, percent: float, shown: str) -> None:
    with caplog.at_level("INFO", logger=LOGGER):
        log_progress("algo-1", percent)
    assert lines(caplog) == [f"#progress_metric: host=algo-1, completed {shown} % of epochs"]


@pytest.mark.parametrize(("rate", "shown"), [(123456.74, "123456.7"), (0.0, "0.0"), (2e6, "2000000.0")])
def test_throughput_line(caplog: pytest.LogCaptureFixture, rate: float, shown: str) -> None:
    with caplog.at_level("INFO", logger=LOGGER):
        log_throughput("algo-1", rate)
    assert lines(caplog) == [f"#throughput_metric: host=algo-1, train throughput={shown} records/second"]


def test_lines_are_info_records_of_one_logger(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO"):
        emit_metric_line("#quality_metric: host=algo-1, test accuracy <score>=1")
    (record,) = caplog.records
    assert (record.name, record.levelname) == (LOGGER, "INFO")


def emitted(caplog: pytest.LogCaptureFixture) -> str:
    """A log with every line the job writes, for both output layers and all splits."""
    with caplog.at_level("INFO", logger=LOGGER):
        for epoch in (0, 1):
            log_throughput("algo-1", 1234.5)
            for split in ("train", "validation"):
                log_quality("algo-1", split, "cross_entropy", 0.5 + epoch, epoch)
                log_quality("algo-1", split, "accuracy", 0.25 + epoch, epoch)
                log_quality("algo-1", split, "mean_squared_error", 2e-5 + epoch, epoch)
                log_quality("algo-1", split, "mean_absolute_error", 9.0, epoch)
            log_progress("algo-1", 50.0 * (epoch + 1))
        log_quality("algo-1", "test", "cross_entropy", 0.125)
        log_quality("algo-1", "test", "accuracy", 0.75)
        log_quality("algo-1", "test", "mean_squared_error", 3.0)
    return "\n".join(lines(caplog))


EXPECTED_CAPTURES = {
    "train:cross_entropy": ["0.5", "1.5"],
    "train:accuracy": ["0.25", "1.25"],
    "train:mean_squared_error": ["2e-05", "1.00002"],
    "validation:cross_entropy": ["0.5", "1.5"],
    "validation:accuracy": ["0.25", "1.25"],
    "validation:mean_squared_error": ["2e-05", "1.00002"],
    "test:cross_entropy": ["0.125"],
    "test:accuracy": ["0.75"],
    "test:mean_squared_error": ["3"],
    "train:progress": ["50", "100"],
    "train:throughput": ["1234.5", "1234.5"],
}


def test_metric_definitions_capture_exactly_their_lines(caplog: pytest.LogCaptureFixture) -> None:
    log = emitted(caplog)
    assert [d["Name"] for d in METRIC_DEFINITIONS] == list(EXPECTED_CAPTURES)
    for definition in METRIC_DEFINITIONS:
        captured = re.findall(definition["Regex"], log)
        assert captured == EXPECTED_CAPTURES[definition["Name"]], definition["Name"]
        assert all(math.isfinite(float(value)) for value in captured)


def test_epoch_regexes_do_not_capture_test_lines_and_vice_versa() -> None:
    test_line = "#quality_metric: host=algo-1, test accuracy <score>=0.5"
    epoch_line = "#quality_metric: host=algo-1, epoch=2, validation accuracy <score>=0.5"
    regexes = {d["Name"]: d["Regex"] for d in METRIC_DEFINITIONS}
    assert not re.search(regexes["validation:accuracy"], test_line)
    assert not re.search(regexes["test:accuracy"], epoch_line)


@pytest.mark.parametrize(("classification", "name"), [(True, "cross_entropy"), (False, "mean_squared_error")])
def test_loss_name(classification: bool, name: str) -> None:
    assert loss_name(classification) == name


def test_classification_accumulator_matches_a_hand_computation() -> None:
    batches = [
        (torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]]), torch.tensor([0, 1])),  # right, wrong
        (torch.tensor([[0.0, 0.0, 5.0]]), torch.tensor([2])),  # right
    ]
    accumulator = MetricAccumulator(classification=True)
    for outputs, labels in batches:
        accumulator.add(outputs, labels)
    losses = [
        -math.log(math.exp(2) / (math.exp(2) + 2)),
        -math.log(math.exp(1) / (1 + math.exp(1) + math.exp(3))),
        -math.log(math.exp(5) / (2 + math.exp(5))),
    ]
    result = accumulator.result()
    assert set(result) == {"cross_entropy", "accuracy"}
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["cross_entropy"] == pytest.approx(sum(losses) / 3, rel=1e-6)  # per record, not per batch


def test_regression_accumulator_matches_a_hand_computation() -> None:
    accumulator = MetricAccumulator(classification=False)
    accumulator.add(torch.tensor([[1.0], [2.0], [-1.0]]), torch.tensor([0.0, 2.5, 1.0]))
    accumulator.add(torch.tensor([[4.0]]), torch.tensor([1.0]))
    errors = [1.0, -0.5, -2.0, 3.0]
    result = accumulator.result()
    assert set(result) == {"mean_squared_error", "mean_absolute_error"}
    assert result["mean_squared_error"] == pytest.approx(sum(e * e for e in errors) / 4)
    assert result["mean_absolute_error"] == pytest.approx(sum(abs(e) for e in errors) / 4)


def test_accumulator_accepts_outputs_that_require_grad() -> None:
    accumulator = MetricAccumulator(classification=True)
    assert accumulator.result() == {}
    accumulator.add(torch.tensor([[1.0, 2.0]], requires_grad=True), torch.tensor([1]))
    assert accumulator.result()["accuracy"] == 1.0
