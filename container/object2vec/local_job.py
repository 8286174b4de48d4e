"""A training job's /opt/ml, laid out in a local folder: what the tests, the benchmarks and a user
trying the programs without SageMaker hand to `train` through SAGEMAKER_BASE_DIR.

`lay_out_job` writes it as SageMaker does (hyperparameters as strings, resourceconfig.json,
inputdataconfig.json, one folder per channel); `copy_job` copies one that exists (the bundled
sample, local_test/test_dir) with some hyperparameters changed. The paths are environment.py's,
the ones `train` reads.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from object2vec.environment import (
    AUXILIARY,
    DATA_DIR,
    FAILURE_FILE,
    HYPERPARAMETERS_FILE,
    INPUT_DATA_CONFIG_FILE,
    RESOURCE_CONFIG_FILE,
)
from object2vec.record_format import JSONLINES

# What a channel holds: files to link (or copy) in, JSON Lines bytes written as <channel>.jsonl,
# or None: the channel is declared and its folder made, but nothing is put there (Pipe mode).
ChannelData = Sequence[Path] | bytes | None


def lay_out_job(
    base: Path,
    hyperparameters: Mapping[str, Any],
    channels: Mapping[str, ChannelData],
    *,
    hosts: Sequence[str] = ("algo-1",),
    current_host: str | None = None,
    modes: Mapping[str, str] | None = None,
    distribution: Mapping[str, str] | None = None,
    checkpoints: bool = False,
) -> Path:
    """Write an /opt/ml under `base` (created; it must not hold one already) and return `base`.

    Hyperparameters that are not strings are JSON-encoded, as the SageMaker SDK sends them.
    A channel's paths may be files or folders (laid out under their own names). Channels are File
    mode and FullyReplicated unless `modes`/`distribution` say otherwise; every
    channel but the auxiliary one declares the JSON Lines content type.
    """
    (base / HYPERPARAMETERS_FILE).parent.mkdir(parents=True)
    (base / "model").mkdir()
    (base / FAILURE_FILE).parent.mkdir()
    if checkpoints:
        (base / "checkpoints").mkdir()
    strings = {key: value if isinstance(value, str) else json.dumps(value) for key, value in hyperparameters.items()}
    (base / HYPERPARAMETERS_FILE).write_text(json.dumps(strings, indent=2))
    resources = {"current_host": current_host or hosts[0], "hosts": list(hosts)}
    (base / RESOURCE_CONFIG_FILE).write_text(json.dumps(resources))
    data_config: dict[str, dict[str, str]] = {}
    for name, data in channels.items():
        data_config[name] = {
            "TrainingInputMode": (modes or {}).get(name, "File"),
            "S3DistributionType": (distribution or {}).get(name, "FullyReplicated"),
            "RecordWrapperType": "None",
        }
        if name != AUXILIARY:
            data_config[name]["ContentType"] = JSONLINES
        folder = base / DATA_DIR / name
        folder.mkdir(parents=True)
        if isinstance(data, bytes):
            (folder / f"{name}.jsonl").write_bytes(data)
        elif data is not None:
            for source in data:
                _link_or_copy(Path(source), folder / Path(source).name)
    (base / INPUT_DATA_CONFIG_FILE).write_text(json.dumps(data_config, indent=2))
    return base


def copy_job(source: Path, base: Path, **hyperparameters: str) -> Path:
    """A copy of the job in `source` (its input only: model/ and output/ start empty) under `base`,
    with `hyperparameters` changed; returns `base`."""
    shutil.copytree(source / "input", base / "input")
    (base / "model").mkdir()
    (base / FAILURE_FILE).parent.mkdir()
    if hyperparameters:
        hp_file = base / HYPERPARAMETERS_FILE
        hp_file.write_text(json.dumps({**json.loads(hp_file.read_text()), **hyperparameters}, indent=2))
    return base


def _link_or_copy(source: Path | str, target: Path | str) -> None:
    """A hard link where the file system allows it (large data sets, no copy), else a copy; a
    folder (a model or checkpoint in the auxiliary channel) is laid out file by file."""
    if Path(source).is_dir():
        shutil.copytree(source, target, copy_function=_link_or_copy)
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
