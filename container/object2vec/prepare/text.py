"""Tokenizer, vocabulary (build, read, write, encode) and sequence-length statistics.

The vocabulary file is what Object2Vec's auxiliary channel expects (`encX_vocab_file`): a JSON
object mapping each token to the integer id used in "in0"/"in1". The id range [0, max id] is the
encoder's vocab size.

Reserved-symbol schemes (--reserved), placed at the lowest ids before the words:
  unk        <unk>=0, words from 1 (the default; out-of-vocabulary tokens become <unk>)
  pad-unk    <pad>=0, <unk>=1, words from 2
  pad-unk-s  <pad>=0, <unk>=1, <s>=2, </s>=3, words from 4 (the Wikipedia notebook's scheme)
  none       words from 0 and out-of-vocabulary tokens are dropped (the SNLI notebook's scheme)
The trainer masks padding by length, so no id has to be reserved for padding; <pad> only keeps
vocabularies shared with other tools consistent. Words are ordered by descending count, ties by
token, so the same input always gives the same ids.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from object2vec.config import MAX_SEQ_LEN_LIMIT  # the largest encX_max_seq_len the trainer accepts
from object2vec.errors import ClientError
from object2vec.prepare.io import write_json
from object2vec.record_format import TooLarge, read_vocab_file

UNK = "<unk>"
RESERVED_SCHEMES: dict[str, tuple[str, ...]] = {
    "unk": (UNK,),
    "pad-unk": ("<pad>", UNK),
    "pad-unk-s": ("<pad>", UNK, "<s>", "</s>"),
    "none": (),
}
# Abbreviations written with a period. TITLES stand before a name and never end a sentence;
# the others may ("... of Acme Inc. The company ..."). Both keep their period as part of the token,
# as GloVe's tokenizer (Stanford's, Penn Treebank style) does: "mr.", "inc." and "jan." are GloVe
# words. Abbreviations that are also common words ("no.", "mar.") are not listed: the sentence
# splitter handles them before a number (see NUMBERED_ABBREVIATIONS in prepare/sentences.py).
TITLES = frozenset("adm capt col dr gen gov hon lt maj messrs mr mrs ms mt prof rep rev sen sgt supt".split())
ABBREVIATIONS = TITLES | frozenset(
    "inc corp co cos ltd llc plc bros assn dept univ ave blvd st jr sr jan feb apr jun jul aug sep sept oct "
    "nov dec vs etc approx calif".split()
)
_ABBREVIATION = "|".join(sorted(ABBREVIATIONS, key=len, reverse=True))
# In order: acronyms with periods ("u.s.", "e.g.", "a.m."), listed abbreviations with their period,
# words (letters, digits, underscore; inner apostrophes kept: "o'neill"), single punctuation marks.
TOKEN_PATTERN = re.compile(
    rf"(?:[^\W\d_]\.){{2,}}|\b(?:{_ABBREVIATION})\.(?!\w)|\w+(?:['\u2019]\w+)*|[^\w\s]", re.IGNORECASE
)
# English clitics, split off as GloVe's tokenizer does: "don't" -> "do" "n't", "can't" -> "ca" "n't",
# "it's" -> "it" "'s", "o'neill's" -> "o'neill" "'s". GloVe has vectors for "n't", "'s", "'re", ...
# but none for "don't" or "it's" (6.4% of the STS Benchmark vocabulary was such tokens).
CLITIC = re.compile(r"(\w+(?:'\w+)*?)(n't|'(?:s|re|m|ll|ve|d))", re.IGNORECASE)


@dataclass(frozen=True)
class Tokenizer:
    """A regex tokenizer in the style of GloVe's: words, clitics ("n't", "'s"), abbreviations with
    their period ("u.s.", "mr."), single punctuation marks; optionally lowercased. Curly
    apostrophes become straight ones."""

    lowercase: bool = True

    def __call__(self, text: str) -> list[str]:
        if self.lowercase:
            text = text.lower()
        tokens = []
        for token in TOKEN_PATTERN.findall(text.replace("\u2019", "'")):
            clitic = CLITIC.fullmatch(token) if "'" in token else None
            if clitic:
                tokens += clitic.groups()
            else:
                tokens.append(token)
        return tokens


@dataclass(frozen=True)
class Vocab:
    """token -> id; unk_id is where unknown tokens go (None: they are dropped)."""

    ids: dict[str, int]
    unk_id: int | None

    @property
    def size(self) -> int:
        """The encoder vocab size: one more than the largest id."""
        return max(self.ids.values(), default=-1) + 1

    def encode(self, tokens: Iterable[str]) -> list[int]:
        ids = self.ids
        if self.unk_id is None:
            return [ids[token] for token in tokens if token in ids]
        unk = self.unk_id
        return [ids.get(token, unk) for token in tokens]

    @classmethod
    def build(cls, counts: Counter[str], min_count: int = 1, max_size: int = 0, reserved: str = "unk") -> Vocab:
        """Reserved symbols first, then words with count >= min_count, most frequent first.

        max_size (0: no cap) bounds the whole vocabulary, reserved symbols included, so it is the
        largest encX_vocab_size the file can need.
        """
        symbols = RESERVED_SCHEMES[reserved]
        if max_size and max_size <= len(symbols):
            raise ClientError(f"--max-vocab {max_size} leaves no room for words after the reserved symbols {symbols}")
        words = sorted(
            ((token, n) for token, n in counts.items() if n >= min_count and token not in symbols),
            key=lambda item: (-item[1], item[0]),
        )
        if max_size:
            words = words[: max_size - len(symbols)]
        ids = {symbol: i for i, symbol in enumerate(symbols)}
        ids.update((token, len(symbols) + i) for i, (token, _) in enumerate(words))
        return cls(ids=ids, unk_id=ids.get(UNK))

    @classmethod
    def read(cls, path: Path, option: str = "--vocab") -> Vocab:
        """A vocab.json (token -> id); <unk>, if present, receives unknown tokens."""
        try:
            data = read_vocab_file(path)
        except FileNotFoundError as err:
            raise ClientError(f"{option} {path}: no such file") from err
        except TooLarge as err:
            raise ClientError(f"{option} {path}: {err}; not a vocab file") from err
        except (OSError, EOFError, orjson.JSONDecodeError) as err:
            raise ClientError(f"{option} {path}: not a readable JSON file ({err})") from err
        if not isinstance(data, dict) or not data:
            raise ClientError(
                f'{option} {path}: must be a non-empty JSON object mapping token -> id, like {{"the": 1}}'
            )
        seen: dict[int, str] = {}
        for token, token_id in data.items():
            if type(token_id) is not int or token_id < 0:
                raise ClientError(f"{option} {path}: the id of {token!r} is {token_id!r}; ids must be integers >= 0")
            if token_id in seen:
                raise ClientError(f"{option} {path}: {token!r} and {seen[token_id]!r} share id {token_id}")
            seen[token_id] = token
        return cls(ids=data, unk_id=data.get(UNK))

    def write(self, path: Path) -> None:
        write_json(path, dict(sorted(self.ids.items(), key=lambda item: item[1])))


@dataclass
class LengthStats:
    """A histogram of sequence lengths, for a suggested encX_max_seq_len (constant memory)."""

    counts: Counter[int] = field(default_factory=Counter)

    def add(self, length: int) -> None:
        self.counts[length] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def longest(self) -> int:
        return max(self.counts, default=0)

    def percentile(self, q: float) -> int:
        """The smallest length L such that at least q% of the sequences are no longer than L."""
        total = self.total
        if not total:
            return 0
        needed = math.ceil(total * q / 100)
        running = 0
        for length in sorted(self.counts):
            running += self.counts[length]
            if running >= needed:
                return length
        return self.longest

    def suggest(self, q: float, cap: int = 0) -> int:
        """A max_seq_len covering q% of the sequences, within the trainer's range [1, MAX_SEQ_LEN_LIMIT]."""
        length = self.percentile(q)
        if cap:
            length = min(length, cap)
        return max(1, min(length, MAX_SEQ_LEN_LIMIT))


def truncate(ids: list[int], max_len: int) -> list[int]:
    """Keep the first max_len ids (0: no limit), the end the trainer keeps too."""
    return ids[:max_len] if max_len else ids
