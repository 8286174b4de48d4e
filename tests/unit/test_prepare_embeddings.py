"""`prepare trim-embeddings`: GloVe/word2vec text, gzip, .npy + token list, errors."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from object2vec.prepare.cli import prepare_main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "prepare"
GLOVE = FIXTURES / "glove.txt"


def prepare(capsys: pytest.CaptureFixture, *argv: Any) -> dict[str, Any]:
    code = prepare_main([str(a) for a in ("trim-embeddings", *argv)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def fail(capsys: pytest.CaptureFixture, *argv: Any) -> str:
    assert prepare_main([str(a) for a in ("trim-embeddings", *argv)]) == 2
    return capsys.readouterr().err


@pytest.fixture
def vocab(tmp_path: Path) -> Path:
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({"<unk>": 0, "cat": 1, "the": 2, "mat": 3, "zebra": 4}))
    return path


def test_keeps_vocab_tokens_in_id_order(tmp_path: Path, vocab: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "glove_trim.txt"
    report = prepare(capsys, "--embeddings", GLOVE, "--vocab", vocab, "--output", out)
    assert out.read_text() == "cat -0.5 0.25 1e-3 2\nthe 0.1 0.2 0.3 0.4\n"
    assert report["found"] == 2 and report["missing"] == 3 and report["dimension"] == 4
    assert report["missing_examples"] == ["mat", "zebra"]  # reserved symbols are not listed
    assert report["hyperparameters"] == {
        "enc0_pretrained_embedding_file": "glove_trim.txt",
        "enc0_vocab_file": "vocab.json",
        "enc0_token_embedding_dim": 4,
    }


def test_case_insensitive_matching(tmp_path: Path, vocab: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "trim.txt"
    report = prepare(capsys, "--embeddings", GLOVE, "--vocab", vocab, "--output", out, "--case-insensitive")
    assert report["found"] == 3
    assert out.read_text().splitlines()[-1] == "mat 1 1 1 1"


def test_word2vec_header_gzip_and_tokens_with_spaces(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    vocab = tmp_path / "vocab.json"
    vocab.write_text(json.dumps({"a b": 0, "c": 1}))
    source = tmp_path / "vectors.txt.gz"
    source.write_bytes(gzip.compress(b"2 3\na b 1 2 3\nc 4 5 6 \n"))
    out = tmp_path / "trim.txt"
    report = prepare(capsys, "--embeddings", source, "--vocab", vocab, "--output", out)
    assert report["dimension"] == 3
    assert out.read_text() == "c 4 5 6\n"  # "a b" was found but cannot be written unambiguously
    assert report["found"] == 1


def test_npy_with_text_token_list(tmp_path: Path, vocab: Path, capsys: pytest.CaptureFixture) -> None:
    np.save(tmp_path / "vectors.npy", np.asarray([[0.5, 1.0], [2.0, -0.25], [3.0, 3.0]], dtype=np.float32))
    (tmp_path / "tokens.txt").write_text("the\nzebra\nunused\n")
    out = tmp_path / "trim.txt"
    report = prepare(
        capsys,
        "--vectors-npy",
        tmp_path / "vectors.npy",
        "--vocab-list",
        tmp_path / "tokens.txt",
        "--vocab",
        vocab,
        "--output",
        out,
    )
    assert out.read_text() == "the 0.5 1\nzebra 2 -0.25\n"
    assert report["found"] == 2 and report["dimension"] == 2


def test_npy_parquet_token_list(tmp_path: Path, vocab: Path, capsys: pytest.CaptureFixture) -> None:
    np.save(tmp_path / "vectors.npy", np.ones((1, 2), dtype=np.float32))
    parquet = tmp_path / "tokens.parquet"
    argv = ["--vectors-npy", tmp_path / "vectors.npy", "--vocab-list", parquet, "--vocab", vocab]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        parquet.write_bytes(b"PAR1")
        assert "needs pyarrow" in fail(capsys, *argv, "--output", tmp_path / "t.txt")
        return
    pq.write_table(pa.table({"id": [0], "token": ["cat"]}), parquet)
    report = prepare(capsys, *argv, "--output", tmp_path / "t.txt")
    assert report["found"] == 1


def test_parquet_without_pyarrow(
    tmp_path: Path, vocab: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    np.save(tmp_path / "vectors.npy", np.ones((1, 2), dtype=np.float32))
    (tmp_path / "tokens.parquet").write_bytes(b"PAR1")
    err = fail(
        capsys,
        "--vectors-npy",
        tmp_path / "vectors.npy",
        "--vocab-list",
        tmp_path / "tokens.parquet",
        "--vocab",
        vocab,
        "--output",
        tmp_path / "t.txt",
    )
    assert "needs pyarrow" in err


@pytest.mark.parametrize(
    ("content", "output_name", "message"),
    [
        ("the 1 2 3\ncat 1 2\n", "trim.txt", "g.txt, line 2: 2 value(s) where 3 were expected"),
        ("the 1 2 x\n", "trim.txt", "g.txt, line 1: 'x' is not a finite number"),
        ("the 1 nan\n", "trim.txt", "not a finite number"),
        ("the 1 2\n", "bad-name.txt", "only letters, digits"),
    ],
)
def test_bad_input_is_a_client_error(
    tmp_path: Path, vocab: Path, capsys: pytest.CaptureFixture, content: str, output_name: str, message: str
) -> None:
    source = tmp_path / "g.txt"
    source.write_text(content)
    err = fail(capsys, "--embeddings", source, "--vocab", vocab, "--output", tmp_path / output_name)
    assert message in err


def test_source_options_are_exclusive(tmp_path: Path, vocab: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "t.txt"
    assert "either --embeddings" in fail(capsys, "--vocab", vocab, "--output", out)
    assert "--vocab-list" in fail(capsys, "--vectors-npy", tmp_path / "v.npy", "--vocab", vocab, "--output", out)


def test_npy_rows_must_match_tokens(tmp_path: Path, vocab: Path, capsys: pytest.CaptureFixture) -> None:
    np.save(tmp_path / "v.npy", np.ones((2, 3), dtype=np.float32))
    (tmp_path / "tokens.txt").write_text("the\n")
    err = fail(
        capsys,
        "--vectors-npy",
        tmp_path / "v.npy",
        "--vocab-list",
        tmp_path / "tokens.txt",
        "--vocab",
        vocab,
        "--output",
        tmp_path / "t.txt",
    )
    assert "1 tokens but" in err and "2 rows" in err
