"""The SageMaker /opt/ml contract, as a read-only snapshot taken when asked for, never on import.

Training reads it through sagemaker-training's Environment. That module has traps this file
steps around:
- on import it fixes its base directory and, when /opt/ml is missing and SAGEMAKER_BASE_DIR is
  unset, invents a job folder under ~/sagemaker_local: so it is imported only after the base
  directory has been checked here;
- Environment() needs resourceconfig.json, which a local test_dir may lack: a one-host config is
  passed in then;
- its DNS wait for every host belongs to its script-mode runner, which is not used here.

Serving reads only SAGEMAKER_BASE_DIR/model and never imports sagemaker-training.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from object2vec.errors import ClientError

logger = logging.getLogger(__name__)

BASE_DIR_ENV = "SAGEMAKER_BASE_DIR"
DEFAULT_BASE_DIR = "/opt/ml"
DEFAULT_HOST = "algo-1"
# Where SageMaker puts things, relative to the base directory.
CONFIG_DIR = Path("input/config")
HYPERPARAMETERS_FILE = CONFIG_DIR / "hyperparameters.json"
RESOURCE_CONFIG_FILE = CONFIG_DIR / "resourceconfig.json"
INPUT_DATA_CONFIG_FILE = CONFIG_DIR / "inputdataconfig.json"
DATA_DIR = Path("input/data")
AUXILIARY = "auxiliary"  # the channel of vocabulary, embedding and transformer files
FAILURE_FILE = Path("output/failure")  # DescribeTrainingJob's FailureReason
SUCCESS_FILE = Path("output/success")
MAX_HYPERPARAMETERS = 100  # CreateTrainingJob's limit; anything larger is not from SageMaker


def base_dir() -> Path:
    return Path(os.environ.get(BASE_DIR_ENV) or DEFAULT_BASE_DIR)


def model_dir() -> Path:
    """Where training writes the model and serving reads it."""
    return base_dir() / "model"


@dataclass(frozen=True)
class Channel:
    name: str
    path: Path
    content_type: str | None  # None when the channel set no ContentType
    input_mode: str  # File | Pipe | FastFile
    distribution: str  # FullyReplicated | ShardedByS3Key


@dataclass(frozen=True)
class TrainingEnvironment:
    """What a training job is given: hyperparameters, channels, hosts and where to write."""

    base_dir: Path
    hyperparameters: dict[str, Any]
    channels: dict[str, Channel]
    current_host: str
    hosts: list[str]
    num_cpus: int
    model_dir: Path = field(init=False)
    checkpoint_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_dir", self.base_dir / "model")
        object.__setattr__(self, "checkpoint_dir", self.base_dir / "checkpoints")

    @classmethod
    def from_sagemaker(cls) -> TrainingEnvironment:
        """Read the training contract under SAGEMAKER_BASE_DIR (default /opt/ml)."""
        base = base_dir()
        config_dir = base / CONFIG_DIR
        hyperparameters_file = base / HYPERPARAMETERS_FILE
        if not hyperparameters_file.is_file():
            raise ClientError(
                f"{hyperparameters_file} does not exist: run inside a SageMaker training job, or "
                f"set {BASE_DIR_ENV} to a folder laid out like /opt/ml "
                "(input/config/hyperparameters.json, input/data/train/...)"
            )
        os.environ[BASE_DIR_ENV] = str(base)  # fixes sagemaker-training's base before import
        logging.getLogger("sagemaker-training-toolkit").setLevel(logging.WARNING)
        from sagemaker_training import environment as sm_environment

        # The toolkit reads and decodes each file; only files a local test_dir may lack are
        # supplied here (SageMaker always writes both).
        resource_file = base / RESOURCE_CONFIG_FILE
        data_config_file = base / INPUT_DATA_CONFIG_FILE
        _check_hyperparameters_file(hyperparameters_file)
        channels_found = _channels_from_folders(base / DATA_DIR)
        if not data_config_file.is_file() and not channels_found:
            raise ClientError(
                f"{data_config_file} does not exist and {base / DATA_DIR} has no channel folders: "
                "the train channel is required (input/data/train/...)"
            )
        try:
            env = sm_environment.Environment(
                resource_config=None if resource_file.is_file() else _one_host_config(),
                input_data_config=None if data_config_file.is_file() else channels_found,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ClientError(f"cannot read the configuration in {config_dir}: {err}") from err
        channels = {
            name: Channel(
                name=name,
                path=Path(env.channel_input_dirs[name]),
                content_type=spec.get("ContentType"),
                input_mode=spec.get("TrainingInputMode", "File"),
                distribution=spec.get("S3DistributionType", "FullyReplicated"),
            )
            for name, spec in env.input_data_config.items()
        }
        return cls(
            base_dir=base,
            hyperparameters=dict(env.hyperparameters),
            channels=channels,
            current_host=env.current_host,
            hosts=list(env.hosts),
            num_cpus=available_cpus(),
        )


def available_cpus() -> int:
    """Cores this process may run on (a container's cpuset, not the host's core count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _one_host_config() -> dict[str, Any]:
    host = os.environ.get("CURRENT_HOST") or DEFAULT_HOST
    return {"current_host": host, "hosts": [host]}


def _channels_from_folders(data_dir: Path) -> dict[str, Any]:
    """Without inputdataconfig.json every folder under input/data is a File-mode channel."""
    if not data_dir.is_dir():
        return {}
    return {path.name: {"TrainingInputMode": "File"} for path in sorted(data_dir.iterdir()) if path.is_dir()}


def _check_hyperparameters_file(path: Path) -> None:
    try:
        raw = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ClientError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(raw, dict):
        raise ClientError(f"{path} must hold a JSON object of hyperparameter names to values")
    if len(raw) > MAX_HYPERPARAMETERS:
        raise ClientError(f"{path} has {len(raw)} entries; SageMaker allows at most {MAX_HYPERPARAMETERS}")
