"""Metric lines in the exact format of SageMaker's built-in algorithms, and the metrics themselves.

SageMaker scrapes the log with regular expressions (MetricDefinitions), so every line that a
tuning job or a chart may read goes through `emit_metric_line`, the only writer of such lines:
    #quality_metric: host=algo-1, epoch=3, validation cross_entropy <loss>=0.7604
    #quality_metric: host=algo-1, test accuracy <score>=0.82
    #progress_metric: host=algo-1, completed 40 % of epochs
    #throughput_metric: host=algo-1, train throughput=123456.7 records/second
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

logger = logging.getLogger("object2vec.metrics")

# The MetricDefinitions a training or tuning job needs (the README lists the same table; a test
# checks that each one captures the lines written here).
METRIC_DEFINITIONS = [
    {"Name": name, "Regex": regex}
    for name, regex in (
        ("train:cross_entropy", r"#quality_metric: host=\S+, epoch=\S+, train cross_entropy <loss>=(\S+)"),
        ("train:accuracy", r"#quality_metric: host=\S+, epoch=\S+, train accuracy <score>=(\S+)"),
        ("train:mean_squared_error", r"#quality_metric: host=\S+, epoch=\S+, train mean_squared_error <loss>=(\S+)"),
        (
            "validation:cross_entropy",
            r"#quality_metric: host=\S+, epoch=\S+, validation cross_entropy <loss>=(\S+)",
        ),
        ("validation:accuracy", r"#quality_metric: host=\S+, epoch=\S+, validation accuracy <score>=(\S+)"),
        (
            "validation:mean_squared_error",
            r"#quality_metric: host=\S+, epoch=\S+, validation mean_squared_error <loss>=(\S+)",
        ),
        ("test:cross_entropy", r"#quality_metric: host=\S+, test cross_entropy <loss>=(\S+)"),
        ("test:accuracy", r"#quality_metric: host=\S+, test accuracy <score>=(\S+)"),
        ("test:mean_squared_error", r"#quality_metric: host=\S+, test mean_squared_error <loss>=(\S+)"),
        ("train:progress", r"#progress_metric: host=\S+, completed (\S+) %"),
        ("train:throughput", r"#throughput_metric: host=\S+, train throughput=(\S+) records/second"),
    )
]

# Higher is better for scores, lower for losses; the tag is part of the line format.
SCORE_METRICS = ("accuracy",)


def emit_metric_line(text: str) -> None:
    """The one place that writes a metric line."""
    logger.info("%s", text)


def log_quality(host: str, split: str, name: str, value: float, epoch: int | None = None) -> None:
    tag = "score" if name in SCORE_METRICS else "loss"
    epoch_part = f"epoch={epoch}, " if epoch is not None else ""
    emit_metric_line(f"#quality_metric: host={host}, {epoch_part}{split} {name} <{tag}>={value:.8g}")


def log_progress(host: str, percent: float) -> None:
    emit_metric_line(f"#progress_metric: host={host}, completed {percent:.0f} % of epochs")


def log_throughput(host: str, records_per_second: float) -> None:
    emit_metric_line(f"#throughput_metric: host={host}, train throughput={records_per_second:.1f} records/second")


class MetricAccumulator:
    """Sums per-batch statistics on the device (no host sync per batch); `result()` averages."""

    def __init__(self, classification: bool) -> None:
        self.classification = classification
        self.count = 0
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, outputs: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor | None = None) -> None:
        """outputs: (B, C) logits or (B, 1) values; labels: (B,); loss: the batch's mean loss when
        training computed it already (cross-entropy or squared error), so it is not computed twice."""
        with torch.no_grad():
            count = labels.shape[0]
            if self.classification:
                total = loss * count if loss is not None else F.cross_entropy(outputs, labels, reduction="sum")
                stats = {"cross_entropy": total, "accuracy": (outputs.argmax(dim=1) == labels).sum()}
            else:
                error = outputs.squeeze(1).float() - labels
                total = loss * count if loss is not None else (error * error).sum()
                stats = {"mean_squared_error": total, "mean_absolute_error": error.abs().sum()}
            for name, value in stats.items():
                kept = self.sums.get(name)
                if kept is None:
                    self.sums[name] = value.double()
                else:
                    kept.add_(value)  # in float64, on the device: no host sync per batch
        self.count += int(count)

    def result(self) -> dict[str, float]:
        return {name: float(total) / max(self.count, 1) for name, total in self.sums.items()}


def loss_name(classification: bool) -> str:
    """The metric early stopping and model selection minimise."""
    return "cross_entropy" if classification else "mean_squared_error"
