"""`prepare multilabel`: documents with several labels -> (document tokens, [label id]) pairs.

As in the IMDB-genres notebook: "in0" is the document, "in1" one label id, the label is 1 when the
document has that label and 0 otherwise. Training files hold every true label of each document;
the negatives are best left to the trainer (the default: negative_sampling_rate in the report), which
draws labels the document does not have afresh each epoch and keeps the file small; or
--negatives-per-doc k writes k seeded negatives per document into the file. Validation and test files hold, by default,
every label for every document (--eval-negatives all) in document-major, label-id order: with L
labels, line j is document j // L and label j % L, so scoring that file scores every label for
every document. --candidates writes the same information once per document, for ranking
(precision@k) without re-reading the pairs.
"""

from __future__ import annotations

import argparse
import logging
import random
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson

from object2vec.errors import ClientError
from object2vec.prepare.candidates import add_candidates_option, candidates_path, write_candidates
from object2vec.prepare.io import JsonlWriter, check_outputs, pair, read_lines, write_json
from object2vec.prepare.options import (
    add_output_options,
    add_seed,
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

# Negatives per positive (document, label) record the trainer draws when the file holds positives only.
NEGATIVE_SAMPLING_RATE = 5


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "multilabel",
        help="documents with several labels -> (document, label) pairs, sampled negatives, candidates",
        description="Turn labelled documents into Object2Vec pairs "
        '{"in0": document token ids, "in1": [label id], "label": 1 or 0}. Input: JSON Lines '
        '{"text": "...", "labels": ["a", "b"]} or TSV text<TAB>a,b. Writes vocab.json (document tokens) '
        "and label_vocab.json (label -> id, alphabetical) built from --train, or reuses --vocab and "
        "--label-vocab. Validation/test files hold every (document, label) pair by default; see "
        "--candidates for a per-document file to rank all labels. Prints the hyperparameters as JSON.",
    )
    add_split_inputs(parser, "documents")
    fmt = parser.add_argument_group("input format")
    fmt.add_argument(
        "--format",
        choices=("auto", "jsonl", "tsv"),
        default="auto",
        help='jsonl: one {"text": ..., "labels": [...]} per line; tsv: text<TAB>labels; auto: jsonl when '
        "the first line starts with '{' (default: auto)",
    )
    fmt.add_argument("--text-key", default="text", help="JSON key of the document text (default: text)")
    fmt.add_argument("--labels-key", default="labels", help="JSON key of the label list (default: labels)")
    fmt.add_argument(
        "--label-separator", default=",", help="separator of the labels in the TSV label column (default: ,)"
    )
    labels = parser.add_argument_group("labels and pairs")
    labels.add_argument(
        "--label-vocab",
        type=Path,
        help="reuse this label_vocab.json (label -> id) instead of building one from --train (default: build)",
    )
    labels.add_argument(
        "--min-label-count",
        type=non_negative_int,
        default=1,
        help="when building the label vocabulary, keep labels of at least this many training documents (default: 1)",
    )
    labels.add_argument(
        "--min-labels",
        type=non_negative_int,
        default=1,
        help="skip documents with fewer known labels than this, in every split (default: 1: a document "
        "none of whose labels is in the label vocabulary is skipped)",
    )
    labels.add_argument(
        "--negatives-per-doc",
        type=non_negative_int,
        default=0,
        help="negative (label 0) pairs written per training document, labels drawn without replacement from "
        "those the document does not have (default: 0: the file holds positives only and the report "
        f"suggests negative_sampling_rate={NEGATIVE_SAMPLING_RATE}, so the trainer draws fresh negatives "
        "each epoch)",
    )
    labels.add_argument(
        "--eval-negatives",
        choices=("all", "sampled"),
        default="all",
        help="validation/test negatives: all = every other label (the all-labels pair file), sampled = as "
        "for training (default: all)",
    )
    labels.add_argument(
        "--candidates",
        type=Path,
        help="also write a per-document candidate file for the --test documents (else --validation): one "
        'line per document {"doc": i, "in0": [...], "candidates": [all label ids], "true_labels": [...]}; '
        "a relative path is inside --output-dir (default: none)",
    )
    add_seed(parser, "negative sampling")
    add_candidates_option(parser, "every label (id: the label's name)")
    add_text_options(parser)
    add_output_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    inputs = require_inputs(args)
    if not args.train and not args.label_vocab:
        raise ClientError("without --train there are no labels to build from: pass --label-vocab label_vocab.json")
    candidates = _candidates_path(args)
    planned = [args.output_dir / f"{split}.jsonl" for split, _ in inputs]
    planned += [args.output_dir / "vocab.json"] if vocab_file_written(args) else []
    planned += [] if args.label_vocab else [args.output_dir / "label_vocab.json"]
    planned += [candidates[1]] if candidates else []
    check_outputs(planned + candidates_path(args), args.overwrite)
    tokenizer = make_tokenizer(args)
    vocab, built = select_vocab(args, tokenizer, lambda: (text for _, text, _ in _documents(args.train, args)))
    if built:
        vocab.write(args.output_dir / "vocab.json")
    label_vocab = _label_vocab(args)
    num_labels = label_vocab.size
    rng = random.Random(args.seed)
    counts: dict[str, int] = {}
    stats = LengthStats()
    documents: dict[str, int] = {}
    for split, path in inputs:
        split_stats = stats if split == "train" or not args.train else LengthStats()
        candidate_file = candidates[1] if candidates and candidates[0] == split else None
        documents[split], counts[f"{split}.jsonl"] = _write_split(
            split, path, args, tokenizer, vocab, label_vocab, rng, split_stats, candidate_file
        )
        if candidate_file:
            counts[str(candidate_file)] = documents[split]
    hyperparameters = {
        # labels have their own vocabulary, so enc1 cannot be the default enc1_network=enc0
        "enc1_network": "pooled_embedding",
        "enc0_vocab_size": vocab.size,
        "enc1_vocab_size": num_labels,
        "enc0_max_seq_len": stats.suggest(args.length_percentile, args.max_seq_len),
        "enc1_max_seq_len": 1,
        "output_layer": "softmax",
        "num_classes": 2,
        **transformer_hyperparameters(tokenizer, siamese=False),
    }
    if not args.negatives_per_doc:  # positives only: the trainer draws the negatives
        hyperparameters["negative_sampling_rate"] = NEGATIVE_SAMPLING_RATE
    if args.write_candidates:
        labels = sorted(label_vocab.ids.items(), key=lambda item: item[1])
        counts["candidates.jsonl"] = write_candidates(args.output_dir, ((name, [i]) for name, i in labels))
    return {
        "command": "multilabel",
        "output_dir": str(args.output_dir),
        "outputs": counts,
        "documents": documents,
        "labels": num_labels,
        "vocab_file": str(args.output_dir / "vocab.json") if built else str(args.vocab or args.tokenizer),
        "label_vocab_file": str(args.label_vocab or args.output_dir / "label_vocab.json"),
        "longest_document": stats.longest,
        "hyperparameters": hyperparameters,
    }


def _write_split(
    split: str,
    path: Path,
    args: argparse.Namespace,
    tokenizer: TextTokenizer,
    vocab: Vocab,
    label_vocab: Vocab,
    rng: random.Random,
    stats: LengthStats,
    candidate_file: Path | None,
) -> tuple[int, int]:
    """Write one split's pairs (and candidates); return (documents kept, pairs written)."""
    num_labels = label_vocab.size
    all_labels = list(range(num_labels))
    sample = split == "train" or args.eval_negatives == "sampled"
    kept = skipped = empty = 0
    unknown: Counter[str] = Counter()
    with ExitStack() as stack:
        writer = stack.enter_context(JsonlWriter(args.output_dir / f"{split}.jsonl"))
        candidates = stack.enter_context(JsonlWriter(candidate_file)) if candidate_file else None
        for _, text, names in _documents(path, args):
            true_ids = sorted({label_vocab.ids[name] for name in names if name in label_vocab.ids})
            unknown.update(name for name in names if name not in label_vocab.ids)
            if len(true_ids) < args.min_labels:
                skipped += 1
                continue
            ids = vocab.encode(tokenizer(text))
            if not ids:
                empty += 1
                continue
            stats.add(len(ids))
            ids = truncate(ids, args.max_seq_len)
            if sample:
                for label_id in true_ids:
                    writer.write(pair(ids, [label_id], 1))
                for label_id in _sample_negatives(rng, num_labels, set(true_ids), args.negatives_per_doc):
                    writer.write(pair(ids, [label_id], 0))
            else:
                true_set = set(true_ids)
                for label_id in all_labels:
                    writer.write(pair(ids, [label_id], int(label_id in true_set)))
            if candidates:
                candidates.write({"doc": kept, "in0": ids, "candidates": all_labels, "true_labels": true_ids})
            kept += 1
    if skipped:
        logger.info("%s: skipped %d document(s) with fewer than %d known label(s)", path, skipped, args.min_labels)
    if empty:
        logger.warning("%s: skipped %d document(s) with no known token", path, empty)
    if unknown:
        logger.warning(
            "%s: %d label occurrence(s) not in the label vocabulary were ignored (%s)",
            path,
            sum(unknown.values()),
            ", ".join(name for name, _ in unknown.most_common(5)),
        )
    logger.info("%s: %d documents -> %d pairs in %s", path, kept, writer.count, writer.path)
    return kept, writer.count


def _sample_negatives(rng: random.Random, num_labels: int, positives: set[int], k: int) -> list[int]:
    """k distinct label ids outside positives (all of them when fewer remain), in drawn order."""
    available = num_labels - len(positives)
    if k <= 0 or available <= 0:
        return []
    if k >= available:
        return [label for label in range(num_labels) if label not in positives]
    if 4 * k < available:  # few draws: rejection sampling avoids an O(L) list per document
        chosen: list[int] = []
        seen = set(positives)
        while len(chosen) < k:
            label = rng.randrange(num_labels)
            if label not in seen:
                seen.add(label)
                chosen.append(label)
        return chosen
    return rng.sample([label for label in range(num_labels) if label not in positives], k)


def _documents(path: Path, args: argparse.Namespace) -> Iterator[tuple[int, str, list[str]]]:
    """(line number, text, label names) per document, from JSON Lines or TSV."""
    fmt = args.format
    for line_number, line in read_lines(path):
        if not line.strip():
            continue
        if fmt == "auto":
            fmt = "jsonl" if line.lstrip().startswith("{") else "tsv"
        if fmt == "jsonl":
            yield line_number, *_json_document(line, path, line_number, args)
        else:
            text, sep, labels = line.rpartition("\t")
            if not sep:
                raise ClientError(
                    f"{path}, line {line_number}: no tab; TSV documents are text<TAB>label1{args.label_separator}"
                    "label2 (or pass --format jsonl)"
                )
            names = [name.strip() for name in labels.split(args.label_separator) if name.strip()]
            yield line_number, text, names


def _json_document(line: str, path: Path, line_number: int, args: argparse.Namespace) -> tuple[str, list[str]]:
    where = f"{path}, line {line_number}"
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as err:
        raise ClientError(f"{where}: not valid JSON ({err})") from err
    if not isinstance(record, dict):
        raise ClientError(f'{where}: must be a JSON object like {{"text": "...", "labels": ["a"]}}')
    text = record.get(args.text_key)
    labels = record.get(args.labels_key, [])
    if not isinstance(text, str):
        raise ClientError(f'{where}: "{args.text_key}" must be a string (choose the key with --text-key)')
    if isinstance(labels, str | int):
        labels = [labels]
    if not isinstance(labels, list) or not all(isinstance(name, str | int) for name in labels):
        raise ClientError(f'{where}: "{args.labels_key}" must be a list of label names (see --labels-key)')
    return text, [str(name) for name in labels]


def _label_vocab(args: argparse.Namespace) -> Vocab:
    if args.label_vocab:
        vocab = Vocab.read(args.label_vocab, option="--label-vocab")
        logger.info("Using %s: %d labels", args.label_vocab, vocab.size)
        return vocab
    counts: Counter[str] = Counter()
    for _, _, names in _documents(args.train, args):
        counts.update(set(names))
    names = sorted(name for name, n in counts.items() if n >= args.min_label_count)
    if not names:
        raise ClientError(
            f"{args.train}: no label occurs in at least --min-label-count {args.min_label_count} documents"
        )
    ids = {name: i for i, name in enumerate(names)}
    write_json(args.output_dir / "label_vocab.json", ids)
    logger.info("Built a label vocabulary of %d labels (of %d seen) from %s", len(ids), len(counts), args.train)
    return Vocab(ids=ids, unk_id=None)


def _candidates_path(args: argparse.Namespace) -> tuple[str, Path] | None:
    if not args.candidates:
        return None
    split = "test" if args.test else "validation" if args.validation else None
    if split is None:
        raise ClientError("--candidates describes the --test (or --validation) documents: give one of them")
    path = args.candidates if args.candidates.is_absolute() else args.output_dir / args.candidates
    return split, path
