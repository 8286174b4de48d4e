"""The real `train` program, run as a subprocess on an /opt/ml laid out in a temp folder."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from object2vec.local_job import copy_job
from object2vec.model.io import load_model
from object2vec.training.metrics import METRIC_DEFINITIONS

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "local_test" / "test_dir"


def make_opt_ml(tmp_path: Path, hyperparameters: dict[str, str] | None = None) -> Path:
    return copy_job(SAMPLE, tmp_path / "opt" / "ml", **(hyperparameters or {}))


def sample_hyperparameters(**changes: str) -> dict[str, str]:
    hp = json.loads((SAMPLE / "input" / "config" / "hyperparameters.json").read_text())
    hp.update(changes)
    return hp


def run_train(base: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "PYTHONPATH": str(ROOT / "container")}
    return subprocess.run(
        [sys.executable, "-m", "object2vec", "train"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_train_writes_model_metrics_and_success(tmp_path: Path) -> None:
    base = make_opt_ml(tmp_path)
    result = run_train(base)
    assert result.returncode == 0, result.stdout + result.stderr
    log = result.stdout
    assert re.search(r"#quality_metric: host=algo-1, epoch=0, train cross_entropy <loss>=\d", log)
    assert re.search(r"#quality_metric: host=algo-1, epoch=0, validation accuracy <score>=\d", log)
    assert re.search(r"#quality_metric: host=algo-1, test accuracy <score>=\d", log)
    assert re.search(r"#progress_metric: host=algo-1, completed \d+ % of epochs", log)
    assert re.search(r"#throughput_metric: host=algo-1, train throughput=[\d.]+ records/second", log)
    if len(os.sched_getaffinity(0)) > 1 and not os.environ.get("OBJECT2VEC_THREADS"):  # threads.ThreadGovernor
        assert re.search(r"Training on cpu with \d+ CPU thread\(s\) \(.*re-counted every 0.5 s, at most \d+\)", log)
    # The best validation epoch is the saved one, and it learned something on the sample.
    validation = [float(v) for v in re.findall(r"validation accuracy <score>=(\S+)", log)]
    losses = [float(v) for v in re.findall(r"validation cross_entropy <loss>=(\S+)", log)]
    loaded = load_model(base / "model")
    best = loaded.info["training"]["best_epoch"]
    assert losses[best] == min(losses)
    assert validation[best] > 0.6
    assert (base / "output" / "success").exists() and not (base / "output" / "failure").exists()
    assert loaded.hyperparameters.enc0.vocab_size == 200


def test_metric_definitions_capture_our_lines(tmp_path: Path) -> None:
    base = make_opt_ml(tmp_path, sample_hyperparameters(epochs="2"))
    classification = run_train(base).stdout
    regression_dir = make_opt_ml(tmp_path / "r", sample_hyperparameters(epochs="2", output_layer="mean_squared_error"))
    regression = run_train(regression_dir).stdout
    for definition in METRIC_DEFINITIONS:
        name = definition["Name"]
        log = regression if "mean_squared_error" in name else classification
        values = re.findall(definition["Regex"], log)
        assert values, f"{name} captured nothing"
        assert all(float(v) >= 0 for v in values)
    assert "mean_absolute_error" in regression


def test_readme_lists_every_metric_definition() -> None:
    readme = (ROOT / "README.md").read_text()
    for definition in METRIC_DEFINITIONS:
        assert f"| `{definition['Name']}` | `{definition['Regex']}` |" in readme


def test_nested_gzip_files_and_missing_content_type(tmp_path: Path) -> None:
    base = make_opt_ml(tmp_path, sample_hyperparameters(epochs="1"))
    train_dir = base / "input" / "data" / "train"
    lines = (train_dir / "train.jsonl").read_bytes().splitlines(keepends=True)
    (train_dir / "train.jsonl").unlink()
    (train_dir / "part" / "deeper").mkdir(parents=True)
    (train_dir / "part" / "a.jsonl").write_bytes(b"".join(lines[:1000]) + b"\n\n")
    with gzip.open(train_dir / "part" / "deeper" / "b.jsonl.gz", "wb") as f:
        f.write(b"".join(lines[1000:]))
    config = base / "input" / "config" / "inputdataconfig.json"
    channels = json.loads(config.read_text())
    del channels["train"]["ContentType"]
    config.write_text(json.dumps(channels))
    result = run_train(base)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Channel train: {len(lines)} records from 2 file(s), 2 blank line(s) skipped" in result.stdout


def test_bad_hyperparameters_write_client_error(tmp_path: Path) -> None:
    base = make_opt_ml(tmp_path, sample_hyperparameters(enc_dim="2", optimizer="adamw", enc_dm="4"))
    result = run_train(base)
    assert result.returncode == 1
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith("ClientError: 3 invalid hyperparameters")
    assert "enc_dim=2 is out of range" in failure and "did you mean enc_dim?" in failure
    assert "Traceback" not in result.stdout + result.stderr
    assert not (base / "model" / "model.safetensors").exists()


def test_bad_data_names_channel_file_line_and_value(tmp_path: Path) -> None:
    base = make_opt_ml(tmp_path)
    path = base / "input" / "data" / "validation" / "validation.jsonl"
    lines = path.read_text().splitlines()
    lines[6] = '{"in0": [1, 2], "in1": [250], "label": 1}'
    path.write_text("\n".join(lines) + "\n")
    result = run_train(base)
    assert result.returncode == 1
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith(
        'ClientError: Inconsistent vocab for in1 found. Vocab id "250" is not less than vocab_size=200 '
        "(channel validation, file validation.jsonl, line 7)"
    )


def test_wrong_content_type_is_a_client_error(tmp_path: Path) -> None:
    base = make_opt_ml(tmp_path)
    config = base / "input" / "config" / "inputdataconfig.json"
    config.write_text(config.read_text().replace("application/jsonlines", "text/csv", 1))
    result = run_train(base)
    assert result.returncode == 1
    assert "ContentType 'text/csv'" in (base / "output" / "failure").read_text()


def test_sigterm_keeps_best_model_and_exits_non_zero(tmp_path: Path) -> None:
    # Enough data that an epoch takes a while, so the signal lands mid-training.
    base = make_opt_ml(tmp_path, sample_hyperparameters(epochs="100", early_stopping_patience="5", mini_batch_size="8"))
    train_file = base / "input" / "data" / "train" / "train.jsonl"
    train_file.write_text(train_file.read_text() * 5)
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "PYTHONPATH": str(ROOT / "container")}
    with subprocess.Popen(
        [sys.executable, "-m", "object2vec", "train"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if "epoch=1, validation accuracy" in line:
                break
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        rest = process.stdout.read()
        code = process.wait(timeout=30)
    assert time.monotonic() - sent < 10
    assert code == 143, rest
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith("TrainingStopped: training stopped by SIGTERM after ")
    loaded = load_model(base / "model")
    assert loaded.info["training"]["best_epoch"] >= 0


@pytest.mark.parametrize("delay", [0.05, 0.3, 1.0])
def test_sigterm_in_the_first_second_is_not_lost(tmp_path: Path, delay: float) -> None:
    """As the image starts `train`: SIGTERM and SIGINT blocked (docker/program/train). A signal
    during the interpreter's start or the imports waits, and stops the job as soon as the
    handlers exist. (Outside the image this process is not PID 1, so without the block the
    signal would kill it before the handlers exist, with no failure file: this test tells. The
    first delay is past the millisecond `env` takes to block the signals.)"""
    base = make_opt_ml(tmp_path, sample_hyperparameters())
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "PYTHONPATH": str(ROOT / "container")}
    command = ["env", "--block-signal=TERM,INT", sys.executable, "-m", "object2vec", "train"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(delay)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 143, output
    assert (base / "output" / "failure").read_text().startswith("TrainingStopped: training stopped by SIGTERM")
    assert "Traceback" not in output
    assert not (base / "output" / "success").exists()


def test_missing_opt_ml_is_explained(tmp_path: Path) -> None:
    result = run_train(tmp_path / "nowhere")
    assert result.returncode == 1
    assert "set SAGEMAKER_BASE_DIR" in result.stdout
