"""`prepare ratings`: user,item,rating[,timestamp] rows -> {"in0": [user], "in1": [item], "label": ...}.

Mirrors the MovieLens notebook: one user id in "in0", one item id in "in1", the rating as a
regression label, or 1/0 by a threshold for classification. Raw integer ids are kept by default
(vocab size = largest id + 1, as the notebook's enc0_vocab_size=944 for users 1..943); --remap
gives dense ids 0..n-1 and writes user_vocab.json / item_vocab.json (raw id -> dense id).
--item-raters N follows each item id with tokens for its raters and their ratings (item_raters.py).

The rows are held in compact arrays (about 32 bytes each: ~800 MB for MovieLens-25M) because a
split needs all of them; the raw user and item strings are kept once each.
"""

from __future__ import annotations

import argparse
import logging
import math
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from object2vec.errors import ClientError
from object2vec.prepare.candidates import add_candidates_option, candidates_path, raw_id, write_candidates
from object2vec.prepare.io import JsonlWriter, check_outputs, pair, read_lines, read_rows, write_json
from object2vec.prepare.item_raters import MAX_ITEM_RATERS, ItemRaters, build_item_raters
from object2vec.prepare.options import add_output_options, add_seed, fraction, non_negative_int, positive_int

logger = logging.getLogger(__name__)

DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|", "whitespace": "whitespace"}
AUTO_DELIMITERS = ("\t", "::", ",", ";", "|")  # tried in this order on the first line; else whitespace
SPLITS = ("train", "validation", "test")
RATER_TOKENS_WARNING = 500_000_000  # --item-raters: 4 GB of token ids in the trainer, ~3 GB of JSON


@dataclass
class Ratings:
    """All rows: per-row user/item indexes into the token lists (first-seen order), rating, timestamp."""

    users: list[str]
    items: list[str]
    user_index: np.ndarray  # (N,) int64
    item_index: np.ndarray  # (N,) int64
    rating: np.ndarray  # (N,) float64
    timestamp: np.ndarray | None  # (N,) float64

    def __len__(self) -> int:
        return int(self.rating.shape[0])


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ratings",
        help="user,item,rating[,timestamp] rows -> user/item pairs for recommendation",
        description="Turn a CSV/TSV of user, item, rating[, timestamp] rows into Object2Vec pairs "
        '{"in0": [user_id], "in1": [item_id], "label": rating or 0/1}, split into train/validation/test '
        "JSON Lines files, and print the hyperparameters (vocab sizes, max_seq_len=1, output layer) as JSON. "
        "Reads MovieLens u.data, ratings.csv, ratings.dat and recbole .inter files (header "
        "'user_id:token<TAB>item_id:token<TAB>rating:float<TAB>timestamp:float').",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("input", type=Path, help="the ratings file (plain or .gz)")
    fmt = parser.add_argument_group("input format")
    fmt.add_argument(
        "--delimiter",
        default="auto",
        help="field separator: auto (tab, '::', comma, semicolon or pipe, whichever the first line has, else "
        "whitespace), tab, comma, semicolon, pipe, whitespace, or any literal string",
    )
    fmt.add_argument(
        "--header",
        choices=("auto", "yes", "no"),
        default="auto",
        help="whether the first line names the columns; auto: yes when its rating field is not a number",
    )
    fmt.add_argument("--user-column", default="0", help="user column: 0-based index or header name")
    fmt.add_argument("--item-column", default="1", help="item column: 0-based index or header name")
    fmt.add_argument("--rating-column", default="2", help="rating column: 0-based index or header name")
    fmt.add_argument(
        "--timestamp-column",
        default="auto",
        help="timestamp column (orders --split per-user): index, header name, 'none', or auto (column 3 "
        "when the rows have a fourth field)",
    )
    task = parser.add_argument_group("labels and ids")
    task.add_argument(
        "--task",
        choices=("regression", "classification"),
        default="regression",
        help="regression: label = the rating (output_layer=mean_squared_error); classification: label = "
        "1 if rating >= --threshold else 0 (output_layer=softmax, num_classes=2)",
    )
    task.add_argument("--threshold", type=float, help="classification cut-off, required with --task classification")
    task.add_argument(
        "--remap",
        action="store_true",
        help="map users and items to dense ids 0..n-1 (sorted by raw id) and write user_vocab.json and "
        "item_vocab.json; without it raw ids must be integers >= 0 and are kept as they are",
    )
    task.add_argument(
        "--item-raters",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="describe each item by its id followed by up to N of its training ratings, one token per "
        "(user, rating) (a seeded random N when it has more; a training pair's own user left out): "
        f"in1 = [item, rater tokens...], enc1_vocab_size grows by users x rating levels (0-{MAX_ITEM_RATERS}; "
        "0: the id alone). On MovieLens-100k better than the ids alone for both tasks, at about 4x the "
        "training time (README, Preparing data)",
    )
    split = parser.add_argument_group("split")
    split.add_argument(
        "--split",
        choices=("random", "per-user", "none"),
        default="random",
        help="random: a seeded shuffle cut by --test-fraction/--validation-fraction; per-user: each user's "
        "latest --test-per-user ratings (random ones without timestamps) go to test, the next latest "
        "--validation-per-user to validation (users with too few ratings stay in train); none: all to train",
    )
    split.add_argument("--test-fraction", type=fraction, default=0.2, help="share of all rows for test (random)")
    split.add_argument(
        "--validation-fraction", type=fraction, default=0.0, help="share of all rows for validation (random)"
    )
    split.add_argument("--test-per-user", type=positive_int, default=1, help="test ratings per user (per-user)")
    split.add_argument(
        "--validation-per-user", type=non_negative_int, default=0, help="validation ratings per user (per-user)"
    )
    add_seed(split, "the split and the order of the output rows")
    add_candidates_option(parser, "every item (id: the raw item id)")
    add_output_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.task == "classification" and args.threshold is None:
        raise ClientError("--task classification needs --threshold, e.g. --threshold 4 for 'rating >= 4'")
    if args.split == "random" and args.test_fraction + args.validation_fraction >= 1:
        raise ClientError("--test-fraction plus --validation-fraction must be below 1 to leave training rows")
    if args.item_raters > MAX_ITEM_RATERS:
        raise ClientError(f"--item-raters {args.item_raters}: at most {MAX_ITEM_RATERS} raters per item")
    names = _output_names(args)
    check_outputs([args.output_dir / name for name in names] + candidates_path(args), args.overwrite)

    ratings = read_ratings(args)
    if not len(ratings):
        raise ClientError(f"{args.input}: holds no rating rows")
    user_ids, user_vocab = _assign_ids(ratings.users, args.remap, "user", args)
    item_ids, item_vocab = _assign_ids(ratings.items, args.remap, "item", args)
    for what, ids, distinct in (("user", user_ids, ratings.users), ("item", item_ids, ratings.items)):
        if not args.remap and int(ids.max()) + 1 > 10 * len(distinct) + 1000:
            logger.warning(
                "The largest %s id is %d for %d distinct %ss: the embedding table will be mostly unused; "
                "consider --remap",
                what,
                int(ids.max()),
                len(distinct),
                what,
            )
    rng = np.random.default_rng(args.seed)
    splits = split_rows(ratings, args, rng)

    if args.task == "classification":
        labels: list[Any] = (ratings.rating >= args.threshold).astype(np.int64).tolist()
    else:
        labels = ratings.rating.tolist()
    user_of_row, item_of_row = user_ids[ratings.user_index], item_ids[ratings.item_index]
    raters = None
    if args.item_raters:
        train_rows = splits["train"]
        raters = build_item_raters(
            item_of_row[train_rows],
            user_of_row[train_rows],
            ratings.rating[train_rows],
            item_vocab_size=int(item_ids.max()) + 1,
            user_vocab_size=int(user_ids.max()) + 1,
            limit=args.item_raters,
            rng=rng,
        )
        _warn_of_rater_tokens(raters, item_of_row)
    users, items = user_of_row.tolist(), item_of_row.tolist()
    counts: dict[str, int] = {}
    rater_tokens = 0
    for name, rows in splits.items():
        if name != "train" and not len(rows):
            continue
        with JsonlWriter(args.output_dir / f"{name}.jsonl") as writer:
            for row in rows.tolist():
                if raters is None:
                    in1 = [items[row]]
                else:  # a training pair's own rating must not be in its input
                    in1 = raters.sequence(items[row], users[row] if name == "train" else None)
                    rater_tokens += len(in1) - 1
                writer.write(pair([users[row]], in1, labels[row]))
        counts[f"{name}.jsonl"] = writer.count
    if raters is not None:
        logger.info("--item-raters: %d rater tokens written, %.1f per pair", rater_tokens, rater_tokens / len(users))
    if args.write_candidates:
        candidates = _item_candidates(ratings.items, item_ids, raters)
        counts["candidates.jsonl"] = write_candidates(args.output_dir, candidates)
    if args.remap:
        _write_vocab(args.output_dir / "user_vocab.json", user_vocab)
        _write_vocab(args.output_dir / "item_vocab.json", item_vocab)

    hyperparameters: dict[str, Any] = {
        # enc1 has its own vocabulary, so it needs its own network (the default enc1_network=enc0
        # would share enc0's); pooled_embedding is what the MovieLens notebook used for one-id inputs.
        "enc0_network": "pooled_embedding",
        "enc1_network": "pooled_embedding",
        "enc0_vocab_size": int(user_ids.max()) + 1,
        "enc1_vocab_size": int(item_ids.max()) + 1,
        "enc0_max_seq_len": 1,
        "enc1_max_seq_len": 1,
    }
    if raters is not None:
        hyperparameters.update(enc1_vocab_size=raters.vocab_size, enc1_max_seq_len=raters.max_seq_len)
    report: dict[str, Any] = {
        "command": "ratings",
        "output_dir": str(args.output_dir),
        "outputs": counts,
        "users": len(ratings.users),
        "items": len(ratings.items),
        "ratings": len(ratings),
        "rating_range": [float(ratings.rating.min()), float(ratings.rating.max())],
    }
    if args.task == "classification":
        hyperparameters.update(output_layer="softmax", num_classes=2)
        report["positive_fraction"] = round(float(np.mean(ratings.rating >= args.threshold)), 6)
    else:
        hyperparameters["output_layer"] = "mean_squared_error"
    if raters is not None:
        report["item_raters"] = {"limit": args.item_raters, **raters.describe()}
    if args.remap:
        report["vocab_files"] = {"in0": "user_vocab.json", "in1": "item_vocab.json"}
    report["hyperparameters"] = hyperparameters
    return report


def _warn_of_rater_tokens(raters: ItemRaters, item_of_row: np.ndarray) -> None:
    """Before writing: the files and the trainer's memory grow with the rater tokens the pairs carry."""
    lengths = np.zeros(int(item_of_row.max()) + 1, dtype=np.int64)
    for item, tokens in raters.tokens.items():
        lengths[item] = len(tokens)
    most = int(lengths[item_of_row].sum())  # a training pair's own user, when a rater, is left out
    if most > RATER_TOKENS_WARNING:
        logger.warning(
            "--item-raters: the pairs will hold up to %d rater tokens, about %.0f GB of JSON and %.0f GB of "
            "the trainer's memory (8 bytes a token); a smaller --item-raters keeps them in bounds",
            most,
            most * 6 / 1e9,
            most * 8 / 1e9,
        )


def _item_candidates(
    items: list[str], item_ids: np.ndarray, raters: ItemRaters | None
) -> Iterator[tuple[str | int, list[int]]]:
    """Every item once, by id: its raw id is what top-k answers name; with raters, all of them."""
    for index in np.argsort(item_ids, kind="stable").tolist():
        item = int(item_ids[index])
        yield raw_id(items[index]), [item] if raters is None else raters.sequence(item)


def read_ratings(args: argparse.Namespace) -> Ratings:
    """One streaming pass over the file into compact arrays."""
    delimiter = _delimiter(args.input, args.delimiter)
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    user_index, item_index = array("q"), array("q")
    rating, timestamp = array("d"), array("d")
    columns: tuple[int, int, int, int | None] | None = None
    for line_number, fields in read_rows(args.input, delimiter):
        if columns is None:
            header = _is_header(fields, args)
            columns = _columns(fields, header, args)
            logger.info(
                "%s: delimiter %r, %s header, columns user=%d item=%d rating=%d timestamp=%s",
                args.input,
                delimiter,
                "a" if header else "no",
                *columns[:3],
                "none" if columns[3] is None else columns[3],
            )
            if header:
                continue
        user_column, item_column, rating_column, time_column = columns
        needed = max(c for c in columns if c is not None) + 1
        if len(fields) < needed:
            raise ClientError(
                f"{args.input}, line {line_number}: {len(fields)} field(s), but column {needed - 1} is needed; "
                "check --delimiter and the column options"
            )
        user_index.append(users.setdefault(fields[user_column].strip(), len(users)))
        item_index.append(items.setdefault(fields[item_column].strip(), len(items)))
        rating.append(_number(fields[rating_column], args.input, line_number, "rating"))
        if time_column is not None:
            timestamp.append(_number(fields[time_column], args.input, line_number, "timestamp"))
    has_time = columns is not None and columns[3] is not None
    return Ratings(
        users=list(users),
        items=list(items),
        user_index=np.frombuffer(user_index, dtype=np.int64) if user_index else np.zeros(0, np.int64),
        item_index=np.frombuffer(item_index, dtype=np.int64) if item_index else np.zeros(0, np.int64),
        rating=np.frombuffer(rating, dtype=np.float64) if rating else np.zeros(0),
        timestamp=np.frombuffer(timestamp, dtype=np.float64) if has_time and timestamp else None,
    )


def split_rows(ratings: Ratings, args: argparse.Namespace, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Row indexes per split, each in a seeded random order (the trainer shuffles again per epoch)."""
    n = len(ratings)
    if args.split == "none":
        return {"train": rng.permutation(n)}
    if args.split == "random":
        order = rng.permutation(n)
        n_test = round(n * args.test_fraction)
        n_validation = round(n * args.validation_fraction)
        return {
            "train": order[n_test + n_validation :],
            "validation": order[n_test : n_test + n_validation],
            "test": order[:n_test],
        }
    # per-user: sort rows by user, then time (or a random key), then file order; count from the end.
    key = ratings.timestamp if ratings.timestamp is not None else rng.random(n)
    order = np.lexsort((np.arange(n), key, ratings.user_index))
    sorted_users = ratings.user_index[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    sizes = np.diff(np.r_[starts, n])
    group_end = np.repeat(starts + sizes, sizes)
    from_end = group_end - np.arange(n) - 1  # 0 for each user's latest rating
    held = args.test_per_user + args.validation_per_user
    eligible = np.repeat(sizes > held, sizes)  # at least one rating left for training
    is_test = eligible & (from_end < args.test_per_user)
    is_validation = eligible & ~is_test & (from_end < held)
    splits = {
        "train": order[~(is_test | is_validation)],
        "validation": order[is_validation],
        "test": order[is_test],
    }
    kept = int(np.sum(sizes <= held))
    if kept:
        logger.info("%d user(s) with at most %d ratings keep them all in train", kept, held)
    return {name: rows[rng.permutation(len(rows))] for name, rows in splits.items()}


def _output_names(args: argparse.Namespace) -> list[str]:
    names = ["train.jsonl"]
    if args.split == "random":
        names += ["validation.jsonl"] if args.validation_fraction else []
        names += ["test.jsonl"] if args.test_fraction else []
    elif args.split == "per-user":
        names += ["validation.jsonl"] if args.validation_per_user else []
        names += ["test.jsonl"]
    if args.remap:
        names += ["user_vocab.json", "item_vocab.json"]
    return names


def _delimiter(path: Path, option: str) -> str:
    if option != "auto":
        return DELIMITER_NAMES.get(option, option)
    for _, line in read_lines(path):
        if line.strip():
            return next((d for d in AUTO_DELIMITERS if d in line), "whitespace")
    raise ClientError(f"{path}: is empty")


def _is_header(fields: list[str], args: argparse.Namespace) -> bool:
    if args.header != "auto":
        return args.header == "yes"
    column = args.rating_column
    if not column.isdigit():
        return True  # columns are named, so the first line must hold the names
    index = int(column)
    if index >= len(fields):
        return False  # reported as a short row
    try:
        float(fields[index])
    except ValueError:
        return True
    return False


def _columns(fields: list[str], header: bool, args: argparse.Namespace) -> tuple[int, int, int, int | None]:
    def find(option: str, value: str) -> int:
        if value.isdigit():
            return int(value)
        if not header:
            raise ClientError(f"--{option} {value!r} names a column, but {args.input} has no header line")
        names = [field.strip() for field in fields]
        for i, name in enumerate(names):
            if value in (name, name.split(":", 1)[0]):  # recbole writes "user_id:token"
                return i
        raise ClientError(f"--{option} {value!r}: {args.input} has no such column; its header is {names}")

    user = find("user-column", args.user_column)
    item = find("item-column", args.item_column)
    rating = find("rating-column", args.rating_column)
    time: int | None
    if args.timestamp_column == "none":
        time = None
    elif args.timestamp_column == "auto":
        time = 3 if len(fields) > 3 and 3 not in (user, item, rating) else None
    else:
        time = find("timestamp-column", args.timestamp_column)
    return user, item, rating, time


def _number(text: str, path: Path, line_number: int, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ClientError(
            f"{path}, line {line_number}: {what} {text.strip()!r} is not a finite number; check the "
            f"--{what}-column and --delimiter options"
        )
    return value


def _assign_ids(tokens: list[str], remap: bool, what: str, args: argparse.Namespace) -> tuple[np.ndarray, dict]:
    """Per token (first-seen order) its id; with --remap also the raw -> dense map, sorted by raw id."""
    numeric = all(token.isdigit() for token in tokens)
    if not remap:
        if not numeric:
            bad = next(token for token in tokens if not token.isdigit())
            raise ClientError(
                f"{args.input}: {what} id {bad!r} is not an integer >= 0; pass --remap to map {what}s to dense ids"
            )
        return np.asarray([int(token) for token in tokens], dtype=np.int64), {}
    ranked = sorted(tokens, key=int) if numeric else sorted(tokens)
    vocab = {token: i for i, token in enumerate(ranked)}
    return np.asarray([vocab[token] for token in tokens], dtype=np.int64), vocab


def _write_vocab(path: Path, vocab: dict[str, int]) -> None:
    write_json(path, vocab)
