"""Pipe mode: the train and validation channels arrive through FIFOs made with mkfifo, as SageMaker
makes them: /opt/ml/input/data/<channel>_<n>, the next one only once the last was read.

A Pipe-mode run sees the same records in the same order as a File-mode run, so it trains the same
model (tolerance 1e-6 on the weights).
"""

from __future__ import annotations

import gzip
import os
import threading
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

    def __init__(self, folder: Path, channel: str, data: list[bytes]) -> None:
        super().__init__(daemon=True)
        self.folder, self.channel, self.data = folder, channel, data
        self.served: list[str] = []
        self.pending: Path | None = None

    def run(self) -> None:
        for index, payload in enumerate(self.data):
            path = self.folder / f"{self.channel}_{index}"
            os.mkfifo(path)
            self.pending = path
            with open(path, "wb") as pipe:  # blocks until a reader opens the FIFO
                pipe.write(payload)
            self.pending = None
            self.served.append(path.name)

    def release(self) -> None:
        """Unblock a FIFO that the job never read (a pass it did not need): open it and drop it."""
        if self.is_alive() and self.pending is not None:
            fd = os.open(self.pending, os.O_RDONLY | os.O_NONBLOCK)
            self.join(timeout=10)
            os.close(fd)


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
    writers = [
        # Epoch 1 arrives gzip-compressed (recognised by content); one pass too many is offered.
        FifoWriter(folder, "train", [train_bytes, gzip.compress(train_bytes), train_bytes, train_bytes]),
        FifoWriter(folder, "validation", [jsonl(data["validation"])]),
    ]
    for writer in writers:
        writer.start()
    process = start_train(pipe_base)
    try:
        code = process.wait(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
        served = [list(writer.served) for writer in writers]
        for writer in writers:
            writer.release()
    log = log_of(pipe_base)
    assert code == 0, log
    assert served == [["train_0", "train_1", "train_2"], ["validation_0"]]
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
