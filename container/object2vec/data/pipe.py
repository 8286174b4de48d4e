"""Pipe mode: a channel whose TrainingInputMode is Pipe arrives as FIFOs, one per epoch.

SageMaker streams the channel's S3 objects into /opt/ml/input/data/<channel>_<n>, n = 0, 1, ...
A reader opens <channel>_0, reads it to EOF, closes it, then waits for <channel>_1 (which may not
exist yet) and so on. Nothing is written to disk: each pass is parsed straight from the FIFO into
the compact in-memory tensors of records.py (one epoch's records at a time).

The train channel reads the next FIFO every epoch (`PipeEpochs`); validation and test channels
read <channel>_0 once and keep it. Data may be gzip-compressed (recognised by content), as in
File mode. FastFile channels are read-only mounts and are read like File mode.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

from object2vec.config import Hyperparameters
from object2vec.data.records import PairDataset, RecordReader, check_content_type
from object2vec.environment import Channel
from object2vec.errors import ClientError, TrainingStopped
from object2vec.record_format import is_gzip

if TYPE_CHECKING:
    from object2vec.training.signals import StopSignal

logger = logging.getLogger(__name__)

PIPE_TIMEOUT_ENV = "OBJECT2VEC_PIPE_TIMEOUT"
DEFAULT_PIPE_TIMEOUT = 1800.0  # seconds to wait for the next FIFO to appear
POLL_SECONDS = 0.1
READ_BUFFER = 1 << 20


def pipe_path(channel: Channel, index: int) -> Path:
    """/opt/ml/input/data/<channel>_<index> (next to the channel's File-mode folder)."""
    return channel.path.parent / f"{channel.path.name}_{index}"


def read_pipe(channel: Channel, hp: Hyperparameters, index: int = 0, stop: StopSignal | None = None) -> PairDataset:
    """Every record of pass `index` of a Pipe-mode channel (waits for its FIFO to appear)."""
    check_content_type(channel)
    path = wait_for_pipe(channel, index, stop)
    reader = RecordReader(channel.name, hp)
    started = time.monotonic()
    with open_pipe(path) as stream:
        reader.read(Path(path.name), stream)
    dataset = reader.finish()
    logger.info(
        "Channel %s (Pipe): %d records from %s in %.1f s%s",
        channel.name,
        len(dataset),
        path.name,
        time.monotonic() - started,
        f", {reader.blank_lines} blank line(s) skipped" if reader.blank_lines else "",
    )
    return dataset


def wait_for_pipe(channel: Channel, index: int, stop: StopSignal | None = None) -> Path:
    path = pipe_path(channel, index)
    timeout = float(os.environ.get(PIPE_TIMEOUT_ENV) or DEFAULT_PIPE_TIMEOUT)
    deadline = time.monotonic() + timeout
    while not path.exists():
        if stop is not None and stop.requested:
            raise TrainingStopped(f"training stopped by {stop.requested} while waiting for {path}")
        if time.monotonic() >= deadline:
            raise ClientError(
                f"channel {channel.name} is in Pipe mode, but {path} did not appear within {timeout:.0f} s: "
                "SageMaker creates one FIFO per pass; locally, create it (mkfifo) and write the records into it"
            )
        time.sleep(POLL_SECONDS)
    return path


def open_pipe(path: Path) -> IO[bytes]:
    """A binary stream of the FIFO's lines, decompressed when it is gzip (without seeking)."""
    raw = open(path, "rb", buffering=READ_BUFFER)  # noqa: SIM115 - returned to the caller, who closes it
    if is_gzip(raw.peek(2)):
        return _GzipOverStream(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[arg-type]


class _GzipOverStream(gzip.GzipFile):
    """A GzipFile that closes the stream it reads from (a FIFO cannot be reopened by path, and a
    plain GzipFile leaves a stream it was handed open)."""

    def close(self) -> None:
        source = self.fileobj
        super().close()
        if source is not None:
            source.close()


class PipeEpochs:
    """The train channel in Pipe mode: `next_epoch()` reads the next FIFO, one per epoch."""

    def __init__(self, channel: Channel, hp: Hyperparameters, stop: StopSignal | None = None) -> None:
        self.channel = channel
        self.hp = hp
        self.stop = stop
        self.passes = 0
        self.records = 0  # of the last pass read

    def next_epoch(self) -> PairDataset:
        dataset = read_pipe(self.channel, self.hp, self.passes, self.stop)
        self.passes += 1
        self.records = len(dataset)
        return dataset

    def __len__(self) -> int:
        return self.records
