"""`prepare text-pairs`: TSV text1, text2, label/score -> token-id pairs with one shared vocab.json.

Both sides use the same vocabulary (as the SNLI/STS notebook's single vocab file), built from the
training file in one pass and applied in a second; validation and test files are encoded with it,
or with a vocab.json given by --vocab. Fields are split with csv.QUOTE_NONE because STS Benchmark
lines contain bare quotes and extra trailing columns.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from object2vec.config import MAX_NUM_CLASSES  # the trainer's num_classes range is 2..MAX_NUM_CLASSES
from object2vec.errors import ClientError
from object2vec.prepare.io import JsonlWriter, check_outputs, pair, read_rows
from object2vec.prepare.options import (
    add_output_options,
    add_split_inputs,
    add_text_options,
    make_tokenizer,
    non_negative_int,
    require_inputs,
    select_vocab,
    transformer_hyperparameters,
    vocab_file_written,
)
from object2vec.prepare.pretrained_tokenizer import TextTokenizer
from object2vec.prepare.text import LengthStats, Vocab, truncate

logger = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "text-pairs",
        help="TSV text1, text2, label or score -> token-id pairs with a shared vocab.json",
        description="Tokenize delimited text pairs (default: text1<TAB>text2<TAB>label) into Object2Vec "
        'records {"in0": [ids], "in1": [ids], "label": L} with one vocabulary for both sides. The vocabulary '
        "is built from --train (written as vocab.json) or read from --vocab. Prints the hyperparameters as "
        "JSON. STS Benchmark: --text-columns 5,6 --label-column 4. SNLI-style labels: "
        "--task classification --label-map entailment=0,neutral=1,contradiction=2 --drop-label -",
    )
    add_split_inputs(parser, "TSV file")
    fmt = parser.add_argument_group("input format")
    fmt.add_argument(
        "--text-columns", default="0,1", help="0-based columns of text1 and text2, comma-separated (default: 0,1)"
    )
    fmt.add_argument("--label-column", type=non_negative_int, default=2, help="0-based label column (default: 2)")
    fmt.add_argument("--delimiter", default="\t", help="field separator (default: tab)")
    fmt.add_argument("--header", action="store_true", help="skip the first line of each file (default: off)")
    labels = parser.add_argument_group("labels")
    labels.add_argument(
        "--task",
        choices=("regression", "classification"),
        default="regression",
        help="regression: the label is a number (a similarity score), output_layer=mean_squared_error; "
        "classification: an integer class 0..n-1 or a name mapped by --label-map, output_layer=softmax "
        "(default: regression)",
    )
    labels.add_argument(
        "--label-map",
        help="class names -> ids for classification: 'name=0,other=1' or a JSON file {\"name\": 0} "
        "(default: labels must already be integers)",
    )
    labels.add_argument(
        "--drop-label",
        action="append",
        default=[],
        metavar="VALUE",
        help="skip rows whose label field is VALUE, e.g. SNLI's '-' (repeatable; default: none)",
    )
    add_text_options(parser)
    add_output_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    inputs = require_inputs(args)
    columns = _text_columns(args.text_columns)
    label_map = _label_map(args.label_map) if args.label_map else None
    outputs = [args.output_dir / f"{split}.jsonl" for split, _ in inputs]
    check_outputs(outputs + ([args.output_dir / "vocab.json"] if vocab_file_written(args) else []), args.overwrite)
    tokenizer = make_tokenizer(args)

    def train_texts() -> Iterator[str]:
        for _, text0, text1, _ in _rows(args.train, args, columns):
            yield text0
            yield text1

    vocab, built = select_vocab(args, tokenizer, train_texts)
    if built:
        vocab.write(args.output_dir / "vocab.json")
    counts: dict[str, int] = {}
    stats: dict[str, tuple[LengthStats, LengthStats]] = {}
    labels_seen: dict[str, set[int]] = {}
    for split, path in inputs:
        stats[split] = (LengthStats(), LengthStats())
        labels_seen[split] = set()
        counts[f"{split}.jsonl"] = _encode_file(
            split, path, args, columns, label_map, tokenizer, vocab, stats[split], labels_seen[split]
        )
    first = "train" if args.train else inputs[0][0]
    lengths = [stats[first][side].suggest(args.length_percentile, args.max_seq_len) for side in (0, 1)]
    transformer = transformer_hyperparameters(tokenizer, siamese=True)
    hyperparameters: dict[str, Any] = {
        # one vocabulary for both sides: enc1 shares enc0's network, vocab and max_seq_len
        "enc1_network": "enc0",
        "enc0_vocab_size": vocab.size,
        "enc0_max_seq_len": max(lengths),
        # and one encoder for both sentences (siamese): a transformer's through
        # tied_token_embedding_weight, the others' through tied_encoders (STS-B dev pair Pearson
        # 0.65 -> 0.72-0.73 for hcnn: benchmarks/results_notes.md, fourth round)
        **(transformer or {"tied_encoders": True}),
    }
    if args.task == "classification":
        num_classes = max(2, max(labels_seen[first], default=0) + 1)
        if label_map:
            num_classes = max(num_classes, max(label_map.values()) + 1)
        for split, seen in labels_seen.items():
            if seen and max(seen) >= num_classes:
                logger.warning("%s has class %d, beyond num_classes=%d from %s", split, max(seen), num_classes, first)
        hyperparameters.update(output_layer="softmax", num_classes=num_classes)
    else:
        hyperparameters["output_layer"] = "mean_squared_error"
        if not transformer:
            # Scores fitted by the cosine of the two embeddings alone: STS-B dev 0.738-0.741 (hcnn)
            # against 0.710-0.727 with an MLP after the cosine (benchmarks/results_notes.md, sixth round)
            hyperparameters.update(comparator_list="cosine", mlp_layers=0)
    return {
        "command": "text-pairs",
        "output_dir": str(args.output_dir),
        "outputs": counts,
        "vocab_file": str(args.output_dir / "vocab.json") if built else str(args.vocab or args.tokenizer),
        "longest_sequence": max(max(s[0].longest, s[1].longest) for s in stats.values()),
        "suggested_max_seq_len": {"in0": lengths[0], "in1": lengths[1]},
        "hyperparameters": hyperparameters,
    }


def _encode_file(
    split: str,
    path: Path,
    args: argparse.Namespace,
    columns: tuple[int, int],
    label_map: dict[str, int] | None,
    tokenizer: TextTokenizer,
    vocab: Vocab,
    stats: tuple[LengthStats, LengthStats],
    labels_seen: set[int],
) -> int:
    empty = 0
    with JsonlWriter(args.output_dir / f"{split}.jsonl") as writer:
        for line_number, text0, text1, raw_label in _rows(path, args, columns):
            label = _label(raw_label, args.task, label_map, path, line_number)
            ids0, ids1 = vocab.encode(tokenizer(text0)), vocab.encode(tokenizer(text1))
            if not ids0 or not ids1:
                empty += 1
                continue
            stats[0].add(len(ids0))
            stats[1].add(len(ids1))
            if isinstance(label, int):
                labels_seen.add(label)
            writer.write(pair(truncate(ids0, args.max_seq_len), truncate(ids1, args.max_seq_len), label))
    if empty:
        logger.warning("%s: skipped %d pair(s) with a side that has no known token", path, empty)
    logger.info("%s: wrote %d pairs to %s", path, writer.count, writer.path)
    return writer.count


def _rows(path: Path, args: argparse.Namespace, columns: tuple[int, int]) -> Iterator[tuple[int, str, str, str]]:
    """(line number, text1, text2, raw label) per data line; rows with a --drop-label label are skipped."""
    needed = max(*columns, args.label_column) + 1
    dropped = 0
    for line_number, fields in read_rows(path, args.delimiter):
        if args.header and line_number == 1:
            continue
        if len(fields) < needed:
            raise ClientError(
                f"{path}, line {line_number}: {len(fields)} field(s), but column {needed - 1} is needed; check "
                "--text-columns, --label-column and --delimiter"
            )
        raw_label = fields[args.label_column].strip()
        if raw_label in args.drop_label:
            dropped += 1
            continue
        yield line_number, fields[columns[0]], fields[columns[1]], raw_label
    if dropped:
        logger.info("%s: skipped %d row(s) labelled %s", path, dropped, " or ".join(map(repr, args.drop_label)))


def _label(raw: str, task: str, label_map: dict[str, int] | None, path: Path, line_number: int) -> int | float:
    where = f"{path}, line {line_number}"
    if task == "regression":
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ClientError(
                f"{where}: label {raw!r} is not a number; regression needs a score (check --label-column)"
            )
        return value
    if label_map is not None:
        if raw not in label_map:
            raise ClientError(
                f"{where}: label {raw!r} is not in --label-map ({', '.join(label_map)}); add it, or skip such rows "
                "with --drop-label"
            )
        return label_map[raw]
    try:
        number = float(raw)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number == int(number) and 0 <= number < MAX_NUM_CLASSES):
        raise ClientError(
            f"{where}: label {raw!r} is not a class id 0..{MAX_NUM_CLASSES - 1}; map class names with "
            "--label-map name=0,other=1, or use --task regression for scores"
        )
    return int(number)


def _text_columns(text: str) -> tuple[int, int]:
    parts = text.split(",")
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise ClientError(f"--text-columns {text!r}: give two 0-based column indexes like 5,6")
    return int(parts[0]), int(parts[1])


def _label_map(text: str) -> dict[str, int]:
    """'a=0,b=1' or the path of a JSON object {"a": 0, "b": 1}."""
    path = Path(text)
    if "=" not in text and path.is_file():
        try:
            mapping = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as err:
            raise ClientError(f"--label-map {text}: not a readable JSON file ({err})") from err
        if not isinstance(mapping, dict):
            raise ClientError(f'--label-map {text}: must hold a JSON object like {{"entailment": 0}}')
    else:
        mapping = {}
        for item in text.split(","):
            name, sep, value = item.rpartition("=")
            if not sep or not name:
                raise ClientError(f"--label-map {text!r}: give name=id pairs like entailment=0,neutral=1")
            mapping[name] = value
    result: dict[str, int] = {}
    for name, value in mapping.items():
        try:
            class_id = int(value)
        except (TypeError, ValueError):
            class_id = -1
        if not 0 <= class_id < MAX_NUM_CLASSES:
            raise ClientError(
                f"--label-map: {name!r} -> {value!r}; class ids must be integers 0..{MAX_NUM_CLASSES - 1}"
            )
        result[str(name)] = class_id
    return result
