"""`python -m object2vec index`: builds, replaces the index atomically, --set, and its exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from object2vec.cli import main
from object2vec.retrieval.index_file import INDEX_FILE, read_index_file

pytestmark = pytest.mark.usefixtures("one_thread")


def catalogue_file(path: Path, records: list[dict], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records) + tail)
    return path


def test_index_builds_and_replaces_the_index_atomically(retrieval_model_dir, retrieval_catalogue, tmp_path, capsys):
    model_dir = retrieval_model_dir()
    first = catalogue_file(tmp_path / "a.jsonl", retrieval_catalogue(30))
    assert main(["index", "--model-dir", str(model_dir), str(first)]) == 0
    old = read_index_file(model_dir / INDEX_FILE)
    old_inode = os.stat(model_dir / INDEX_FILE).st_ino
    second = catalogue_file(tmp_path / "b.jsonl", retrieval_catalogue(45, start=100))
    assert main(["index", "--model-dir", str(model_dir), str(second), "--set", "retrieval_top_n=9"]) == 0
    new = read_index_file(model_dir / INDEX_FILE)
    assert os.stat(model_dir / INDEX_FILE).st_ino != old_inode  # renamed into place, not rewritten
    assert (old.header["count"], new.header["count"]) == (30, 45)  # the old mapping still reads the old file
    assert new.header["defaults"]["top_n"] == 9 and bytes(new.sections["ids"][:6]) == b'"c100"'
    assert sorted(path.name for path in model_dir.iterdir()) == ["model.safetensors", "model_config.json", INDEX_FILE]
    assert "Indexed 45 candidates from 1 file(s)" in capsys.readouterr().out


def test_a_failing_reindex_leaves_the_old_index_untouched(retrieval_model_dir, retrieval_catalogue, tmp_path, capsys):
    model_dir = retrieval_model_dir()
    first = catalogue_file(tmp_path / "a.jsonl", retrieval_catalogue(30))
    assert main(["index", "--model-dir", str(model_dir), str(first)]) == 0
    before = (model_dir / INDEX_FILE).read_bytes()
    bad = catalogue_file(tmp_path / "bad.jsonl", retrieval_catalogue(200), tail='{"id": "x", "in1": [5000]}\n')
    assert main(["index", "--model-dir", str(model_dir), str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ClientError: Inconsistent vocab for in1 found.") and "bad.jsonl, line 201" in err
    assert (model_dir / INDEX_FILE).read_bytes() == before
    assert sorted(path.name for path in model_dir.iterdir()) == ["model.safetensors", "model_config.json", INDEX_FILE]


@pytest.mark.parametrize(
    ("arguments", "code", "needle"),
    [
        (["--set", "enc_dim=4"], 1, "cannot change without retraining"),
        (["--set", "retrieval_top_n"], 1, "give KEY=VALUE"),
        (
            ["--set", "retrieval_index=hnsw"],
            1,
            "retrieval_index=hnsw is not valid: allowed values are auto, exact, ivf",
        ),
        (["--set", "retrieval_ivf_nlist=4", "--set", "retrieval_ivf_nprobe=5"], 1, "larger than retrieval_ivf_nlist"),
    ],
)
def test_bad_settings(retrieval_model_dir, retrieval_catalogue, tmp_path, capsys, arguments, code, needle) -> None:
    model_dir = retrieval_model_dir()
    path = catalogue_file(tmp_path / "a.jsonl", retrieval_catalogue(5))
    assert main(["index", "--model-dir", str(model_dir), str(path), *arguments]) == code
    assert needle in capsys.readouterr().err
    assert not (model_dir / INDEX_FILE).exists()


def test_missing_inputs_and_usage(tmp_path: Path, capsys) -> None:
    assert main(["index", "--model-dir", str(tmp_path), str(tmp_path / "none.jsonl")]) == 1
    assert "none.jsonl: no such file or folder" in capsys.readouterr().err
    (tmp_path / "c.jsonl").write_text('{"id": 1, "in1": [1]}\n')
    assert main(["index", "--model-dir", str(tmp_path / "no-model"), str(tmp_path / "c.jsonl")]) == 1
    assert "model_config.json is missing" in capsys.readouterr().err
    assert main(["index", "--model-dir", str(tmp_path)]) == 2  # no candidates: argparse's usage error
    assert main(["index", "--help"]) == 0
    assert "retrieval_" in capsys.readouterr().out
