from __future__ import annotations

import json
from pathlib import Path

from object2vec.local_job import copy_job, lay_out_job

SAMPLE = Path(__file__).resolve().parents[2] / "local_test" / "test_dir"


def test_a_job_is_laid_out_as_sagemaker_writes_it(tmp_path: Path) -> None:
    # `train` reading such a folder is what the integration tests do (tests/integration/jobs.py).
    source = tmp_path / "records.jsonl"
    source.write_text('{"in0": [1], "in1": [2], "label": 0}\n')
    base = lay_out_job(
        tmp_path / "opt" / "ml",
        {"enc0_vocab_size": 10, "epochs": "2", "tied_token_embedding_weight": True},
        {"train": [source], "validation": b'{"in0": [1], "in1": [2], "label": 1}\n', "auxiliary": None},
        hosts=["algo-1", "algo-2"],
        current_host="algo-2",
        modes={"validation": "Pipe"},
        checkpoints=True,
    )
    config = base / "input" / "config"
    hp = json.loads((config / "hyperparameters.json").read_text())
    assert hp == {"enc0_vocab_size": "10", "epochs": "2", "tied_token_embedding_weight": "true"}  # strings, as sent
    assert json.loads((config / "resourceconfig.json").read_text()) == {
        "current_host": "algo-2",
        "hosts": ["algo-1", "algo-2"],
    }
    channels = json.loads((config / "inputdataconfig.json").read_text())
    assert sorted(channels) == ["auxiliary", "train", "validation"]
    assert channels["validation"]["TrainingInputMode"] == "Pipe" and channels["train"]["TrainingInputMode"] == "File"
    assert channels["train"]["ContentType"] == "application/jsonlines" and "ContentType" not in channels["auxiliary"]
    assert {spec["S3DistributionType"] for spec in channels.values()} == {"FullyReplicated"}
    assert (base / "input" / "data" / "train" / "records.jsonl").read_text() == source.read_text()
    assert (base / "input" / "data" / "validation" / "validation.jsonl").exists()
    assert not any((base / "input" / "data" / "auxiliary").iterdir())
    assert all((base / name).is_dir() for name in ("model", "output", "checkpoints"))


def test_a_folder_in_a_channel_is_laid_out_under_its_name(tmp_path: Path) -> None:
    # A model dir for init_model, a transformer checkpoint: the auxiliary channel holds folders.
    model = tmp_path / "unlabelled-model"
    (model / "sub").mkdir(parents=True)
    (model / "model_config.json").write_text("{}")
    (model / "sub" / "weights").write_bytes(b"\x00" * 8)
    base = lay_out_job(tmp_path / "opt" / "ml", {}, {"auxiliary": [model]})
    laid = base / "input" / "data" / "auxiliary" / "unlabelled-model"
    assert (laid / "model_config.json").read_text() == "{}"
    assert (laid / "sub" / "weights").read_bytes() == b"\x00" * 8


def test_a_copied_job_has_the_changed_hyperparameters_and_empty_outputs(tmp_path: Path) -> None:
    base = copy_job(SAMPLE, tmp_path / "job", epochs="7")
    hp = json.loads((base / "input" / "config" / "hyperparameters.json").read_text())
    original = json.loads((SAMPLE / "input" / "config" / "hyperparameters.json").read_text())
    assert hp == {**original, "epochs": "7"}
    assert not any((base / "model").iterdir()) and not any((base / "output").iterdir())
