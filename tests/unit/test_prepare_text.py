"""Tokenizer, vocabulary building/reading/writing and length statistics."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from object2vec.errors import ClientError
from object2vec.prepare.text import LengthStats, Tokenizer, Vocab, truncate


@pytest.mark.parametrize(
    ("lowercase", "text", "tokens"),
    [
        (True, "A man's flute, isn't it?", ["a", "man", "'s", "flute", ",", "is", "n't", "it", "?"]),
        # Clitics as GloVe splits them; curly apostrophes straightened; inner apostrophes kept.
        (
            True,
            "I can’t, they'd, O'Neill's y'all",
            ["i", "ca", "n't", ",", "they", "'d", ",", "o'neill", "'s", "y'all"],
        ),
        (False, "DON'T Won't", ["DO", "N'T", "Wo", "n't"]),
        # Acronyms and listed abbreviations keep their period (GloVe has "u.s.", "mr.", "inc.").
        (
            True,
            "The U.S. unit of Acme Inc. hired Mr. Li at 9 a.m.",
            ["the", "u.s.", "unit", "of", "acme", "inc.", "hired", "mr.", "li", "at", "9", "a.m."],
        ),
        (True, "The answer is no. inc.com", ["the", "answer", "is", "no", ".", "inc", ".", "com"]),
        (False, "Hello World!", ["Hello", "World", "!"]),
        (True, '"Quoted" 3.5 km', ['"', "quoted", '"', "3", ".", "5", "km"]),
        (True, "   ", []),
        (True, "Café über", ["café", "über"]),
    ],
)
def test_tokenizer(lowercase: bool, text: str, tokens: list[str]) -> None:
    assert Tokenizer(lowercase=lowercase)(text) == tokens


COUNTS = Counter({"the": 5, "cat": 2, "a": 2, "mat": 1})


def test_build_orders_by_count_then_token_after_unk() -> None:
    vocab = Vocab.build(COUNTS)
    assert vocab.ids == {"<unk>": 0, "the": 1, "a": 2, "cat": 3, "mat": 4}
    assert vocab.unk_id == 0 and vocab.size == 5


@pytest.mark.parametrize(
    ("reserved", "first_word_id", "unk_id"),
    [("unk", 1, 0), ("pad-unk", 2, 1), ("pad-unk-s", 4, 1), ("none", 0, None)],
)
def test_reserved_schemes(reserved: str, first_word_id: int, unk_id: int | None) -> None:
    vocab = Vocab.build(COUNTS, reserved=reserved)
    assert vocab.ids["the"] == first_word_id
    assert vocab.unk_id == unk_id


def test_min_count_and_max_size_include_reserved() -> None:
    assert set(Vocab.build(COUNTS, min_count=2).ids) == {"<unk>", "the", "a", "cat"}
    vocab = Vocab.build(COUNTS, max_size=3)
    assert vocab.ids == {"<unk>": 0, "the": 1, "a": 2} and vocab.size == 3
    with pytest.raises(ClientError, match="no room"):
        Vocab.build(COUNTS, max_size=1)


def test_encode_maps_unknown_to_unk_or_drops_it() -> None:
    assert Vocab.build(COUNTS).encode(["the", "dog", "cat"]) == [1, 0, 3]
    assert Vocab.build(COUNTS, reserved="none").encode(["the", "dog", "cat"]) == [0, 2]


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    vocab = Vocab.build(COUNTS, reserved="pad-unk")
    vocab.write(tmp_path / "vocab.json")
    assert list(json.loads((tmp_path / "vocab.json").read_text())) == ["<pad>", "<unk>", "the", "a", "cat", "mat"]
    assert Vocab.read(tmp_path / "vocab.json") == vocab


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[1, 2]", "JSON object"),
        ("{}", "JSON object"),
        ('{"a": "1"}', "integers >= 0"),
        ('{"a": -1}', "integers >= 0"),
        ('{"a": 1, "b": 1}', "share id 1"),
        ("{not json", "not a readable JSON"),
    ],
)
def test_read_rejects_bad_vocab_files(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "vocab.json"
    path.write_text(content)
    with pytest.raises(ClientError, match=problem):
        Vocab.read(path)


def test_vocab_size_is_largest_id_plus_one() -> None:
    assert Vocab(ids={"a": 0, "b": 9}, unk_id=None).size == 10


def test_length_stats_percentile_and_suggestion() -> None:
    stats = LengthStats()
    for length in [1, 2, 2, 3, 10] * 20:
        stats.add(length)
    assert stats.total == 100 and stats.longest == 10
    assert stats.percentile(50) == 2
    assert stats.percentile(80) == 3
    assert stats.percentile(100) == 10
    assert stats.suggest(100, cap=5) == 5
    assert LengthStats().suggest(95) == 1
    big = LengthStats()
    big.add(9000)
    assert big.suggest(95) == 5000  # the trainer's limit


def test_truncate_keeps_the_first_tokens() -> None:
    assert truncate([1, 2, 3], 2) == [1, 2]
    assert truncate([1, 2, 3], 0) == [1, 2, 3]
