"""TrainingEnvironment.from_sagemaker on folders laid out like /opt/ml.

sagemaker-training's environment module fixes its paths (base_dir, input_config_dir, the three
config files, the channel root...) as module globals when it is first imported, from
SAGEMAKER_BASE_DIR. from_sagemaker sets that variable before importing it, which is right for a
real job (one base dir per process) but means that in one pytest process only the first test's
base dir would ever be read. So each in-process test re-points those module globals at its own
temp folder (`sm_base`); one test runs from_sagemaker in a fresh subprocess to prove the
unpatched path works and that nothing is imported (so no folder is created) before the base
dir has been checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from object2vec import environment
from object2vec.environment import Channel, TrainingEnvironment, available_cpus
from object2vec.errors import ClientError

ROOT = Path(__file__).resolve().parents[2]
JSONLINES = {
    "ContentType": "application/jsonlines",
    "TrainingInputMode": "File",
    "S3DistributionType": "FullyReplicated",
}


@pytest.fixture
def restore_environ() -> Iterator[None]:
    """The toolkit's Environment() writes CURRENT_HOST, TRAINING_JOB_NAME... into os.environ."""
    saved = dict(os.environ)
    os.environ.pop("CURRENT_HOST", None)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def sm_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_environ: None) -> Path:
    """An empty base dir, set as SAGEMAKER_BASE_DIR, with the toolkit's module paths moved onto it."""
    base = tmp_path / "opt_ml"
    (base / "input" / "config").mkdir(parents=True)
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(base))
    # First import (if this process has not imported it yet) happens with our base dir set, so
    # the toolkit creates nothing outside tmp_path.
    from sagemaker_training import environment as sm_environment

    old = sm_environment.base_dir
    for name, value in list(vars(sm_environment).items()):
        if isinstance(value, str) and (value == old or value.startswith(old + os.sep)):
            monkeypatch.setattr(sm_environment, name, str(base) + value[len(old) :])
    return base


def write_config(base: Path, name: str, content: Any) -> None:
    text = content if isinstance(content, str) else json.dumps(content)
    (base / "input" / "config" / f"{name}.json").write_text(text)


def make_channels(base: Path, *names: str) -> None:
    for name in names:
        (base / "input" / "data" / name).mkdir(parents=True)


def test_full_layout(sm_base: Path) -> None:
    write_config(sm_base, "hyperparameters", {"enc0_vocab_size": "10"})
    write_config(sm_base, "resourceconfig", {"current_host": "algo-2", "hosts": ["algo-1", "algo-2"]})
    write_config(
        sm_base,
        "inputdataconfig",
        {
            "train": JSONLINES,
            "validation": {"TrainingInputMode": "File"},
            "test": {
                "ContentType": "text/csv",
                "TrainingInputMode": "FastFile",
                "S3DistributionType": "ShardedByS3Key",
            },
        },
    )
    env = TrainingEnvironment.from_sagemaker()
    data = sm_base / "input" / "data"
    assert env.channels == {
        "train": Channel("train", data / "train", "application/jsonlines", "File", "FullyReplicated"),
        "validation": Channel("validation", data / "validation", None, "File", "FullyReplicated"),
        "test": Channel("test", data / "test", "text/csv", "FastFile", "ShardedByS3Key"),
    }
    assert (env.current_host, env.hosts) == ("algo-2", ["algo-1", "algo-2"])
    assert env.hyperparameters == {"enc0_vocab_size": 10}
    assert env.base_dir == sm_base
    assert env.model_dir == sm_base / "model"
    assert env.checkpoint_dir == sm_base / "checkpoints"
    assert env.num_cpus == available_cpus() >= 1


@pytest.mark.parametrize(("current_host", "expected"), [(None, "algo-1"), ("algo-7", "algo-7")])
def test_without_resourceconfig_there_is_one_host(
    sm_base: Path, monkeypatch: pytest.MonkeyPatch, current_host: str | None, expected: str
) -> None:
    if current_host:
        monkeypatch.setenv("CURRENT_HOST", current_host)
    write_config(sm_base, "hyperparameters", {})
    write_config(sm_base, "inputdataconfig", {"train": JSONLINES})
    env = TrainingEnvironment.from_sagemaker()
    assert (env.current_host, env.hosts) == (expected, [expected])


def test_without_inputdataconfig_every_folder_is_a_file_mode_channel(sm_base: Path) -> None:
    write_config(sm_base, "hyperparameters", {})
    make_channels(sm_base, "validation", "train")
    (sm_base / "input" / "data" / "stray.jsonl").write_text("{}\n")  # a file, not a channel
    env = TrainingEnvironment.from_sagemaker()
    assert list(env.channels) == ["train", "validation"]
    for name, channel in env.channels.items():
        assert channel == Channel(name, sm_base / "input" / "data" / name, None, "File", "FullyReplicated")


def test_without_any_channel_config_or_folder(sm_base: Path) -> None:
    write_config(sm_base, "hyperparameters", {})
    try:
        env = TrainingEnvironment.from_sagemaker()
    except ClientError:
        return  # acceptable too: a message the user can act on
    assert env.channels == {}  # the job then reports the missing train channel


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("5", 5),
        ("0.5", 0.5),
        ("True", "True"),
        ("true", True),
        ('"abc"', "abc"),
        ("auto", "auto"),
        ("[1,2]", [1, 2]),
        ("hadamard,concat", "hadamard,concat"),
        ('"enc0"', "enc0"),
        (3, 3),
    ],
)
def test_hyperparameter_values_are_json_decoded_when_they_can_be(sm_base: Path, raw: Any, decoded: Any) -> None:
    write_config(sm_base, "hyperparameters", {"enc0_network": raw})
    write_config(sm_base, "inputdataconfig", {"train": JSONLINES})
    assert TrainingEnvironment.from_sagemaker().hyperparameters == {"enc0_network": decoded}


def test_sagemaker_framework_keys_are_not_hyperparameters(sm_base: Path) -> None:
    write_config(sm_base, "hyperparameters", {"sagemaker_job_name": '"job"', "_kvstore": '"device"'})
    write_config(sm_base, "inputdataconfig", {"train": JSONLINES})
    assert TrainingEnvironment.from_sagemaker().hyperparameters == {"_kvstore": "device"}


@pytest.mark.parametrize(("count", "ok"), [(100, True), (101, False)])
def test_at_most_100_hyperparameters(sm_base: Path, count: int, ok: bool) -> None:
    write_config(sm_base, "hyperparameters", {f"key{i}": "1" for i in range(count)})
    write_config(sm_base, "inputdataconfig", {"train": JSONLINES})
    if ok:
        assert len(TrainingEnvironment.from_sagemaker().hyperparameters) == 100
    else:
        with pytest.raises(ClientError, match="has 101 entries; SageMaker allows at most 100"):
            TrainingEnvironment.from_sagemaker()


@pytest.mark.parametrize(
    ("text", "problem"),
    [("{", "is not valid JSON"), ('{"a": 1,}', "is not valid JSON"), ("[1]", "must hold a JSON object")],
)
def test_bad_hyperparameters_file(sm_base: Path, text: str, problem: str) -> None:
    write_config(sm_base, "hyperparameters", text)
    with pytest.raises(ClientError) as info:
        TrainingEnvironment.from_sagemaker()
    assert str(info.value).startswith(f"{sm_base / 'input' / 'config' / 'hyperparameters.json'} {problem}")


@pytest.mark.parametrize(
    ("name", "content"),
    [("inputdataconfig", "{"), ("resourceconfig", "{"), ("resourceconfig", {"current_host": "algo-1"})],
)
def test_bad_config_files(sm_base: Path, name: str, content: Any) -> None:
    write_config(sm_base, "hyperparameters", {})
    write_config(sm_base, "inputdataconfig", {"train": JSONLINES})
    write_config(sm_base, name, content)
    with pytest.raises(ClientError, match=f"cannot read the configuration in {sm_base / 'input' / 'config'}"):
        TrainingEnvironment.from_sagemaker()


def test_missing_hyperparameters_names_sagemaker_base_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(ClientError) as info:
        TrainingEnvironment.from_sagemaker()
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'nowhere' / 'input' / 'config' / 'hyperparameters.json'} does not exist")
    assert "set SAGEMAKER_BASE_DIR to a folder laid out like /opt/ml" in message
    assert not (tmp_path / "nowhere").exists()  # nothing was created


@pytest.mark.parametrize(("value", "expected"), [(None, "/opt/ml"), ("", "/opt/ml"), ("/tmp/x", "/tmp/x")])
def test_base_dir_and_model_dir(monkeypatch: pytest.MonkeyPatch, value: str | None, expected: str) -> None:
    if value is None:
        monkeypatch.delenv("SAGEMAKER_BASE_DIR", raising=False)
    else:
        monkeypatch.setenv("SAGEMAKER_BASE_DIR", value)
    assert environment.base_dir() == Path(expected)
    assert environment.model_dir() == Path(expected) / "model"


def test_a_fresh_process_reads_its_base_dir_without_patching(tmp_path: Path) -> None:
    base = tmp_path / "opt_ml"
    (base / "input" / "config").mkdir(parents=True)
    (base / "input" / "data" / "train").mkdir(parents=True)
    write_config(base, "hyperparameters", {"epochs": "3"})
    script = textwrap.dedent(
        """
        import json, os, sys
        from object2vec.environment import TrainingEnvironment
        from object2vec.errors import ClientError
        os.environ["SAGEMAKER_BASE_DIR"] = sys.argv[1]
        try:
            TrainingEnvironment.from_sagemaker()
        except ClientError:
            pass
        imported_early = "sagemaker_training.environment" in sys.modules
        os.environ["SAGEMAKER_BASE_DIR"] = sys.argv[2]
        env = TrainingEnvironment.from_sagemaker()
        print(json.dumps({"imported_early": imported_early, "hp": env.hyperparameters,
                          "train": str(env.channels["train"].path), "host": env.current_host}))
        """
    )
    home = tmp_path / "home"
    home.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "missing"), str(base)],
        env={**os.environ, "PYTHONPATH": str(ROOT / "container"), "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out == {
        "imported_early": False,
        "hp": {"epochs": 3},
        "train": str(base / "input/data/train"),
        "host": "algo-1",
    }
    assert not (tmp_path / "missing").exists()
    assert list(home.iterdir()) == []  # no ~/sagemaker_local job folder
