"""File helpers shared by the model artifact, the checkpoints and prepare's outputs."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(target: Path, durable: bool = False) -> Iterator[Path]:
    """Yield a temp path next to `target`; rename it onto `target` when the block succeeds.

    Readers never see a half-written file (a crash or SIGKILL leaves the old one or a stray
    temp file). `durable` fsyncs before the rename, for checkpoints that must survive a host
    failure. The file gets the mode the umask gives any new file: mkstemp makes it private, and
    a non-root `serve` must be able to read a model that root trained.
    """
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
