"""Reuters-21578 ModApte, 90 categories: Precision@1 and micro-F1 vs fastText one-vs-all.

Data: reuters21578/*.sgm via bench_data.py (never copied into the project). ModApte: LEWISSPLIT
TRAIN/TEST with TOPICS="YES"; the 90 categories with at least one training and one test document;
documents with none of them are dropped (7,769 train / 3,019 test). A seeded 10% of the training
documents is held out as the validation split: it decides our early stopping and, for both us and
fastText, the micro-F1 decision rule (a probability threshold, and whether the top label is always
predicted). The test split is used once, for the reported numbers.

Ours: `prepare multilabel` -> (document, label) pairs (every true label, positives only) and the
test candidate file -> `train`, which draws the negatives (labels a document does not have) afresh
each epoch (negative_sampling_rate) -> the predictor scores every (document, label) pair. Every
encoder is trained and reported, each with the settings chosen on validation.
fastText: `fasttext supervised -loss one-vs-all` on the same training documents and tokens, then
`predict-prob` for every label.

    apt-get install -y fasttext               # the peer (Debian package)
    PYTHONPATH=container python benchmarks/reuters.py [--cpus 2] [--json-out r.json]
    PYTHONPATH=container python benchmarks/reuters.py --quick   # smoke test on a slice
"""

from __future__ import annotations

import argparse
import html
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_data  # noqa: E402
import common  # noqa: E402

from object2vec.prepare.text import Tokenizer  # noqa: E402

P_AT_1_TARGET = 0.93  # issue 10 asks >= 0.90; the first release's 0.93 is kept (the stricter one)
MICRO_F1_TARGET = 0.84  # and at least fastText's
VALIDATION_FRACTION = 0.1
ENCODERS = ("pooled_embedding", "hcnn", "bilstm")

BASE_HP = {
    "enc0_max_seq_len": 256,
    "enc0_token_embedding_dim": 128,
    "enc1_network": "pooled_embedding",
    "enc1_max_seq_len": 1,
    "enc1_token_embedding_dim": 128,
    "enc_dim": 128,
    "mlp_layers": 1,
    "mlp_dim": 256,
    "mlp_activation": "relu",
    "dropout": 0.1,
    "optimizer": "adam",
    # Chosen on validation for every encoder (P@1 / micro-F1 at 0.002 against 0.005): pooled
    # 0.9009 / 0.8394 against 0.9035 / 0.8292, hcnn 0.9369 / 0.8790 against 0.9254 / 0.8493, bilstm
    # 0.9266 / 0.8610 against 0.9073 / 0.8435 (a grouped batch holds only ~21 documents, so the
    # encoders' gradients are noisier than with shuffled pairs).
    "learning_rate": 0.002,
    "mini_batch_size": 1024,
    # ~60 negatives per document (1.24 labels per document): drawn by the trainer, fresh each epoch
    "negative_sampling_rate": 48,
    # Each document beside its 48 negatives, encoded once per batch for all of them: chosen on
    # validation for every encoder (pooled P@1 0.9035 / micro-F1 0.8292 grouped, 0.8970 / 0.8295
    # shuffled), and what makes hcnn and bilstm trainable here (an hcnn epoch: ~30 s instead of
    # ~45 minutes on one core).
    "negative_sampling_grouped": True,
    "epochs": 15,
    "early_stopping_patience": 2,
    "early_stopping_tolerance": 0.0005,
}
# Settings of each encoder, chosen on validation (see results_notes.md).
ENCODER_HP: dict[str, dict[str, object]] = {
    # the attention pool: validation P@1 / micro-F1 0.9459 / 0.8793 against 0.9009 / 0.8394 for the mean
    "pooled_embedding": {"enc0_network": "pooled_embedding", "enc0_pooling": "attention"},
    "hcnn": {"enc0_network": "hcnn", "enc0_layers": 2, "enc0_cnn_filter_width": 3},
    "bilstm": {"enc0_network": "bilstm", "enc0_layers": 1},
}


def model_hyperparameters(encoder: str, vocab: int, labels: int, **changes: object) -> dict[str, object]:
    """The chosen model of `encoder` for a vocabulary of `vocab` tokens and `labels` labels: what
    the speed benchmarks of this use case (grouped_negatives.py, repeated_pairs.py) build."""
    return {**BASE_HP, **ENCODER_HP[encoder], "enc0_vocab_size": vocab, "enc1_vocab_size": labels, **changes}


QUICK_HP = {
    "epochs": 2,
    "enc_dim": 16,
    "enc0_token_embedding_dim": 16,
    "enc1_token_embedding_dim": 16,
    "mlp_dim": 16,
    "negative_sampling_rate": 5,
    "enc0_max_seq_len": 64,
}
FASTTEXT_ARGS = ["-loss", "one-vs-all", "-epoch", "25", "-lr", "0.5", "-wordNgrams", "2", "-dim", "100", "-seed", "0"]
FASTTEXT_QUICK = ["-epoch", "5", "-bucket", "100000"]  # the smoke test: a small hash table initialises fast

DOC = re.compile(r"<REUTERS (.*?)>(.*?)</REUTERS>", re.S)
ATTR = re.compile(r'(\w+)="([^"]*)"')
TOPICS = re.compile(r"<TOPICS>(.*?)</TOPICS>", re.S)
D = re.compile(r"<D>(.*?)</D>")
TITLE = re.compile(r"<TITLE>(.*?)</TITLE>", re.S)
BODY = re.compile(r"<BODY>(.*?)</BODY>", re.S)
TEXT = re.compile(r"<TEXT[^>]*>(.*?)</TEXT>", re.S)
TAG = re.compile(r"<[^>]+>")


def read_modapte(source: Path) -> tuple[list[dict], list[dict]]:
    """(train, test) documents {"text", "labels"} of ModApte, restricted to the 90 categories."""
    split: dict[str, list[dict]] = {"TRAIN": [], "TEST": []}
    for path in sorted(source.glob("reut2-*.sgm")):
        raw = path.read_bytes().decode("latin-1")
        for attributes, body in DOC.findall(raw):
            attrs = dict(ATTR.findall(attributes))
            if attrs.get("TOPICS") != "YES" or attrs.get("LEWISSPLIT") not in split:
                continue
            topics = TOPICS.search(body)
            labels = D.findall(topics.group(1)) if topics else []
            parts = [m.group(1) for m in (TITLE.search(body), BODY.search(body)) if m]
            if not BODY.search(body):  # TYPE="UNPROC" documents: the text is right inside <TEXT>
                inner = TEXT.search(body)
                parts = [TAG.sub(" ", inner.group(1))] if inner else parts
            text = html.unescape(" ".join(parts))
            text = re.sub(r"[\x00-\x1f]+", " ", text).strip()
            split[attrs["LEWISSPLIT"]].append({"text": text, "labels": labels, "id": attrs.get("NEWID")})
    train_labels = {label for doc in split["TRAIN"] for label in doc["labels"]}
    test_labels = {label for doc in split["TEST"] for label in doc["labels"]}
    keep = train_labels & test_labels
    out = []
    for docs in (split["TRAIN"], split["TEST"]):
        kept = []
        for doc in docs:
            labels = sorted(set(doc["labels"]) & keep)
            if labels:
                kept.append({"text": doc["text"], "labels": labels})
        out.append(kept)
    return out[0], out[1]


def tokens(text: str) -> list[str]:
    return Tokenizer()(text)  # the tokens `prepare` gives our model


# ---------------------------------------------------------------------------------------------
# Metrics on a (documents x labels) probability matrix.


def precision_at_1(scores: np.ndarray, truth: np.ndarray) -> float:
    return float(truth[np.arange(len(scores)), scores.argmax(axis=1)].mean())


def decide(scores: np.ndarray, threshold: float, force_top: bool) -> np.ndarray:
    chosen = scores >= threshold
    if force_top:
        chosen[np.arange(len(scores)), scores.argmax(axis=1)] = True
    return chosen


def micro_f1(chosen: np.ndarray, truth: np.ndarray) -> float:
    tp = float((chosen & truth).sum())
    predicted, actual = float(chosen.sum()), float(truth.sum())
    return 0.0 if tp == 0 else 2 * tp / (predicted + actual)


def choose_rule(scores: np.ndarray, truth: np.ndarray) -> tuple[float, bool, float]:
    """The (threshold, force_top) with the best validation micro-F1, and that F1."""
    best = (0.5, False, -1.0)
    for force_top in (False, True):
        for threshold in np.linspace(0.02, 0.98, 49):
            f1 = micro_f1(decide(scores, float(threshold), force_top), truth)
            if f1 > best[2]:
                best = (float(threshold), force_top, f1)
    return best


# ---------------------------------------------------------------------------------------------
# Ours


def score_pairs(predictor, docs: list[list[int]], num_labels: int) -> np.ndarray:
    """P(label applies) for every (document, label): (documents, labels)."""
    instances = [{"in0": ids, "in1": [label]} for ids in docs for label in range(num_labels)]
    return common.predict(predictor, instances)[:, 1].reshape(len(docs), num_labels)


def validation_docs(path: Path, num_labels: int) -> tuple[list[list[int]], np.ndarray]:
    """validation.jsonl holds every label of every document, document-major (see prepare)."""
    records = common.read_jsonl(path)
    docs, truth = [], np.zeros((len(records) // num_labels, num_labels), dtype=bool)
    for index, record in enumerate(records):
        doc, label = divmod(index, num_labels)
        assert record["in1"] == [label], "validation.jsonl is not document-major"
        if label == 0:
            docs.append(record["in0"])
        truth[doc, label] = record["label"] == 1
    return docs, truth


def candidate_docs(path: Path, num_labels: int) -> tuple[list[list[int]], np.ndarray]:
    docs, rows = [], []
    for record in common.read_jsonl(path):
        assert record["candidates"] == list(range(num_labels))
        docs.append(record["in0"])
        row = np.zeros(num_labels, dtype=bool)
        row[record["true_labels"]] = True
        rows.append(row)
    return docs, np.array(rows)


# ---------------------------------------------------------------------------------------------
# fastText


def fasttext_line(doc: dict) -> str:
    return " ".join([*(f"__label__{label}" for label in doc["labels"]), *tokens(doc["text"])])


def fasttext_scores(binary: str, model: Path, docs: list[dict], labels: list[str], folder: Path) -> np.ndarray:
    path = folder / "fasttext_eval.txt"
    path.write_text("".join(" ".join(tokens(doc["text"])) + "\n" for doc in docs))
    result = subprocess.run(
        [binary, "predict-prob", str(model), str(path), str(len(labels)), "-1"],
        capture_output=True,
        text=True,
        check=True,
    )
    index = {label: i for i, label in enumerate(labels)}
    scores = np.zeros((len(docs), len(labels)))
    lines = result.stdout.splitlines()
    assert len(lines) == len(docs), (len(lines), len(docs))
    for row, line in enumerate(lines):
        fields = line.split()
        for name, probability in zip(fields[::2], fields[1::2], strict=True):
            label = name.removeprefix("__label__")
            if label in index:
                scores[row, index[label]] = float(probability)
    return scores


def run_fasttext(
    train: list[dict], validation: list[dict], test: list[dict], labels: list[str], folder: Path, cpus: int, quick: bool
) -> dict | None:
    binary = shutil.which("fasttext")
    if binary is None or common.hidden("fasttext"):
        return None
    path = folder / "fasttext_train.txt"
    path.write_text("".join(fasttext_line(doc) + "\n" for doc in train))
    model = folder / "fasttext_model"
    options = [*FASTTEXT_ARGS, "-thread", str(cpus), *(FASTTEXT_QUICK if quick else [])]
    command = [binary, "supervised", "-input", str(path), "-output", str(model), *options]
    with common.timer() as t:
        subprocess.run(command, capture_output=True, text=True, check=True)
    bin_path = model.with_suffix(".bin")
    return {
        "seconds": t[0],
        "validation": fasttext_scores(binary, bin_path, validation, labels, folder),
        "test": fasttext_scores(binary, bin_path, test, labels, folder),
        "command": " ".join(["fasttext", "supervised", *options]),
    }


def truth_matrix(docs: list[dict], labels: list[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    truth = np.zeros((len(docs), len(labels)), dtype=bool)
    for row, doc in enumerate(docs):
        truth[row, [index[label] for label in doc["labels"]]] = True
    return truth


def partial(path: Path | None) -> Path | None:
    """Where the report of the encoders finished so far goes (beside --json-out), or None."""
    return None if path is None else path.with_name(path.stem + ".partial" + path.suffix)


def train_and_score(
    encoder: str,
    hp: dict,
    channels: dict,
    root: Path,
    data: Path,
    num_labels: int,
    counts: tuple[int, int],
    dev_only: bool = False,
) -> dict:
    """Train one encoder; its validation-chosen decision rule and test metrics (validation only
    with dev_only: the test documents are not scored)."""
    base = common.make_opt_ml(root / f"model-{encoder}", hp, channels)
    print(f"[reuters] training {encoder} ...", file=sys.stderr, flush=True)
    run = common.train(base, timeout=common.LONG_TRAIN_TIMEOUT)
    predictor = common.load_predictor(run.model_dir)
    val_docs, val_truth = validation_docs(data / "validation.jsonl", num_labels)
    test_docs, test_truth = candidate_docs(data / "test_candidates.jsonl", num_labels)
    if (len(val_docs), len(test_docs)) != counts:
        sys.exit(f"prepare kept {len(val_docs)}/{len(test_docs)} of {counts[0]}/{counts[1]} documents")
    with common.timer() as t_predict:
        val_scores = score_pairs(predictor, val_docs, num_labels)
        test_scores = None if dev_only else score_pairs(predictor, test_docs, num_labels)
    threshold, force_top, val_f1 = choose_rule(val_scores, val_truth)
    if test_scores is None:
        return {
            "run": run,
            "rule": {"threshold": threshold, "force_top": force_top, "validation_micro_f1": val_f1},
            "validation_p_at_1": precision_at_1(val_scores, val_truth),
            "predict_seconds": t_predict[0],
        }
    return {
        "run": run,
        "test_truth": test_truth,
        "p_at_1": precision_at_1(test_scores, test_truth),
        "micro_f1": micro_f1(decide(test_scores, threshold, force_top), test_truth),
        "rule": {"threshold": threshold, "force_top": force_top, "validation_micro_f1": val_f1},
        "validation_p_at_1": precision_at_1(val_scores, val_truth),
        "predict_seconds": t_predict[0],
        "test_docs": len(test_docs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.common_arguments(parser)
    parser.add_argument("--slice", type=int, default=300, help="train documents kept in --quick mode (default 300)")
    parser.add_argument("--source", type=Path, help="the .sgm folder (default: found by bench_data.py)")
    parser.add_argument(
        "--encoders",
        default=",".join(ENCODERS),
        help=f"comma-separated encoders to train (default {','.join(ENCODERS)})",
    )
    parser.add_argument(
        "--hp",
        type=json.loads,
        default={},
        help="JSON object of settings over the chosen ones, e.g. '{\"negative_sampling_rate\": 89}' (noted in rows)",
    )
    parser.add_argument(
        "--dev-only",
        action="store_true",
        help="score the validation documents only, for choosing settings: no test scores, no rows, no peer",
    )
    args = parser.parse_args()
    encoders = [name for name in args.encoders.split(",") if name]
    unknown = sorted(set(encoders) - set(ENCODERS))
    if unknown:
        sys.exit(f"--encoders: unknown {', '.join(unknown)}; choose from {', '.join(ENCODERS)}")
    args.source = args.source or bench_data.require("reuters", download=args.download)
    cpus = common.use_cpus(args.cpus)
    root = common.work_dir(args.work_dir, "reuters")
    load = common.machine_load()
    train_all, test = read_modapte(args.source)
    shuffled = list(train_all)
    random.Random(0).shuffle(shuffled)
    cut = int(round(len(shuffled) * VALIDATION_FRACTION))
    validation, train = shuffled[:cut], shuffled[cut:]
    if args.quick:
        train, validation, test = train[: args.slice], validation[: args.slice // 5], test[: args.slice // 5]
    labels = sorted({label for doc in train_all for label in doc["labels"]} & {x for d in test for x in d["labels"]})
    if args.quick:
        labels = sorted({label for doc in train + validation + test for label in doc["labels"]})
    raw = root / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, docs in (("train", train), ("validation", validation), ("test", test)):
        common.write_jsonl(raw / f"{name}.jsonl", [{"text": d["text"], "labels": d["labels"]} for d in docs])
    (raw / "label_vocab.json").write_text(json.dumps({label: i for i, label in enumerate(labels)}))
    data = root / "data"
    report = common.prepare(
        "multilabel",
        *("--train", raw / "train.jsonl", "--validation", raw / "validation.jsonl", "--test", raw / "test.jsonl"),
        *("--label-vocab", raw / "label_vocab.json", "--seed", "0"),
        *("--candidates", "test_candidates.jsonl", "--output-dir", data, "--overwrite"),
    )
    channels = {"train": [data / "train.jsonl"], "validation": [data / "validation.jsonl"]}
    details: dict = {
        "documents": {"train": len(train), "validation": len(validation), "test": len(test)},
        "labels": len(labels),
        "pairs": report["outputs"],
        "train_file_mb": round((data / "train.jsonl").stat().st_size / 1e6, 1),
        "cpus": cpus,
        "load_before": load,
        "ours": {},
    }
    args.no_peer = args.no_peer or args.dev_only
    peer = None if args.no_peer else run_fasttext(train, validation, test, labels, root, cpus, args.quick)
    note = "skipped" if args.no_peer else common.NOT_INSTALLED
    peer_metrics = None
    rows, curves = [], {}
    for encoder in encoders:
        hp = {**report["hyperparameters"], **BASE_HP, **ENCODER_HP[encoder], **(QUICK_HP if args.quick else {})}
        hp.update(args.hp)
        hp["enc1_vocab_size"] = len(labels)
        counts = (len(validation), len(test))
        ours = train_and_score(encoder, hp, channels, root, data, len(labels), counts, args.dev_only)
        run = ours.pop("run")
        if args.dev_only:
            rule = ours["rule"]
            print(
                f"[reuters] {encoder}: validation P@1 {ours['validation_p_at_1']:.4f}, micro-F1 "
                f"{rule['validation_micro_f1']:.4f} (p >= {rule['threshold']:.2f}); train {run.seconds:.0f} s, "
                f"best epoch {run.best_epoch()}, scoring {ours['predict_seconds']:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            continue
        test_truth = ours.pop("test_truth")
        ours.update({"hyperparameters": hp, "seconds": run.seconds, "best_epoch": run.best_epoch()})
        details["ours"][encoder] = ours
        rule = ours["rule"]
        p1 = common.Row(
            f"Reuters ModApte (90 cat.) Precision@1, {encoder}",
            "test P@1",
            ours["p_at_1"],
            run.seconds,
            "fastText one-vs-all",
            target=f">= {P_AT_1_TARGET}",
            notes=f"{ours['test_docs']} test docs x {len(labels)} labels scored in {ours['predict_seconds']:.1f} s"
            + (f"; settings {json.dumps(args.hp)}" if args.hp else ""),
        )
        p1.met, p1.missed_by = common.judge_at_least(ours["p_at_1"], P_AT_1_TARGET)
        f1 = common.Row(
            f"Reuters ModApte (90 cat.) micro-F1, {encoder}",
            "test micro-F1",
            ours["micro_f1"],
            run.seconds,
            "fastText one-vs-all",
            target=f">= {MICRO_F1_TARGET} and >= fastText's",
            notes=f"rule from validation: p >= {rule['threshold']:.2f}{' or top-1' if rule['force_top'] else ''}",
        )
        f1_target = MICRO_F1_TARGET
        if peer is None:
            p1.peer_note = f1.peer_note = note
        else:
            if peer_metrics is None:
                peer_rule = choose_rule(peer["validation"], truth_matrix(validation, labels))
                peer_metrics = {
                    "command": peer["command"],
                    "rule": peer_rule,
                    "p_at_1": precision_at_1(peer["test"], test_truth),
                    "micro_f1": micro_f1(decide(peer["test"], peer_rule[0], peer_rule[1]), test_truth),
                }
                details["fasttext"] = peer_metrics
            p1.peer_value, p1.peer_seconds = peer_metrics["p_at_1"], peer["seconds"]
            f1.peer_value, f1.peer_seconds = peer_metrics["micro_f1"], peer["seconds"]
            f1_target = max(MICRO_F1_TARGET, peer_metrics["micro_f1"])
        f1.met, f1.missed_by = common.judge_at_least(ours["micro_f1"], f1_target)
        rows += [p1, f1]
        curves[f"Reuters {encoder}"] = run.curves()
        # Written after every encoder: a run stopped for time keeps the encoders it finished.
        details["load_after"] = common.machine_load()
        report_so_far = common.Report(
            "reuters", rows, curves=curves, command=common.command_line("reuters.py"), details=details
        )
        for row in (p1, f1):
            print(row.line(), flush=True)
        report_so_far.write(args.json_out if encoder == encoders[-1] else partial(args.json_out), echo=False)
    if (stale := partial(args.json_out)) is not None:
        stale.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
