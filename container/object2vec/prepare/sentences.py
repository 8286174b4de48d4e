"""`prepare sentences`: unlabeled documents -> adjacent-sentence positive pairs.

Each document is split into sentences (`split_sentences`: rules with an abbreviation list, below);
consecutive sentences give {"in0": sentence i, "in1": sentence i+1, "label": 1}. Training on
positives only needs negatives from somewhere: the report suggests in-batch negatives (each pair
ranked against the other pairs of its mini-batch) on one siamese encoder scored by its cosine,
which transferred best in our benchmarks (benchmarks/unlabelled.py); negative_sampling_rate > 0
(the Wikipedia notebook used 3) is the original recipe and works too. Validation and
test files can carry their own negatives (--eval-negatives k: sentence i against k sentences drawn
from other documents, label 0, as the notebook's dev/test files), so that their accuracy means
something.
"""

from __future__ import annotations

import argparse
import logging
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from object2vec.errors import ClientError
from object2vec.prepare.candidates import add_candidates_option, candidates_path, write_candidates
from object2vec.prepare.io import JsonlWriter, check_outputs, pair, read_lines
from object2vec.prepare.options import (
    add_output_options,
    add_seed,
    add_split_inputs,
    add_text_options,
    make_tokenizer,
    non_negative_int,
    positive_int,
    require_inputs,
    select_vocab,
    transformer_hyperparameters,
    vocab_file_written,
)
from object2vec.prepare.pretrained_tokenizer import TextTokenizer
from object2vec.prepare.text import ABBREVIATIONS, TITLES, LengthStats, Vocab, truncate

logger = logging.getLogger(__name__)

# A possible sentence end: '.', '!' or '?' (or a run of them), optional closing quotes or brackets,
# then whitespace.
BOUNDARY = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*\s+")
OPENING = "\"'\u201c\u2018([{"
ACRONYM = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")  # "U.S", "e.g", "a.m" (the final period is the candidate)
# Abbreviations that are also words: an abbreviation only before a number ("No. 5", "Mar. 3").
NUMBERED_ABBREVIATIONS = frozenset("no nos vol fig mar art sec pp ch".split())
# Words that often begin a sentence: after an abbreviation ("... in the U.S. The company ..."), the
# sentence ends only when one of these follows; otherwise the abbreviation is inside the sentence
# ("The U.S. Treasury", "Acme Inc. agreed"). A fixed list of function words, in the spirit of Punkt's
# learnt "frequent sentence starters".
SENTENCE_STARTERS = frozenset(
    "a after also although an and as at because before but by during for from he her his however i if in "
    "it its meanwhile on one our she since so some that the their then there these they this those though "
    "under we when which while who with yet you".split()
)
MAX_DOCUMENT_CHARS = 8 << 20  # a paragraph-mode document larger than this is almost surely a format mistake
# What the report suggests for training on the positive pairs (see the module docstring).
IN_BATCH_RECIPE = {
    "in_batch_negatives": True,
    "negative_sampling_rate": 0,
    "comparator_list": "cosine",
    "mlp_layers": 0,
}


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`: split after '.', '!' or '?' followed by whitespace, except after
    abbreviations. A period after a title ("Mr.", "Dr.") never ends a sentence; after another
    abbreviation ("Inc.", "Jan."), an acronym ("U.S.", "a.m.") or a single letter ("John F. Kennedy")
    it does only before a common sentence starter ("The", "It", ...; capitalised, unless the whole
    text is lowercase), never before a number."""
    sentences, start = [], 0
    cased = not text.islower()
    for boundary in BOUNDARY.finditer(text):
        if _ends_sentence(text, boundary, cased):
            sentences.append(text[start : boundary.end()].strip())
            start = boundary.end()
    sentences.append(text[start:].strip())
    return [sentence for sentence in sentences if sentence]


def _ends_sentence(text: str, boundary: re.Match[str], cased: bool) -> bool:
    punctuation = boundary.group().rstrip()
    if not punctuation.startswith(".") or punctuation.startswith(".."):
        return True  # '!', '?' and '...' always end a sentence
    before = text[: boundary.start()].rsplit(None, 1)
    word = before[-1].lstrip(OPENING) if before else ""
    after = text[boundary.end() :].split(None, 1)
    following = after[0].lstrip(OPENING) if after else ""
    if not word or not following:
        return True
    key = word.lower()
    if key in TITLES:
        return False
    if key in NUMBERED_ABBREVIATIONS:
        return not following[0].isdigit()
    if key in ABBREVIATIONS or ACRONYM.fullmatch(word) or (len(word) == 1 and word.isalpha()):
        if following[0].isdigit() or (cased and not following[0].isupper()):
            return False
        return following.rstrip(".,;:!?\"'\u201d\u2019").lower() in SENTENCE_STARTERS
    return True


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sentences",
        help="unlabeled documents -> adjacent-sentence positive pairs (for in-batch or sampled negatives)",
        description="Split unlabeled documents into sentences and write every pair of adjacent sentences "
        'as {"in0": sentence i, "in1": sentence i+1, "label": 1}, with one vocab.json for both sides '
        "(built from --train, or --vocab). Train with num_classes=2 and in_batch_negatives=true (what the "
        "printed hyperparameters suggest, with one siamese encoder scored by its cosine) or "
        "negative_sampling_rate > 0. Prints the hyperparameters as JSON.",
    )
    add_split_inputs(parser, "documents")
    fmt = parser.add_argument_group("documents and sentences")
    fmt.add_argument(
        "--documents",
        choices=("line", "paragraph"),
        default="line",
        help="line: each non-blank line is a document; paragraph: blocks of lines separated by blank lines "
        "are documents (default: line)",
    )
    fmt.add_argument(
        "--min-sentence-tokens",
        type=positive_int,
        default=1,
        help="drop sentences with fewer known words than this before pairing: tokens of the vocabulary that "
        "hold a letter or digit (punctuation and unknown tokens do not count; default: 1)",
    )
    fmt.add_argument(
        "--eval-negatives",
        type=non_negative_int,
        default=0,
        help="for validation/test: after each positive pair, this many pairs of sentence i with a sentence "
        "of another document, label 0 (the notebook used 5; default: 0, positives only)",
    )
    fmt.add_argument(
        "--negative-pool",
        type=positive_int,
        default=100_000,
        help="sentences kept (a seeded reservoir sample of the split) to draw those negatives from (default: 100000)",
    )
    add_seed(parser, "the negatives of --eval-negatives")
    add_candidates_option(parser, "every distinct sentence of the --train corpus (id: the text)")
    add_text_options(parser)
    add_output_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    inputs = require_inputs(args)
    check_outputs(
        [args.output_dir / f"{split}.jsonl" for split, _ in inputs]
        + ([args.output_dir / "vocab.json"] if vocab_file_written(args) else [])
        + (candidates_path(args) if args.train else []),
        args.overwrite,
    )
    tokenizer = make_tokenizer(args)
    vocab, built = select_vocab(args, tokenizer, lambda: (text for _, text in _documents(args.train, args)))
    if built:
        vocab.write(args.output_dir / "vocab.json")
    rng = random.Random(args.seed)
    counts: dict[str, int] = {}
    stats = LengthStats()
    for split, path in inputs:
        split_stats = stats if split == "train" or not args.train else LengthStats()
        negatives = 0 if split == "train" else args.eval_negatives
        counts[f"{split}.jsonl"] = _write_split(split, path, args, tokenizer, vocab, rng, negatives, split_stats)
    if args.write_candidates and args.train:
        sentences = _sentence_candidates(args.train, args, tokenizer, vocab)
        counts["candidates.jsonl"] = write_candidates(args.output_dir, sentences)
    max_seq_len = stats.suggest(args.length_percentile, args.max_seq_len)
    return {
        "command": "sentences",
        "output_dir": str(args.output_dir),
        "outputs": counts,
        "vocab_file": str(args.output_dir / "vocab.json") if built else str(args.vocab or args.tokenizer),
        "longest_sentence": stats.longest,
        "hyperparameters": {
            # one vocabulary for both sides: enc1 shares enc0's network, vocab and max_seq_len
            "enc1_network": "enc0",
            "enc0_vocab_size": vocab.size,
            "enc0_max_seq_len": max_seq_len,
            "output_layer": "softmax",
            "num_classes": 2,
            **IN_BATCH_RECIPE,
            # one encoder for both sentences: a transformer ties its whole encoder, the others tie theirs
            **(transformer_hyperparameters(tokenizer, siamese=True) or {"tied_encoders": True}),
        },
    }


def _write_split(
    split: str,
    path: Path,
    args: argparse.Namespace,
    tokenizer: TextTokenizer,
    vocab: Vocab,
    rng: random.Random,
    negatives: int,
    stats: LengthStats,
) -> int:
    pool = _reservoir(path, args, tokenizer, vocab, rng) if negatives else []
    if negatives and len({doc for doc, _ in pool}) < 2:
        raise ClientError(f"{path}: --eval-negatives needs sentences from at least two documents")
    documents = 0
    with JsonlWriter(args.output_dir / f"{split}.jsonl") as writer:
        for doc, sentences in enumerate(_encoded_documents(path, args, tokenizer, vocab)):
            documents += 1
            for ids in sentences:
                stats.add(len(ids))
            for first, second in zip(sentences, sentences[1:], strict=False):
                writer.write(pair(first, second, 1))
                for _ in range(negatives):
                    other_doc, other = pool[rng.randrange(len(pool))]
                    while other_doc == doc:
                        other_doc, other = pool[rng.randrange(len(pool))]
                    writer.write(pair(first, other, 0))
    logger.info("%s: %d documents -> %d pairs in %s", path, documents, writer.count, writer.path)
    return writer.count


def _sentence_candidates(
    path: Path, args: argparse.Namespace, tokenizer: TextTokenizer, vocab: Vocab
) -> Iterator[tuple[str, list[int]]]:
    """(sentence text, token ids) of every sentence kept for pairing; repeats are dropped by the writer."""
    for _, text in _documents(path, args):
        for sentence in split_sentences(text):
            tokens = tokenizer(sentence)
            if known_words(tokens, vocab) >= args.min_sentence_tokens:  # the sentences that are paired
                yield sentence, truncate(vocab.encode(tokens), args.max_seq_len)


def _encoded_documents(
    path: Path, args: argparse.Namespace, tokenizer: TextTokenizer, vocab: Vocab
) -> Iterator[list[list[int]]]:
    """Per document, its sentences as (truncated) id lists; short sentences dropped."""
    for _, text in _documents(path, args):
        sentences = []
        for sentence in split_sentences(text):
            tokens = tokenizer(sentence)
            if known_words(tokens, vocab) >= args.min_sentence_tokens:
                sentences.append(truncate(vocab.encode(tokens), args.max_seq_len))
        yield sentences


def known_words(tokens: list[str], vocab: Vocab) -> int:
    """What --min-sentence-tokens counts: tokens of the vocabulary that hold a letter or digit (not
    punctuation, not tokens that become <unk>)."""
    return sum(1 for token in tokens if token in vocab.ids and any(char.isalnum() for char in token))


def _reservoir(
    path: Path, args: argparse.Namespace, tokenizer: TextTokenizer, vocab: Vocab, rng: random.Random
) -> list[tuple[int, list[int]]]:
    """A uniform sample of up to --negative-pool (document index, sentence) from one pass."""
    pool: list[tuple[int, list[int]]] = []
    seen = 0
    for doc, sentences in enumerate(_encoded_documents(path, args, tokenizer, vocab)):
        for ids in sentences:
            seen += 1
            if len(pool) < args.negative_pool:
                pool.append((doc, ids))
            else:
                slot = rng.randrange(seen)
                if slot < args.negative_pool:
                    pool[slot] = (doc, ids)
    return pool


def _documents(path: Path, args: argparse.Namespace) -> Iterator[tuple[int, str]]:
    """(first line number, text) per document."""
    if args.documents == "line":
        for line_number, line in read_lines(path):
            if line.strip():
                yield line_number, line
        return
    lines: list[str] = []
    size = start = 0
    for line_number, line in read_lines(path):
        if line.strip():
            if not lines:
                start = line_number
            lines.append(line.strip())
            size += len(line)
            if size > MAX_DOCUMENT_CHARS:
                raise ClientError(
                    f"{path}, line {start}: a paragraph longer than {MAX_DOCUMENT_CHARS} characters; separate "
                    "documents with blank lines, or use --documents line"
                )
        elif lines:
            yield start, " ".join(lines)
            lines, size = [], 0
    if lines:
        yield start, " ".join(lines)
