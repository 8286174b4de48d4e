"""Small training jobs for the distributed, checkpoint and Pipe-mode tests: synthetic data, an
/opt/ml laid out in a temp folder, and the real `train` program run as a subprocess.

The data is tiny and the model small, so that a run takes seconds even on a busy two-core
machine; every wait has a generous timeout and nothing asserts on time.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from object2vec.local_job import lay_out_job

ROOT = Path(__file__).resolve().parents[2]
VOCAB = 40
TIMEOUT = 300  # seconds for one training run on a slow, shared machine

HYPERPARAMETERS = {
    "enc0_network": "pooled_embedding",
    "enc0_vocab_size": str(VOCAB),
    "enc0_max_seq_len": "6",
    "enc0_token_embedding_dim": "8",
    "enc_dim": "8",
    "mlp_dim": "8",
    "mlp_layers": "1",
    "mlp_activation": "relu",
    "num_classes": "2",
    "learning_rate": "0.02",
    "mini_batch_size": "32",
    "epochs": "4",
    "early_stopping_patience": "5",
    "_seed": "3",
}


def records(count: int, seed: int) -> list[dict[str, Any]]:
    """Pairs labelled 1 when they share a token: learnable, so metrics move between epochs."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        in0 = [rng.randrange(VOCAB) for _ in range(rng.randint(1, 5))]
        if rng.random() < 0.5:
            in1 = [rng.choice(in0)] + [rng.randrange(VOCAB) for _ in range(rng.randint(0, 3))]
        else:
            in1 = [rng.randrange(VOCAB) for _ in range(rng.randint(1, 4))]
        out.append({"in0": in0, "in1": in1, "label": int(bool(set(in0) & set(in1)))})
    return out


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def make_job(
    base: Path,
    channels: dict[str, list[dict[str, Any]] | None],
    hyperparameters: dict[str, str] | None = None,
    hosts: list[str] | None = None,
    current_host: str | None = None,
    modes: dict[str, str] | None = None,
    distribution: dict[str, str] | None = None,
    checkpoints: bool = False,
) -> Path:
    """An /opt/ml under `base`; a channel given None is declared but gets no folder (Pipe mode)."""
    data = {name: jsonl(rows) if rows is not None else None for name, rows in channels.items()}
    return lay_out_job(
        base,
        {**HYPERPARAMETERS, **(hyperparameters or {})},
        data,
        hosts=hosts or ["algo-1"],
        current_host=current_host,
        modes=modes,
        distribution=distribution,
        checkpoints=checkpoints,
    )


def standard_channels(seed: int = 0) -> dict[str, list[dict[str, Any]] | None]:
    return {"train": records(480, seed), "validation": records(160, seed + 1), "test": records(100, seed + 2)}


def train_env(base: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "SAGEMAKER_BASE_DIR": str(base),
        "PYTHONPATH": str(ROOT / "container"),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def start_train(base: Path, **extra: str) -> subprocess.Popen[str]:
    """`train` in the background; its log goes to <base>/train.log (no pipe to fill up)."""
    with open(base / "train.log", "w") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "object2vec", "train"],
            env=train_env(base, **extra),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )


def run_train(base: Path, **extra: str) -> tuple[int, str]:
    process = start_train(base, **extra)
    code = process.wait(timeout=TIMEOUT)
    return code, log_of(base)


def log_of(base: Path) -> str:
    return (base / "train.log").read_text()


def validation_losses(log: str) -> list[float]:
    return [float(v) for v in re.findall(r"validation cross_entropy <loss>=(\S+)", log)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
