"""Shared option types and the input/vocabulary selection of the text subcommands."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from object2vec.errors import ClientError
from object2vec.prepare.options import (
    fraction,
    non_negative_int,
    percentile,
    positive_float,
    positive_int,
    require_inputs,
    select_vocab,
)
from object2vec.prepare.text import Tokenizer


@pytest.mark.parametrize(
    ("parse", "good", "bad"),
    [
        (positive_int, [("1", 1), ("20", 20)], ["0", "-1", "x", "1.5"]),
        (positive_float, [("5", 5.0), ("0.5", 0.5)], ["0", "-1", "x", "inf", "nan"]),
        (non_negative_int, [("0", 0), ("7", 7)], ["-1", "x"]),
        (fraction, [("0", 0.0), ("0.2", 0.2)], ["1", "-0.1", "x"]),
        (percentile, [("95", 95.0), ("100", 100.0)], ["0", "101", "x"]),
    ],
)
def test_option_types(parse: Callable[[str], object], good: list[tuple[str, object]], bad: list[str]) -> None:
    for text, value in good:
        assert parse(text) == value
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


def namespace(**values: object) -> argparse.Namespace:
    defaults = dict(train=None, validation=None, test=None, vocab=None, min_count=1, max_vocab=0, reserved="unk")
    return argparse.Namespace(**{**defaults, **values})


def test_require_inputs_in_split_order(tmp_path: Path) -> None:
    args = namespace(test=tmp_path / "t", train=tmp_path / "a")
    assert require_inputs(args) == [("train", tmp_path / "a"), ("test", tmp_path / "t")]
    with pytest.raises(ClientError, match="at least one"):
        require_inputs(namespace())
    with pytest.raises(ClientError, match="--vocab"):
        require_inputs(namespace(test=tmp_path / "t"))


def test_select_vocab_builds_or_reads(tmp_path: Path) -> None:
    vocab, built = select_vocab(namespace(train=tmp_path), Tokenizer(), lambda: ["b a b", "c"])
    assert built and vocab.ids == {"<unk>": 0, "b": 1, "a": 2, "c": 3}
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({"x": 0}))
    vocab, built = select_vocab(namespace(vocab=path), Tokenizer(), lambda: pytest.fail("must not read"))
    assert not built and vocab.ids == {"x": 0} and vocab.unk_id is None
