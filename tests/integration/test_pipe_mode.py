"""Pipe mode: the train and validation channels arrive through FIFOs made with mkfifo, as SageMaker
makes them: /opt/ml/input/data/<channel>_<n>, the next one only once the last was read.

A Pipe-mode run sees the same records in the same order as a File-mode run, so it trains the same
model (tolerance 1e-6 on the weights).
"""

from __future__ import annotations

import errno
import gzip
import os
import threading
import time
from pathlib import Path

import torch

from object2vec.model.io import load_model

from .jobs import TIMEOUT, jsonl, log_of, make_job, records, run_train, start_train

HYPERPARAMETERS = {"epochs": "3"}
TOLERANCE = 1e-6


def channels() -> dict[str, list]:
    return {"train": records(300, 20), "validation": records(100, 21), "test": records(60, 22)}


class FifoWriter(threading.Thread):
    """Makes <channel>_0, _1, ... one at a time and writes `data` into each once a reader opens it."""

    def __init__(self, folder: Path, channel: str, data: list[bytes], done: threading.Event) -> None:
        super().__init__(daemon=True)
        self.folder, self.channel, self.data, self.done = folder, channel, data, done
        self.served: list[str] = []

    def run(self) -> None:
        for index, payload in enumerate(self.data):
            path = self.folder / f"{self.channel}_{index}"
            os.mkfifo(path)
            fd = self.open_when_read(path)
            if fd is None:
                return
            with os.fdopen(fd, "wb") as pipe:
                pipe.write(payload)
            self.served.append(path.name)

    def open_when_read(self, path: Path) -> int | None:
        # Non-blocking open fails with ENXIO until a reader has the FIFO open: poll, so the
        # thread ends with the job even when the job never reads this pass.
        while not self.done.is_set():
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as err:
                if err.errno != errno.ENXIO:
                    raise
                time.sleep(0.05)
                continue
            os.set_blocking(fd, True)
            return fd
        return None


def test_pipe_mode_trains_like_file_mode(tmp_path: Path) -> None:
    data = channels()
    file_base = make_job(tmp_path / "file" / "opt" / "ml", data, HYPERPARAMETERS)
    code, log = run_train(file_base)
    assert code == 0, log

    pipe_base = make_job(
        tmp_path / "pipe" / "opt" / "ml",
        {"train": None, "validation": None, "test": data["test"]},
        HYPERPARAMETERS,
        modes={"train": "Pipe", "validation": "Pipe", "test": "FastFile"},
    )
    folder = pipe_base / "input" / "data"
    train_bytes = jsonl(data["train"])
    done = threading.Event()
    writers = [
        # Epoch 1 arrives gzip-compressed (recognised by content); one pass too many is offered.
        FifoWriter(folder, "train", [train_bytes, gzip.compress(train_bytes), train_bytes, train_bytes], done),
        FifoWriter(folder, "validation", [jsonl(data["validation"])], done),
    ]
    for writer in writers:
        writer.start()
    process = start_train(pipe_base)
    try:
        code = process.wait(timeout=TIMEOUT)
    finally:
        done.set()
        if process.poll() is None:
            process.kill()
    log = log_of(pipe_base)
    assert code == 0, log
    assert writers[0].served == ["train_0", "train_1", "train_2"]
    assert writers[1].served == ["validation_0"]
    assert "Channel train (Pipe): 300 records from train_2" in log
    assert not list((folder / "train").iterdir())  # nothing on disk

    expected = load_model(file_base / "model").model.state_dict()
    for name, tensor in load_model(pipe_base / "model").model.state_dict().items():
        assert torch.allclose(tensor, expected[name], atol=TOLERANCE), name


def test_missing_fifo_is_a_client_error(tmp_path: Path) -> None:
    base = make_job(tmp_path / "opt" / "ml", {"train": None}, HYPERPARAMETERS, modes={"train": "Pipe"})
    code, log = run_train(base, OBJECT2VEC_PIPE_TIMEOUT="1")
    assert code == 1, log
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith("ClientError: channel train is in Pipe mode, but ")
    assert "train_0 did not appear within 1 s" in failure
