"""MovieLens-100k: rating regression (RMSE) vs Surprise SVD, binary "rating >= 4" accuracy, and a
2-D map of the learned movie embeddings coloured by genre. Both tasks twice: one id per movie, and each
movie described by its id and its raters (`prepare ratings --item-raters`).

Data: ml-100k.inter / ml-100k.item inside the recbole==1.2.1 wheel (where bench_data.py finds it).
Split: `prepare ratings --test-fraction 0.2 --validation-fraction 0.05 --seed 0`, i.e. a random
80/20 split with seed 0 whose 80% is cut into 75% train + 5% validation for our early stopping.
Surprise SVD (default settings, random_state 0) is fitted on the whole 80% (train + validation).

    pip install --no-deps recbole==1.2.1      # the data
    pip install scikit-surprise matplotlib    # the peer and the plot
    PYTHONPATH=container python benchmarks/movielens.py [--cpus 2] [--json-out r.json --plots-dir p/]
    PYTHONPATH=container python benchmarks/movielens.py --quick          # smoke test on a slice

Without recbole, --quick uses a small synthetic ratings file instead (so CI exercises the whole
pipeline); the full run needs recbole. Without scikit-surprise the peer columns say "not installed".
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_data  # noqa: E402
import common  # noqa: E402

# Our model. Chosen on the validation split (see RESULTS.md for what was tried).
REGRESSION_HP = {
    "enc0_token_embedding_dim": 64,
    "enc1_token_embedding_dim": 64,
    "enc_dim": 64,
    "comparator_list": "hadamard",  # with mlp_layers 0: a (biased) matrix factorisation
    "mlp_layers": 0,
    "weight_decay": 0.00005,
    # Dropout on the two embeddings (fifth round): validation MSE over seeds 0-5 0.8786 against 0.8829
    # without (5 of 6 seeds better); the binary model's validation accuracy 0.714 / 0.709 (seeds 0, 1)
    # against 0.708 / 0.702
    "dropout": 0.1,
    "optimizer": "adam",
    "learning_rate": 0.01,  # 5x the batch-256 rate for 8x the batch: as good on validation, 4x faster
    "mini_batch_size": 2048,
    "epochs": 40,  # a cap: early stopping ends the runs after about 20
    # The validation loss wanders by +-0.01: over seeds 0-4, patience 5 (the cap) kept epochs with a mean
    # validation MSE of 0.880 against 0.888 with patience 3, which stopped two seeds by epoch 12
    "early_stopping_patience": 5,
    "early_stopping_tolerance": 0.001,
    # The moving average of the weights over about 100 steps (eighth round): validation MSE over seeds 0-5
    # 0.8695 against 0.8779, every seed better (0.97: 0.8720, 0.995: 0.8790); the binary model's validation
    # accuracy unchanged (0.7135 both)
    "ema_decay": 0.99,
}
CLASSIFICATION_HP = {**REGRESSION_HP, "num_classes": 2}
# Each variant: `prepare ratings --item-raters N` (0: one id per item). "raters": each movie also described
# by up to N of its training ratings, one (user, rating) token each (ninth round): validation MSE / binary
# accuracy over seeds 0-2 with N = 50 / 100 / 200 / every rater 0.8583 / 0.7175, 0.8582 / 0.7195,
# 0.8572 / 0.7177, 0.8645 / 0.7184 (one run stopped early on a plateau), against 0.8694 / 0.7131 for the
# ids alone; 100 bounds the cost (an epoch about 4x the ids model's)
ITEM_RATERS = 100
# enc1_pooling=sqrt_n for the raters (ninth round, validation over seeds 0-5): MSE 0.8558 / accuracy 0.7220
# against 0.8587 / 0.7183 with the mean (every seed's accuracy higher), best epoch 17-20 instead of 25-33
VARIANTS = {"ids": (0, {}), "raters": (ITEM_RATERS, {"enc1_pooling": "sqrt_n"})}
QUICK_HP = {"epochs": 2, "enc_dim": 16, "enc0_token_embedding_dim": 16, "enc1_token_embedding_dim": 16}

RMSE_TARGET = 0.915  # issue 10 (was 0.92)
ACCURACY_TARGET = 0.73
TIME_FACTOR = 3.0  # the whole `train` subprocess, interpreter start included, against SVD's fit
# Genres drawn on the map, in priority order (a movie takes the first of its genres found here).
MAP_GENRES = ("Children's", "Horror", "Documentary", "Film-Noir", "Sci-Fi", "Romance", "Action", "Comedy", "Drama")
MAP_MIN_RATINGS = 20  # movies with fewer training ratings have barely trained embeddings


def recbole_files(download: bool = False, missing_ok: bool = False) -> tuple[Path, Path] | None:
    folder = bench_data.require("ml-100k", download=download, missing_ok=missing_ok)
    return None if folder is None else (folder / "ml-100k.inter", folder / "ml-100k.item")


def synthetic_files(folder: Path, users: int = 60, items: int = 80, ratings: int = 2000) -> tuple[Path, Path]:
    """A tiny ml-100k-like pair of files from a random low-rank model (smoke test without recbole)."""
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(users + 1, 3)), rng.normal(size=(items + 1, 3))
    folder.mkdir(parents=True, exist_ok=True)
    inter = folder / "synthetic.inter"
    with inter.open("w") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for _ in range(ratings):
            a, b = int(rng.integers(1, users + 1)), int(rng.integers(1, items + 1))
            rating = int(np.clip(np.rint(3 + u[a] @ v[b] + rng.normal(scale=0.5)), 1, 5))
            f.write(f"{a}\t{b}\t{rating}\t{rng.integers(8e8, 9e8)}\n")
    item = folder / "synthetic.item"
    genres = ("Action", "Comedy", "Drama", "Horror")
    with item.open("w") as f:
        f.write("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n")
        for b in range(1, items + 1):
            f.write(f"{b}\tMovie {b}\t1995\t{genres[b % len(genres)]}\n")
    return inter, item


def sliced(inter: Path, folder: Path, rows: int) -> Path:
    """The header and the first ROWS ratings of an .inter file."""
    out = folder / f"slice{rows}.inter"
    with inter.open() as source, out.open("w") as target:
        for index, line in enumerate(source):
            if index > rows:
                break
            target.write(line)
    return out


def pairs(records: list[dict]) -> tuple[list[dict[str, list[int]]], np.ndarray]:
    return [{"in0": r["in0"], "in1": r["in1"]} for r in records], np.array([r["label"] for r in records], dtype=float)


# ---------------------------------------------------------------------------------------------
# The peer: Surprise SVD on the same 80% (train + validation), scored on the same test rows.


def run_svd(train: list[dict], test: list[dict], folder: Path) -> dict | None:
    if not common.installed("surprise"):
        return None
    from surprise import SVD, Dataset, Reader

    path = folder / "svd_train.tsv"
    with path.open("w") as f:
        for r in train:
            f.write(f"{r['in0'][0]}\t{r['in1'][0]}\t{r['label']}\n")
    data = Dataset.load_from_file(str(path), Reader(line_format="user item rating", sep="\t", rating_scale=(1, 5)))
    trainset = data.build_full_trainset()
    algo = SVD(random_state=0)
    with common.timer() as t:
        algo.fit(trainset)
    estimates = np.array([algo.predict(str(r["in0"][0]), str(r["in1"][0])).est for r in test])
    return {"seconds": t[0], "estimates": estimates}


# ---------------------------------------------------------------------------------------------
# Ours: prepare -> train (real program) -> predict (real predictor).


def train_ours(
    name: str, data: Path, report: dict, overrides: dict, root: Path, init: Path | None = None
) -> common.TrainRun:
    """`train` on a prepared split; `init`: a model dir to warm-start from (init_model)."""
    hp = {**report["hyperparameters"], **overrides}
    channels = {
        "train": [data / "train.jsonl"],
        "validation": [data / "validation.jsonl"],
        "test": [data / "test.jsonl"],
    }
    if init is not None:  # the model folder goes into the auxiliary channel under its name
        hp["init_model"] = init.name
        channels["auxiliary"] = [init]
    base = common.make_opt_ml(root / name, hp, channels)
    print(f"[movielens] training {name} ...", file=sys.stderr, flush=True)
    return common.train(base)


def job_seconds(run: common.TrainRun) -> float:
    config = json.loads((run.model_dir / "model_config.json").read_text())
    return float(config["training"]["seconds"])


def time_breakdown(run: common.TrainRun) -> str:
    """The job's own "Time:" log line: start-up, data, model, training, test, saving."""
    found = re.search(r"Time: (.*)", run.log)
    return found.group(1).strip() if found else "no breakdown in the log"


def movie_map(predictor, item_file: Path, train: list[dict], out: Path) -> dict:
    """2-D map (t-SNE when scikit-learn is there, else PCA) of in1 embeddings coloured by genre."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.bincount([r["in1"][0] for r in train], minlength=predictor.hp.enc1.vocab_size)
    genres: dict[int, str] = {}
    with item_file.open() as f:
        next(f)
        for line in f:
            fields = line.rstrip("\n").split("\t")
            own = fields[3].split() if len(fields) > 3 else []
            genres[int(fields[0])] = next((g for g in MAP_GENRES if g in own), "other")
    ids = [i for i in sorted(genres) if i < len(counts) and counts[i] >= MAP_MIN_RATINGS]
    if len(ids) < 5:
        ids = [i for i in sorted(genres) if i < len(counts)]
    vectors = common.predict(predictor, [{"in1": [i]} for i in ids])  # embedding mode of enc1
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
    method = "PCA"
    if common.installed("sklearn") and len(ids) > 50:
        from sklearn.manifold import TSNE

        xy = TSNE(n_components=2, random_state=0, init="pca", perplexity=30).fit_transform(vectors)
        method = "t-SNE (cosine geometry)"
    else:
        centred = vectors - vectors.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T
    fig, ax = plt.subplots(figsize=(8, 6.5), dpi=80)
    labels = np.array([genres[i] for i in ids])
    palette = plt.get_cmap("tab10")
    other = labels == "other"
    ax.scatter(xy[other, 0], xy[other, 1], s=6, c="lightgrey", label="other")
    for index, genre in enumerate(MAP_GENRES):
        chosen = labels == genre
        if chosen.any():
            ax.scatter(xy[chosen, 0], xy[chosen, 1], s=9, color=palette(index), label=genre)
    ax.set_title(f"ML-100k movie embeddings (enc1, embedding mode), {method}; movies with >= {MAP_MIN_RATINGS} ratings")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, markerscale=1.5, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return {"movies": len(ids), "method": method}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.common_arguments(parser)
    parser.add_argument("--slice", type=int, default=3000, help="ratings kept in --quick mode (default 3000)")
    args = parser.parse_args()
    cpus = common.use_cpus(args.cpus)
    root = common.work_dir(args.work_dir, "movielens")
    files = recbole_files(args.download, missing_ok=args.quick)  # a full run stops here when it is missing
    source = "ml-100k (recbole 1.2.1)"
    if files is None:
        files = synthetic_files(root / "raw")
        source = "synthetic (recbole not installed)"
    inter, item = files
    if args.quick:
        inter = sliced(inter, root, args.slice)
    load = common.machine_load()
    overrides = QUICK_HP if args.quick else {}
    rows: list[common.Row] = []
    curves: dict[str, list] = {}
    svd: dict | None = None
    peer_note = ""
    predictor = train = None
    for variant, (item_raters, settings) in VARIANTS.items():
        outputs = {}
        for task, extra in (("regression", []), ("classification", ["--task", "classification", "--threshold", "4"])):
            data = root / f"data_{task}_{variant}"
            split = ["--test-fraction", "0.2", "--validation-fraction", "0.05", "--seed", "0"]
            extra = [*extra, "--item-raters", str(item_raters)]
            outputs[task] = (
                data,
                common.prepare("ratings", inter, "--output-dir", data, *split, *extra, "--overwrite"),
            )
        data, report = outputs["regression"]
        test = common.read_jsonl(data / "test.jsonl")
        test_pairs, y = pairs(test)
        if variant == "ids":  # the peer reads the item ids: the same rows in every variant
            train = common.read_jsonl(data / "train.jsonl")
            validation = common.read_jsonl(data / "validation.jsonl")
            svd = None if args.no_peer else run_svd(train + validation, test, root)
            peer_note = "" if svd is not None else ("skipped" if args.no_peer else common.NOT_INSTALLED)
        label = "" if variant == "ids" else ", items by their raters"

        # Regression.
        regression = train_ours(f"regression_{variant}", data, report, {**REGRESSION_HP, **settings, **overrides}, root)
        regression_predictor = common.load_predictor(regression.model_dir)
        estimates = np.clip(common.predict(regression_predictor, test_pairs)[:, 0], 1.0, 5.0)
        rmse = float(np.sqrt(np.mean((estimates - y) ** 2)))
        fit = job_seconds(regression)
        row = common.Row(
            f"ML-100k rating regression{label}",
            "test RMSE",
            rmse,
            regression.seconds,
            "Surprise SVD",
            target=f"<= {RMSE_TARGET} and < SVD's; train process <= {TIME_FACTOR:g}x SVD's fit",
            notes=f"train job {fit:.1f} s of the {regression.seconds:.1f} s subprocess "
            f"({time_breakdown(regression)}); best epoch {regression.best_epoch()}",
        )
        if svd is None:
            row.peer_note = peer_note
            row.met, row.missed_by = common.judge_at_most(rmse, RMSE_TARGET)
        else:
            svd_rmse = float(np.sqrt(np.mean((svd["estimates"] - y) ** 2)))
            row.peer_value, row.peer_seconds = svd_rmse, svd["seconds"]
            misses = []
            if rmse > RMSE_TARGET:
                misses.append(f"{rmse - RMSE_TARGET:.4f} RMSE over {RMSE_TARGET}")
            if rmse >= svd_rmse:
                misses.append(f"{rmse - svd_rmse:.4f} RMSE over SVD")
            if regression.seconds > TIME_FACTOR * svd["seconds"]:
                misses.append(
                    f"train process {regression.seconds / svd['seconds']:.1f}x SVD's fit "
                    f"({fit / svd['seconds']:.1f}x without the interpreter start)"
                )
            row.met, row.missed_by = not misses, "; ".join(misses)
        rows.append(row)

        # Binary classification (label = rating >= 4) on the same split, its user and item embeddings
        # warm-started from the rating regression's (sixth round: validation accuracy 0.7122 against 0.7094
        # over seeds 0-11, 8 of 12 higher): the 1-5 ratings say more than "4 or above" does.
        cdata, creport = outputs["classification"]
        classification = train_ours(
            f"classification_{variant}",
            cdata,
            creport,
            {**CLASSIFICATION_HP, **settings, **overrides},
            root,
            init=regression.model_dir,
        )
        cpairs, cy = pairs(common.read_jsonl(cdata / "test.jsonl"))
        accuracy = float(
            np.mean(common.predict(common.load_predictor(classification.model_dir), cpairs).argmax(1) == cy)
        )
        crow = common.Row(
            f"ML-100k binary (rating >= 4){label}",
            "test accuracy",
            accuracy,
            classification.seconds,
            "Surprise SVD (estimate >= 3.5)",
            target=f">= {ACCURACY_TARGET}",
            notes=f"train job {job_seconds(classification):.1f} s; best epoch {classification.best_epoch()}; "
            f"warm-started from the regression model ({regression.seconds:.1f} s, not counted here)",
        )
        crow.met, crow.missed_by = common.judge_at_least(accuracy, ACCURACY_TARGET)
        if svd is None:
            crow.peer_note = peer_note
        else:
            crow.peer_value = float(np.mean((svd["estimates"] >= 3.5) == (y >= 4)))
            crow.peer_seconds = svd["seconds"]
        rows.append(crow)
        curves[f"ML-100k regression{label}"] = regression.curves()
        curves[f"ML-100k binary{label}"] = classification.curves()
        if variant == "ids":  # the movie map: one id per movie, as the ids model embeds it
            predictor = regression_predictor

    result = common.Report(
        "movielens",
        rows,
        curves=curves,
        command=common.command_line("movielens.py"),
        details={"data": source, "cpus": cpus, "load_before": load, "load_after": common.machine_load()},
    )
    if args.plots_dir is not None and common.installed("matplotlib"):
        path = args.plots_dir / "movielens_movie_map.png"
        result.details["map"] = movie_map(predictor, item, train, path)
        result.plots.append(str(path))
    result.write(args.json_out)


if __name__ == "__main__":
    main()
