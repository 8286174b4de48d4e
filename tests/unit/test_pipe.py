"""data/pipe.py: FIFOs <channel>_<n>, read in turn, plain or gzip, waited for with a bound."""

from __future__ import annotations

import gzip
import json
import os
import threading
import time
from pathlib import Path

import pytest

from object2vec.config import Hyperparameters
from object2vec.data.pipe import PipeEpochs, pipe_path, read_pipe
from object2vec.environment import Channel
from object2vec.errors import ClientError, TrainingStopped
from object2vec.training.signals import StopSignal


def hyperparameters() -> Hyperparameters:
    return Hyperparameters.from_dict({"enc0_vocab_size": 10, "enc0_max_seq_len": 4})


def channel(tmp_path: Path, name: str = "train") -> Channel:
    return Channel(name, tmp_path / name, "application/jsonlines", "Pipe", "FullyReplicated")


def payload(count: int, label: int = 1) -> bytes:
    return "".join(json.dumps({"in0": [i % 10], "in1": [1, 2], "label": label}) + "\n" for i in range(count)).encode()


def feed(path: Path, data: bytes, delay: float = 0.0) -> threading.Thread:
    """mkfifo `path` after `delay` and write `data` into it once a reader opens it."""

    def run() -> None:
        time.sleep(delay)
        os.mkfifo(path)
        with open(path, "wb") as pipe:  # blocks until the reader opens the FIFO
            pipe.write(data)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_fifo_names_sit_next_to_the_channel_folder(tmp_path: Path) -> None:
    assert pipe_path(channel(tmp_path), 3) == tmp_path / "train_3"


def test_reads_plain_and_gzip_passes_in_turn(tmp_path: Path) -> None:
    source = PipeEpochs(channel(tmp_path), hyperparameters())
    writers = [feed(tmp_path / "train_0", payload(5)), feed(tmp_path / "train_1", gzip.compress(payload(7, 0)), 0.3)]
    first = source.next_epoch()
    assert len(first) == 5 and len(source) == 5 and first.labels.tolist() == [1] * 5
    second = source.next_epoch()  # waits (polls) for train_1, which appears later
    assert len(second) == 7 and second.labels.tolist() == [0] * 7
    for writer in writers:
        writer.join(timeout=10)
    assert source.passes == 2


def test_bad_record_names_the_fifo_and_line(tmp_path: Path) -> None:
    feed(tmp_path / "validation_0", payload(2) + b'{"in0": [1], "in1": [99], "label": 1}\n')
    with pytest.raises(ClientError, match=r"channel validation, file validation_0, line 3"):
        read_pipe(channel(tmp_path, "validation"), hyperparameters())


def test_waits_a_bounded_time_for_the_fifo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBJECT2VEC_PIPE_TIMEOUT", "0.2")
    with pytest.raises(ClientError, match=r"channel train is in Pipe mode, but .*train_0 did not appear within 0 s"):
        read_pipe(channel(tmp_path), hyperparameters())


def test_a_stop_request_ends_the_wait(tmp_path: Path) -> None:
    stop = StopSignal()
    stop.requested = "SIGTERM"
    with pytest.raises(TrainingStopped, match="while waiting for"):
        read_pipe(channel(tmp_path), hyperparameters(), stop=stop)


def test_wrong_content_type_is_refused_before_waiting(tmp_path: Path) -> None:
    csv = Channel("train", tmp_path / "train", "text/csv", "Pipe", "FullyReplicated")
    with pytest.raises(ClientError, match="ContentType 'text/csv'"):
        read_pipe(csv, hyperparameters())
