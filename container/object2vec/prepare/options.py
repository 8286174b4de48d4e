"""Command-line options shared by several `prepare` subcommands, and the vocabulary they select."""

from __future__ import annotations

import argparse
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from object2vec.config import AUX_FOLDER_NAME
from object2vec.errors import ClientError
from object2vec.prepare.pretrained_tokenizer import PretrainedTokenizer, TextTokenizer
from object2vec.prepare.text import RESERVED_SCHEMES, Tokenizer, Vocab

logger = logging.getLogger(__name__)

T = TypeVar("T", int, float)

DEFAULT_LENGTH_PERCENTILE = 95.0  # of the training sequences the suggested encX_max_seq_len covers


def _checked(convert: Callable[[str], T], accept: Callable[[T], bool], requirement: str) -> Callable[[str], T]:
    """An argparse type: the text converted, when `accept` takes the value; else "must be <requirement>"."""

    def parse(text: str) -> T:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {requirement}, not {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, not {text!r}")
        return value

    return parse


positive_int = _checked(int, lambda value: value >= 1, "an integer >= 1")
non_negative_int = _checked(int, lambda value: value >= 0, "an integer >= 0")
positive_float = _checked(float, lambda value: math.isfinite(value) and value > 0, "a positive number")
fraction = _checked(float, lambda value: 0 <= value < 1, "a number in [0, 1)")
percentile = _checked(float, lambda value: 0 < value <= 100, "a number in (0, 100]")


def add_output_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument(
        "--output-dir", type=Path, required=True, help="folder for the output files (created if missing); required"
    )
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="replace output files that already exist (default: refuse, so earlier results are never lost)",
    )


def add_split_inputs(parser: argparse.ArgumentParser, what: str) -> None:
    group = parser.add_argument_group("inputs (at least one; each gives the output file of the same name)")
    group.add_argument(
        "--train",
        type=Path,
        help=f"training {what} -> train.jsonl; the vocabulary is built from it unless --vocab is given",
    )
    group.add_argument("--validation", type=Path, help=f"validation {what} -> validation.jsonl (default: none)")
    group.add_argument("--test", type=Path, help=f"test {what} -> test.jsonl (default: none)")


def add_seed(parser: argparse.ArgumentParser | argparse._ArgumentGroup, what: str) -> None:
    parser.add_argument(
        "--seed", type=non_negative_int, default=0, help=f"random seed for {what}; same seed, same output (default: 0)"
    )


def add_text_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("tokens and vocabulary")
    group.add_argument(
        "--lowercase",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="lowercase text before tokenizing (default: on; --no-lowercase keeps case)",
    )
    group.add_argument(
        "--vocab",
        type=Path,
        help="reuse this vocab.json (token -> id) instead of building one from --train: for validation/test "
        "files encoded with the training vocabulary. Unknown tokens become <unk> if the file has it, else "
        "are dropped (default: build vocab.json from --train)",
    )
    group.add_argument(
        "--min-count",
        type=positive_int,
        default=1,
        help="keep only tokens seen at least this many times in --train (default: 1)",
    )
    group.add_argument(
        "--max-vocab",
        type=non_negative_int,
        default=0,
        help="cap on the vocabulary size, reserved symbols included; the most frequent tokens are kept "
        "(default: 0, no cap)",
    )
    group.add_argument(
        "--reserved",
        choices=sorted(RESERVED_SCHEMES),
        default="unk",
        help="reserved symbols at the lowest ids: unk = <unk>=0; pad-unk = <pad>=0,<unk>=1; pad-unk-s = "
        "<pad>=0,<unk>=1,<s>=2,</s>=3; none = no reserved ids and unknown tokens are dropped "
        "(default: unk)",
    )
    group.add_argument(
        "--max-seq-len",
        type=non_negative_int,
        default=0,
        help="truncate every token sequence to its first N tokens (default: 0, no truncation; the trainer "
        "truncates to encX_max_seq_len anyway)",
    )
    group.add_argument(
        "--tokenizer",
        type=Path,
        help="a pretrained checkpoint's tokenizer.json (for encX_network=transformer): write that checkpoint's "
        "token ids, special tokens included, instead of building a vocabulary; --vocab, --min-count, --max-vocab, "
        "--reserved and --lowercase do not apply (the tokenizer normalises text its own way), and --max-seq-len "
        "truncates inside the tokenizer, keeping its end token. Needs the tokenizers library (default: none)",
    )
    group.add_argument(
        "--length-percentile",
        type=percentile,
        default=None,
        help="the suggested encX_max_seq_len covers this percentage of the training sequences (default: 95; 100 "
        "with --tokenizer, since truncating a transformer's input drops its end token)",
    )


def require_inputs(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """The (split, path) pairs given, in train/validation/test order."""
    inputs = [(split, getattr(args, split)) for split in ("train", "validation", "test") if getattr(args, split)]
    if not inputs:
        raise ClientError("give at least one of --train, --validation, --test")
    if not args.train and not args.vocab and not getattr(args, "tokenizer", None):
        raise ClientError("without --train there is nothing to build a vocabulary from: pass --vocab vocab.json")
    return inputs


def make_tokenizer(args: argparse.Namespace) -> TextTokenizer:
    """The regex tokenizer, or the checkpoint's own with --tokenizer; resolves the default of
    --length-percentile, which depends on the choice."""
    pretrained = bool(getattr(args, "tokenizer", None))
    if args.length_percentile is None:
        args.length_percentile = 100.0 if pretrained else DEFAULT_LENGTH_PERCENTILE
    if not pretrained:
        return Tokenizer(lowercase=args.lowercase)
    if args.vocab:
        raise ClientError(
            "--tokenizer and --vocab both give the vocabulary: with a checkpoint's tokenizer its own vocabulary "
            "is used, so drop --vocab"
        )
    return PretrainedTokenizer.load(args.tokenizer, args.max_seq_len)


def vocab_file_written(args: argparse.Namespace) -> bool:
    """Whether a vocab.json is built from --train (neither --vocab nor --tokenizer given)."""
    return not (args.vocab or getattr(args, "tokenizer", None))


def transformer_hyperparameters(tokenizer: TextTokenizer, siamese: bool) -> dict[str, object]:
    """With --tokenizer: enc0 is the checkpoint's transformer (its folder named as the one holding
    tokenizer.json); `siamese` when enc1 encodes the same kind of text with the same encoder."""
    if not isinstance(tokenizer, PretrainedTokenizer):
        return {}
    folder = tokenizer.suggested_folder()
    hyperparameters: dict[str, object] = {
        "enc0_network": "transformer",
        "enc0_pretrained_model": folder if AUX_FOLDER_NAME.fullmatch(folder) else "<checkpoint folder>",
    }
    if siamese:
        hyperparameters["tied_token_embedding_weight"] = True
    return hyperparameters


def select_vocab(
    args: argparse.Namespace, tokenizer: TextTokenizer, train_texts: Callable[[], Iterable[str]]
) -> tuple[Vocab, bool]:
    """The vocabulary given by --vocab or --tokenizer, or one built from the training texts; True when built."""
    if isinstance(tokenizer, PretrainedTokenizer):
        vocab = tokenizer.vocab
        logger.info("Using the tokenizer %s: vocab size %d", tokenizer.path, vocab.size)
        return vocab, False
    if args.vocab:
        vocab = Vocab.read(args.vocab)
        logger.info("Using %s: %d tokens, vocab size %d", args.vocab, len(vocab.ids), vocab.size)
        return vocab, False
    counts: Counter[str] = Counter()
    for text in train_texts():
        counts.update(tokenizer(text))
    vocab = Vocab.build(counts, min_count=args.min_count, max_size=args.max_vocab, reserved=args.reserved)
    logger.info("Built a vocabulary of %d tokens from %d distinct in %s", len(vocab.ids), len(counts), args.train)
    return vocab, True
