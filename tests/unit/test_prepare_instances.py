"""`prepare tokenize` (prepare/instances.py): text -> /invocations request bodies."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from object2vec.prepare.cli import prepare_main
from object2vec.prepare.pretrained_tokenizer import PretrainedTokenizer
from object2vec.serving.codec import decode_request

pytest.importorskip("tokenizers")


def tokenize(capsys: pytest.CaptureFixture, *argv: Any) -> str:
    code = prepare_main(["tokenize", *map(str, argv)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def test_pairs_become_a_json_request_body_on_stdout(tiny_tokenizer: Path, capsys: pytest.CaptureFixture) -> None:
    out = tokenize(capsys, "--tokenizer", tiny_tokenizer, "--pair", "A man is playing.", "The dog runs.")
    ids = PretrainedTokenizer.load(tiny_tokenizer).ids
    assert json.loads(out) == {"instances": [{"in0": ids("A man is playing."), "in1": ids("The dog runs.")}]}
    assert decode_request(out.encode(), "application/json").instances[0]["in1"] == ids("The dog runs.")


def test_single_texts_go_to_the_chosen_side_as_json_lines(tiny_tokenizer: Path, capsys: pytest.CaptureFixture) -> None:
    out = tokenize(capsys, "--tokenizer", tiny_tokenizer, "--text", "a cat", "--text", "a dog", "--side", "in1",
                   "--format", "jsonlines")  # fmt: skip
    lines = [json.loads(line) for line in out.splitlines()]
    assert [set(line) for line in lines] == [{"in1"}, {"in1"}] and len(lines) == 2
    assert decode_request(out.encode(), "application/jsonlines").instances == lines


def test_an_input_file_of_pairs_with_blank_lines(
    tiny_tokenizer: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    source = tmp_path / "pairs.tsv"
    source.write_text("a man\ta woman\n\nthe dog\tthe cat\n")
    out_file = tmp_path / "body.json"
    report = json.loads(
        tokenize(capsys, "--tokenizer", tiny_tokenizer, "--input", source, "--pairs", "--output", out_file)
    )
    assert report == {"command": "tokenize", "output": str(out_file), "instances": 2, "longest": 4}
    assert len(json.loads(out_file.read_text())["instances"]) == 2


def test_stdin_input(tiny_tokenizer: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("a man\nthe dog\n"))
    assert len(json.loads(tokenize(capsys, "--tokenizer", tiny_tokenizer, "--input", "-"))["instances"]) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give texts one way"),
        (["--text", "a", "--pair", "b", "c"], "give texts one way"),
        (["--input", "{missing}"], "no such file"),
        (["--input", "{lines}", "--pairs"], "line 1: --pairs needs text0 and text1 separated by"),
    ],
)
def test_errors(
    tiny_tokenizer: Path, tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    lines = tmp_path / "lines.txt"
    lines.write_text("no tab here\n")
    argv = [a.format(missing=tmp_path / "missing.txt", lines=lines) for a in argv]
    assert prepare_main(["tokenize", "--tokenizer", str(tiny_tokenizer), *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_vocab_json_tokenizes_as_prepare_encoded_the_training_text(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    vocab = tmp_path / "vocab.json"
    vocab.write_text(json.dumps({"<unk>": 0, "a": 1, "man": 2, "do": 3, "n't": 4, ".": 5}))
    out = tokenize(capsys, "--vocab", vocab, "--text", "A man don't.", "--text", "A zebra", "--format", "jsonlines")
    assert [json.loads(line) for line in out.splitlines()] == [{"in0": [1, 2, 3, 4, 5]}, {"in0": [1, 0]}]
    cased = tokenize(capsys, "--vocab", vocab, "--no-lowercase", "--pair", "A man", "a man", "--max-seq-len", 1)
    assert json.loads(cased) == {"instances": [{"in0": [0], "in1": [1]}]}  # "A" is not in the vocabulary


def test_the_tokenizer_is_given_exactly_once(
    tiny_tokenizer: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    vocab = tmp_path / "vocab.json"
    vocab.write_text(json.dumps({"a": 0}))
    for argv in ([], ["--tokenizer", str(tiny_tokenizer), "--vocab", str(vocab)]):
        assert prepare_main(["tokenize", *argv, "--text", "a"]) == 2
        assert "--tokenizer tokenizer.json" in capsys.readouterr().err
