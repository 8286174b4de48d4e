"""`prepare tokenize`: raw text -> inference request instances, with the training data's tokenizer.

The client side of the contract: the server takes token ids only, so text is tokenized here, the
way the training data was: a transformer checkpoint's tokenizer.json (`--tokenizer`, as `prepare
--tokenizer` used), or the regex tokenizer and the vocab.json `prepare` wrote (`--vocab`).
Texts come from the command line (--text, --pair) or a file (one text, or text1<TAB>text2 with
--pairs, per line); the output is a request body for /invocations: {"instances": [...]} (JSON) or
one instance per line (JSON Lines), on stdout (pipe it to curl) or in --output.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from object2vec.errors import ClientError
from object2vec.prepare.io import MAX_LINE_CHARS, AtomicFile, check_outputs, read_lines
from object2vec.prepare.options import non_negative_int
from object2vec.prepare.pretrained_tokenizer import PretrainedTokenizer, TextTokenizer
from object2vec.prepare.text import Tokenizer, Vocab, truncate
from object2vec.record_format import INPUT_KEYS

logger = logging.getLogger(__name__)

MAX_COMMAND_LINE_TEXTS = 10_000


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "tokenize",
        help="raw text -> request instances for /invocations, with the training data's tokenizer or vocab.json",
        description="Tokenize texts the way the training data was (a transformer checkpoint's tokenizer.json, "
        "--tokenizer, or the vocab.json prepare wrote, --vocab) into /invocations instances: "
        '{"in0": ids} per text (embeddings), or '
        '{"in0": ids, "in1": ids} per pair (scores). Writes the request body to stdout (default) or --output. '
        "Example: prepare tokenize --tokenizer minilm/tokenizer.json --pair 'A man plays.' 'A man is playing.' "
        "| curl -H 'Content-Type: application/json' --data-binary @- localhost:8080/invocations",
    )
    vocabulary = parser.add_argument_group("tokenizer (one of --tokenizer or --vocab)")
    vocabulary.add_argument("--tokenizer", type=Path, help="a transformer checkpoint's tokenizer.json")
    vocabulary.add_argument(
        "--vocab",
        type=Path,
        help="the vocab.json `prepare` wrote for the model (hcnn, bilstm, pooled_embedding): text is split by the "
        "same regex tokenizer; unknown tokens become <unk> if the file has it, else are dropped",
    )
    vocabulary.add_argument(
        "--lowercase",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --vocab: lowercase text first, as `prepare` does by default (default: on)",
    )
    texts = parser.add_argument_group("texts (one kind)")
    texts.add_argument("--text", action="append", default=[], metavar="TEXT", help="a text to embed (repeatable)")
    texts.add_argument(
        "--pair", action="append", default=[], nargs=2, metavar=("TEXT0", "TEXT1"), help="a pair to score (repeatable)"
    )
    texts.add_argument(
        "--input",
        type=Path,
        help="a UTF-8 file (plain or gzip; '-' for stdin): one text per line, or text0<TAB>text1 with --pairs; "
        "blank lines are skipped",
    )
    texts.add_argument("--pairs", action="store_true", help="--input lines are pairs (default: single texts)")
    texts.add_argument("--delimiter", default="\t", help="separator of a pair in --input lines (default: tab)")
    out = parser.add_argument_group("instances")
    out.add_argument(
        "--side",
        choices=INPUT_KEYS,
        default="in0",
        help="the field single texts go in: in0 -> enc0's embeddings, in1 -> enc1's (default: in0)",
    )
    out.add_argument(
        "--max-seq-len",
        type=non_negative_int,
        default=0,
        help="--tokenizer: truncate inside the tokenizer, keeping its end token (default: 0, the file's own "
        "setting); --vocab: keep the first N ids (default: 0, all). The server truncates to encX_max_seq_len anyway, "
        "keeping the first ids",
    )
    out.add_argument(
        "--format",
        choices=("json", "jsonlines"),
        default="json",
        help='json: {"instances": [...]} (Content-Type application/json); jsonlines: one instance per line '
        "(application/jsonlines) (default: json)",
    )
    out.add_argument("--output", type=Path, help="write the body here instead of stdout")
    out.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> dict[str, Any] | None:
    sources = [bool(args.text), bool(args.pair), args.input is not None]
    if sum(sources) != 1:
        raise ClientError("give texts one way: --text (repeatable), --pair (repeatable) or --input FILE")
    if len(args.text) + len(args.pair) > MAX_COMMAND_LINE_TEXTS:
        raise ClientError(f"more than {MAX_COMMAND_LINE_TEXTS} --text/--pair: put them in a file and use --input")
    if args.output is not None:
        check_outputs([args.output], args.overwrite)
    if (args.tokenizer is None) == (args.vocab is None):
        raise ClientError(
            "give the training data's tokenizer: --tokenizer tokenizer.json (a transformer checkpoint's) or "
            "--vocab vocab.json (the file prepare wrote), one of them"
        )
    tokenizer: TextTokenizer
    if args.tokenizer is not None:  # truncates inside, keeping its end token; its ids are its vocab's
        tokenizer = PretrainedTokenizer.load(args.tokenizer, args.max_seq_len)
        vocab = tokenizer.vocab
    else:
        tokenizer, vocab = Tokenizer(lowercase=args.lowercase), Vocab.read(args.vocab)

    def encode(text: str) -> list[int]:  # as the text subcommands encode training text
        return truncate(vocab.encode(tokenizer(text)), args.max_seq_len)

    instances = [_instance(encode, texts, args.side) for texts in _texts(args)]
    if args.format == "json":
        body = orjson.dumps({"instances": instances}) + b"\n"
    else:
        body = b"".join(orjson.dumps(instance) + b"\n" for instance in instances)
    longest = max((len(ids) for instance in instances for ids in instance.values()), default=0)
    logger.info("%d instance(s), the longest sequence %d ids", len(instances), longest)
    if args.output is None:
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
        return None
    with AtomicFile(args.output) as stream:
        stream.write(body.decode())
    return {"command": "tokenize", "output": str(args.output), "instances": len(instances), "longest": longest}


def _instance(encode: Callable[[str], list[int]], texts: tuple[str, ...], side: str) -> dict[str, list[int]]:
    if len(texts) == 2:
        return {"in0": encode(texts[0]), "in1": encode(texts[1])}
    return {side: encode(texts[0])}


def _texts(args: argparse.Namespace) -> Iterator[tuple[str, ...]]:
    if args.text:
        yield from ((text,) for text in args.text)
        return
    if args.pair:
        yield from (tuple(pair) for pair in args.pair)
        return
    lines = _stdin_lines() if str(args.input) == "-" else read_lines(args.input)
    for line_number, line in lines:
        if not line.strip():
            continue
        if not args.pairs:
            yield (line,)
            continue
        fields = line.split(args.delimiter)
        if len(fields) < 2:
            raise ClientError(
                f"{args.input}, line {line_number}: --pairs needs text0 and text1 separated by {args.delimiter!r}"
            )
        yield fields[0], fields[1]


def _stdin_lines() -> Iterator[tuple[int, str]]:
    for line_number, line in enumerate(sys.stdin, 1):
        if len(line) > MAX_LINE_CHARS:
            raise ClientError(f"stdin, line {line_number}: longer than {MAX_LINE_CHARS} characters")
        yield line_number, line.rstrip("\r\n")
