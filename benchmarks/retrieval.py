"""Retrieval benchmarks: top-k neighbours from a trained model, through the real programs.

(a) speed: for catalogues of 10k, 100k and 1M candidates (enc_dim 64), the build rate of
    `python -m object2vec index` on one core, the index's size and how server workers share it, and
    the p50/p99 latency of one top-10 query (re-rank depth 100) over HTTP to one `serve` worker,
    interleaved with plain embedding requests to the same server as the reference.
    Targets: p99 <= 15 ms at 1M; build >= 50k candidates/s on one core.
(b) recall@10 of the approximate (IVF) path against exact scoring, on the same catalogues, with
    nprobe at a quarter, half, one and two times its default; and on a harder catalogue (clusters
    as wide as they are apart) and an unstructured one (isotropic Gaussian).
(c) ML-100k top-10 recommendation: NDCG@10 and recall@10 of each user's held-out ratings >= 4, the
    user's known items excluded, against most-popular and against Surprise SVD ranking every item.
    Target: beat both.
(d) Reuters labels by top-k: P@1 of the top-1 neighbour against exhaustive scoring of every
    (document, label) pair, and the time of each.

Synthetic catalogues (a, b): a pooled_embedding model of the matrix-factorisation form
(comparator_list=hadamard, mlp_layers=0, regression) whose item and user embeddings are drawn
around 1,000 cluster centres (noise 0.5 of the centres' spread), as learned embeddings cluster; its
search vector orders candidates exactly, so (b) measures the index alone.

    PYTHONPATH=container python benchmarks/retrieval.py [--parts a,b,c,d] [--sizes 10000,100000,1000000]
        [--json-out r.json] [--markdown-out benchmarks/retrieval_results.md]
    PYTHONPATH=container python benchmarks/retrieval.py --parts a --sizes 1000000 --work-dir W --a-steps latency
        # the 1M latency alone, on the index an earlier run left in W (--a-steps build: the build alone)
    PYTHONPATH=container python benchmarks/retrieval.py --quick      # smoke test: small sizes, slices
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

DIM = 64
CLUSTERS = 1000
USERS = 1000
LATENCY_REQUESTS = 2000
WARMUP_REQUESTS = 200
RECALL_QUERIES = 500
BUILD_TARGET = 50_000  # candidates/s on one core
P99_TARGET_MS = 15.0  # at 1M, re-rank depth 100, one worker


# ---------------------------------------------------------------------------------------------
# Synthetic catalogues


def synthetic_model(folder: Path, count: int, noise: float = 0.5, structured: bool = True, seed: int = 0) -> Path:
    """A saved MF-form model whose enc1 embedding of item i is the i-th synthetic vector; returns the model dir."""
    import torch

    from object2vec.config import Hyperparameters
    from object2vec.model.io import save_model
    from object2vec.model.object2vec import Object2VecModel

    rng = np.random.default_rng(seed)
    if structured:
        centres = rng.standard_normal((CLUSTERS, DIM)).astype(np.float32)
        items = centres[rng.integers(0, CLUSTERS, count)] + noise * rng.standard_normal((count, DIM), np.float32)
        users = centres[rng.integers(0, CLUSTERS, USERS)] + noise * rng.standard_normal((USERS, DIM), np.float32)
    else:
        items = rng.standard_normal((count, DIM), np.float32)
        users = rng.standard_normal((USERS, DIM), np.float32)
    hp = Hyperparameters.from_dict(
        {
            "enc0_network": "pooled_embedding",
            "enc1_network": "pooled_embedding",
            "enc0_vocab_size": USERS,
            "enc1_vocab_size": count,
            "enc0_max_seq_len": 1,
            "enc1_max_seq_len": 1,
            "enc0_token_embedding_dim": DIM,
            "enc1_token_embedding_dim": DIM,
            "enc_dim": DIM,
            "comparator_list": "hadamard",
            "mlp_layers": 0,
            "output_layer": "mean_squared_error",
        }
    )
    model = Object2VecModel(hp)
    with torch.no_grad():
        for encoder, table in zip(model.encoders, (users, items), strict=True):
            encoder.embedding.weight.copy_(torch.from_numpy(table))
            encoder.project.weight.copy_(torch.eye(DIM))
            encoder.project.bias.zero_()
        model.mlp[-1].weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, (1, DIM)).astype(np.float32)))
        model.mlp[-1].bias.zero_()
    model_dir = folder / "model"
    save_model(model, model_dir)
    with (folder / "catalogue.jsonl").open("w") as out:
        for start in range(0, count, 100_000):
            out.write("".join(f'{{"id":"i{i}","in1":[{i}]}}\n' for i in range(start, min(count, start + 100_000))))
    return model_dir


# ---------------------------------------------------------------------------------------------
# (a) build, memory, latency


def build_with_cli(model_dir: Path, catalogue: Path, core: int, *settings: str) -> dict[str, Any]:
    """`python -m object2vec index` pinned to one core (one torch and one faiss thread)."""
    env = common.object2vec_env(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    command = [sys.executable, "-m", "object2vec", "index", "--model-dir", str(model_dir), str(catalogue)]
    command += [item for setting in settings for item in ("--set", setting)]
    start = time.perf_counter()
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, preexec_fn=lambda: os.sched_setaffinity(0, {core})
    )
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"index failed: {result.stderr[-3000:]}")
    found = re.search(
        r"MB, in ([\d.]+) s, ([\d.]+) s of CPU \(reading and encoding ([\d.]+) s, indexing ([\d.]+) s; "
        r"of CPU ([\d.]+) s and ([\d.]+) s",
        result.stdout,
    )
    assert found, result.stdout
    build, cpu, encode, index, encode_cpu, index_cpu = (float(v) for v in found.groups())
    header = json.loads(_header_bytes(model_dir / "retrieval.index"))
    count = header["count"]
    return {
        "count": count,
        "process_seconds": round(wall, 2),
        "build_seconds": build,
        "read_and_encode_seconds": encode,
        "index_seconds": index,
        "read_and_encode_cpu_seconds": encode_cpu,
        "index_cpu_seconds": index_cpu,
        "build_cpu_seconds": cpu,
        # The log gives hundredths of seconds: a tiny catalogue's build may read 0.00.
        "rate_build": round(count / max(build, 0.005)),
        "rate_build_cpu": round(count / max(cpu, 0.005)),  # per core-second: what one core of its own would do
        "rate_process": round(count / wall),
        "search": header["search"],
        "file_mb": round((model_dir / "retrieval.index").stat().st_size / 1e6, 1),
    }


def _header_bytes(path: Path) -> bytes:
    with path.open("rb") as stream:
        stream.seek(-16, os.SEEK_END)
        length = int.from_bytes(stream.read(8), "little")
        stream.seek(-16 - length, os.SEEK_END)
        return stream.read(length)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(base: Path, workers: int, cores: set[int]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = common.object2vec_env(
        SAGEMAKER_BASE_DIR=str(base),
        SAGEMAKER_BIND_TO_PORT=str(port),
        MODEL_SERVER_WORKERS=str(workers),
        OMP_WAIT_POLICY="PASSIVE",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "object2vec", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: os.sched_setaffinity(0, cores),
    )
    common.wait_until_serving(process, port, timeout=600)
    return process, port


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def post(port: int, body: bytes, accept: str) -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", "/invocations", body, {"Content-Type": "application/json", "Accept": accept})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    if response.status != 200:
        raise RuntimeError(f"{response.status}: {data[:300]!r}")
    return data


def latency(port: int, requests: int, seed: int = 0) -> dict[str, float]:
    """Interleaved: a top-10 query, then an embedding request for the same user (the reference)."""
    rng = np.random.default_rng(seed)
    timings: dict[str, list[float]] = {"top10": [], "embedding": []}
    for index in range(WARMUP_REQUESTS + requests):
        body = json.dumps({"instances": [{"in0": [int(rng.integers(0, USERS))]}]}).encode()
        for name, accept in (("top10", "application/json; top_k=10"), ("embedding", "application/json")):
            start = time.perf_counter()
            answer = post(port, body, accept)
            if index >= WARMUP_REQUESTS:
                timings[name].append(time.perf_counter() - start)
        if index == 0:
            assert len(json.loads(answer)["predictions"][0]["embeddings"]) == DIM
    out = {}
    for name, values in timings.items():
        p50, p99 = np.percentile(np.array(values) * 1000, [50, 99])
        out[f"{name}_p50_ms"], out[f"{name}_p99_ms"] = round(float(p50), 2), round(float(p99), 2)
    return out


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (serve -> nginx and gunicorn -> its workers)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *descendants(int(child))]
    return found


def workers_of(serve: int, index_path: Path) -> list[int]:
    """The gunicorn workers: the processes below serve that map the index file."""
    target = str(index_path.resolve())
    return [pid for pid in descendants(serve) if target in Path(f"/proc/{pid}/maps").read_text()]


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (load on the machine delays them, it does not add to this)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def cpu_per_request(serve: int, port: int, requests: int, index_path: Path) -> dict[str, float]:
    """CPU milliseconds per request of the worker and of the whole server (nginx, gunicorn's arbiter and
    worker), top-10 and embedding measured in turn."""
    rng = np.random.default_rng(1)
    workers, everything = workers_of(serve, index_path), [serve, *descendants(serve)]
    assert workers, "no server process maps the index"
    out = {}
    for name, accept in (("top10", "application/json; top_k=10"), ("embedding", "application/json")):
        before, before_all = cpu_seconds(workers), cpu_seconds(everything)
        for _ in range(requests):
            post(port, json.dumps({"instances": [{"in0": [int(rng.integers(0, USERS))]}]}).encode(), accept)
        out[f"{name}_cpu_ms"] = round((cpu_seconds(workers) - before) * 1000 / requests, 2)
        out[f"{name}_server_cpu_ms"] = round((cpu_seconds(everything) - before_all) * 1000 / requests, 2)
    return out


def worker_memory(serve: int, index_path: Path) -> list[dict[str, float]]:
    """Per worker: MB of anonymous memory (its own) and of the index file's mapping (Rss, Pss, shared)."""
    rows = []
    for pid in workers_of(serve, index_path):
        totals = {"anonymous": 0, "index_rss": 0, "index_pss": 0, "index_shared": 0}
        in_index = False
        for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
            fields = line.split()
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                in_index = line.endswith(str(index_path.resolve()))
            elif fields[0] == "Anonymous:":
                totals["anonymous"] += int(fields[1])
            elif in_index and fields[0] == "Rss:":
                totals["index_rss"] += int(fields[1])
            elif in_index and fields[0] == "Pss:":
                totals["index_pss"] += int(fields[1])
            elif in_index and fields[0] in ("Shared_Clean:", "Shared_Dirty:"):
                totals["index_shared"] += int(fields[1])
        rows.append({key: round(value / 1024, 1) for key, value in totals.items()})
    return rows


def touch_every_page(port: int, seconds: float) -> None:
    """Two clients for a while so that both workers search (and map) the index."""
    from concurrent.futures import ThreadPoolExecutor

    deadline = time.monotonic() + seconds
    body = json.dumps({"instances": [{"in0": [u]} for u in range(0, USERS, 10)]}).encode()

    def loop(_: int) -> None:
        while time.monotonic() < deadline:
            post(port, body, "application/json; top_k=10")

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(loop, range(2)))


A_STEPS = ("build", "latency", "memory")
PARTIAL_KEYS = (
    "read_and_encode_cpu_seconds",
    "index_cpu_seconds",
    "top10_server_cpu_ms",
    "embedding_server_cpu_ms",
    "rate_build",
    "rate_build_cpu",
    "top10_p50_ms",
    "top10_p99_ms",
    "embedding_p50_ms",
    "embedding_p99_ms",
    "top10_cpu_ms",
    "embedding_cpu_ms",
    "load_before",
    "load_after",
)


def part_a(
    root: Path, sizes: list[int], requests: int, touch_seconds: float, steps: set[str] | None = None
) -> list[dict[str, Any]]:
    """`steps` (default all of A_STEPS): without "build", the model and index already in the work
    folder (from an earlier run with the same --work-dir) are measured as they are."""
    steps = set(A_STEPS) if steps is None else steps
    cores = sorted(os.sched_getaffinity(0))
    server_core, client_core = cores[0], cores[-1]
    os.sched_setaffinity(0, {client_core})
    rows = []
    for count in sizes:
        folder = root / f"synthetic_{count}"
        model_dir = folder / "model"
        if "build" in steps or not (model_dir / "retrieval.index").is_file():
            model_dir = synthetic_model(folder, count)
        load_before = common.machine_load()
        row: dict[str, Any] = {"candidates": count, "load_before": load_before, "steps": sorted(steps)}
        if "build" in steps or not (model_dir / "retrieval.index").is_file():
            row.update(build_with_cli(model_dir, folder / "catalogue.jsonl", server_core))
        else:
            header = json.loads(_header_bytes(model_dir / "retrieval.index"))
            row.update({"count": header["count"], "search": header["search"]})
            row["file_mb"] = round((model_dir / "retrieval.index").stat().st_size / 1e6, 1)
        if "latency" in steps:
            process, port = start_server(folder, 1, {server_core})
            try:
                row.update(latency(port, requests))
                row.update(cpu_per_request(process.pid, port, requests, model_dir / "retrieval.index"))
            finally:
                stop_server(process)
        if "memory" in steps:
            process, port = start_server(folder, 2, set(cores))
            try:
                touch_every_page(port, touch_seconds)
                row["workers"] = worker_memory(process.pid, model_dir / "retrieval.index")
            finally:
                stop_server(process)
        row["load_after"] = common.machine_load()
        print(f"[retrieval a] {row}", file=sys.stderr, flush=True)
        rows.append(row)
    os.sched_setaffinity(0, set(cores))
    return rows


# ---------------------------------------------------------------------------------------------
# (b) recall of the approximate path


def exact_top10(model_dir: Path, queries: np.ndarray) -> np.ndarray:
    """Brute force in float64 on the model's own encodings (its score is w . (a * b))."""
    from object2vec.model.io import load_model

    model = load_model(model_dir).model
    items = model.encoders[1].embedding.weight.detach().double().numpy()
    users = model.encoders[0].embedding.weight.detach().double().numpy()
    weights = model.mlp[-1].weight.detach().double().numpy()[0]
    top = []
    for start in range(0, len(queries), 50):  # (50, N) float64 at a time
        scores = (users[queries[start : start + 50]] * weights) @ items.T
        best = np.argpartition(-scores, 10, axis=1)[:, :10]
        order = np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1)
        top.append(np.take_along_axis(best, order, axis=1))
    return np.concatenate(top)  # (Q, 10)


def recall(model_dir: Path, queries: np.ndarray, exact: np.ndarray, nprobes: list[int]) -> list[dict[str, Any]]:
    import dataclasses

    from object2vec.retrieval.protocol import RetrievalParams
    from object2vec.retrieval.retriever import Retriever
    from object2vec.serving.predictor import Predictor

    retriever = Retriever.load(model_dir, Predictor.load(model_dir, device="cpu"))
    assert retriever is not None
    base = retriever.plan
    rows = []
    for nprobe in nprobes:
        retriever.plan = dataclasses.replace(base, nprobe=min(nprobe, base.nlist))
        start = time.perf_counter()
        found = [retriever.neighbors([{"in0": [int(q)]}], RetrievalParams(top_k=10)).rows[0] for q in queries]
        seconds = (time.perf_counter() - start) / len(queries)
        overlap = [len(set(f.tolist()) & set(e.tolist())) / 10 for f, e in zip(found, exact, strict=True)]
        whole = [f.tolist() == e.tolist() for f, e in zip(found, exact, strict=True)]
        rows.append(
            {
                "nprobe": retriever.plan.nprobe,
                "nlist": base.nlist,
                "scanned_share": round(retriever.plan.nprobe / base.nlist, 4),
                "recall_at_10": round(float(np.mean(overlap)), 4),
                "exact_top10_share": round(float(np.mean(whole)), 4),
                "ms_per_query_in_process": round(seconds * 1000, 2),
            }
        )
    return rows


def part_b(root: Path, sizes: list[int], queries_count: int) -> list[dict[str, Any]]:
    import torch

    torch.set_num_threads(1)
    import faiss

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(7)
    queries = rng.integers(0, USERS, queries_count)
    rows = []
    catalogues = [(f"clusters, noise 0.5 ({count:,})", root / f"synthetic_{count}", count, None) for count in sizes]
    hard = min(sizes, key=lambda size: abs(size - 100_000))  # the harder catalogues at about 100k
    catalogues += [
        (f"clusters, noise 1.0 ({hard:,})", root / f"noisy_{hard}", hard, (1.0, True)),
        (f"isotropic Gaussian ({hard:,})", root / f"gaussian_{hard}", hard, (0.0, False)),
    ]
    for name, folder, count, variant in catalogues:
        model_dir = folder / "model"
        index = model_dir / "retrieval.index"
        if variant is not None or not index.exists() or json.loads(_header_bytes(index))["search"]["kind"] != "ivf":
            if variant is not None or not model_dir.exists():
                noise, structured = variant or (0.5, True)
                synthetic_model(folder, count, noise=noise, structured=structured)
            build_with_cli(
                model_dir, folder / "catalogue.jsonl", sorted(os.sched_getaffinity(0))[0], "retrieval_index=ivf"
            )
        header = json.loads(_header_bytes(index))
        default = header["search"]["nprobe"]
        exact = exact_top10(model_dir, queries)
        for row in recall(
            model_dir, queries, exact, sorted({max(1, default // 4), max(1, default // 2), default, 2 * default})
        ):
            row["catalogue"] = name
            row["default"] = row["nprobe"] == default
            print(f"[retrieval b] {row}", file=sys.stderr, flush=True)
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# (c) ML-100k top-10 recommendation

# Ours: implicit feedback. Every training rating is a positive (label 1) and each gets
# NEGATIVES uniformly drawn items the user did not rate (label 0): the model learns which items a
# user rates, as the held-out ratings >= 4 are items a user rated (and liked). Chosen on the
# validation split (benchmarks/results_notes.md, "Retrieval").
RECOMMEND_HP = {
    "enc0_token_embedding_dim": 64,
    "enc1_token_embedding_dim": 64,
    "enc_dim": 64,
    "comparator_list": "hadamard",  # with mlp_layers 0: the search vector orders the items exactly
    "mlp_layers": 0,
    "output_layer": "softmax",
    "num_classes": 2,
    "optimizer": "adam",
    "learning_rate": 0.005,
    "weight_decay": 0.0,
    "mini_batch_size": 1024,
    "epochs": 20,
    "early_stopping_patience": 2,
    "early_stopping_tolerance": 0.001,
}
NEGATIVES = 8
POSITIVE_THRESHOLD = 4.0  # held-out ratings >= 4 are the relevant items
QUICK_RECOMMEND = {"epochs": 2, "enc_dim": 16, "enc0_token_embedding_dim": 16, "enc1_token_embedding_dim": 16}


def implicit(
    records: list[dict],
    items: np.ndarray,
    negatives: int,
    rng: np.random.Generator,
    sequences: dict[int, list[int]] | None = None,
) -> list[dict]:
    """Each rating -> a positive, plus `negatives` items the user did not rate (uniform), label 0.
    sequences: each item's in1 (from candidates.jsonl) for the negatives, when items are more than an id
    (`--item-raters`); a positive keeps its record's in1, where prepare left the user out of the raters."""
    rated: dict[int, set[int]] = {}
    for record in records:
        rated.setdefault(record["in0"][0], set()).add(record["in1"][0])
    out = []
    for record in records:
        user = record["in0"][0]
        out.append({"in0": [user], "in1": record["in1"], "label": 1})
        drawn = 0
        while drawn < negatives:
            item = int(items[rng.integers(0, len(items))])
            if item not in rated[user]:
                out.append({"in0": [user], "in1": [item] if sequences is None else sequences[item], "label": 0})
                drawn += 1
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def ranking_metrics(ranked: dict[int, list[int]], relevant: dict[int, set[int]]) -> dict[str, float]:
    """Mean NDCG@10 and recall@10 over users with at least one relevant held-out item."""
    ndcg, recall_values = [], []
    discounts = 1 / np.log2(np.arange(2, 12))
    for user, items in relevant.items():
        top = ranked[user][:10]
        gains = np.array([item in items for item in top], dtype=float)
        ideal = discounts[: min(len(items), 10)].sum()
        ndcg.append(float((gains * discounts[: len(gains)]).sum() / ideal))
        recall_values.append(float(gains.sum() / len(items)))
    return {"ndcg_at_10": round(float(np.mean(ndcg)), 4), "recall_at_10": round(float(np.mean(recall_values)), 4)}


def known_items(*splits: list[dict]) -> dict[int, set[int]]:
    known: dict[int, set[int]] = {}
    for records in splits:
        for record in records:
            known.setdefault(record["in0"][0], set()).add(record["in1"][0])
    return known


def relevant_items(records: list[dict]) -> dict[int, set[int]]:
    relevant: dict[int, set[int]] = {}
    for record in records:
        if record["label"] >= POSITIVE_THRESHOLD:
            relevant.setdefault(record["in0"][0], set()).add(record["in1"][0])
    return relevant


def rank_ours(model_dir: Path, users: list[int], exclude: dict[int, set[int]]) -> tuple[dict[int, list[int]], float]:
    """Top-10 per user through the retriever, the user's known items dropped: top_k covers them."""
    from object2vec.retrieval.protocol import RetrievalParams
    from object2vec.retrieval.retriever import Retriever
    from object2vec.serving.predictor import Predictor

    predictor = Predictor.load(model_dir, device="cpu", max_instances=10**6)
    retriever = Retriever.load(model_dir, predictor)
    assert retriever is not None
    top_k = min(retriever.count, 10 + max(len(exclude.get(user, ())) for user in users))
    start = time.perf_counter()
    found = retriever.neighbors([{"in0": [user]} for user in users], RetrievalParams(top_k=top_k))
    seconds = time.perf_counter() - start
    ranked = {}
    for user, rows in zip(users, found.rows, strict=True):
        items = [int(retriever.id_json(int(row))) for row in rows]
        ranked[user] = [item for item in items if item not in exclude.get(user, ())][:10]
    return ranked, seconds


def rank_popular(train: list[dict], users: list[int], exclude: dict[int, set[int]]) -> dict[int, list[int]]:
    counts: dict[int, int] = {}
    for record in train:
        counts[record["in1"][0]] = counts.get(record["in1"][0], 0) + 1
    order = sorted(counts, key=lambda item: (-counts[item], item))
    return {user: [item for item in order if item not in exclude.get(user, ())][:10] for user in users}


def rank_svd(train: list[dict], users: list[int], items: np.ndarray, exclude: dict[int, set[int]], folder: Path):
    """Surprise SVD (default settings, seed 0) on the same ratings; every item scored for every user
    with SVD's own estimate (global mean + biases + factors), unclipped so that it ranks."""
    if not common.installed("surprise"):
        return None
    from surprise import SVD, Dataset, Reader

    path = folder / "svd_train.tsv"
    path.write_text("".join(f"{r['in0'][0]}\t{r['in1'][0]}\t{r['label']}\n" for r in train))
    data = Dataset.load_from_file(str(path), Reader(line_format="user item rating", sep="\t", rating_scale=(1, 5)))
    trainset = data.build_full_trainset()
    algo = SVD(random_state=0)
    with common.timer() as t:
        algo.fit(trainset)
    inner = np.array([trainset.to_inner_iid(str(i)) if trainset.knows_item(str(i)) else -1 for i in items])
    known = inner >= 0
    ranked = {}
    for user in users:
        scores = np.full(len(items), trainset.global_mean)
        if trainset.knows_user(str(user)):
            u = trainset.to_inner_uid(str(user))
            scores += algo.bu[u]
            scores[known] += algo.bi[inner[known]] + algo.qi[inner[known]] @ algo.pu[u]
        order = items[np.argsort(-scores, kind="stable")]
        ranked[user] = [int(item) for item in order if item not in exclude.get(user, ())][:10]
    return ranked, t[0]


def part_c(
    root: Path, quick: bool, split: str, overrides: dict[str, Any], negatives: int = NEGATIVES, item_raters: int = 0
) -> dict[str, Any]:
    """split: "validation" (choosing settings) or "test" (the reported figures, once); overrides
    change RECOMMEND_HP (for trying settings on the validation split); item_raters: `prepare ratings
    --item-raters` (each item also described by up to that many of its raters; 0: the id alone)."""
    import movielens

    files = movielens.recbole_files(missing_ok=quick)  # the full run stops with bench_data's instructions
    if files is None:
        files = movielens.synthetic_files(root / "raw")
    inter = movielens.sliced(files[0], root, 3000) if quick else files[0]
    data = root / "ml100k"
    split_args = ["--test-fraction", "0.2", "--validation-fraction", "0.05", "--seed", "0"]
    split_args += ["--item-raters", str(item_raters)]
    report = common.prepare("ratings", inter, "--output-dir", data, *split_args, "--overwrite")
    train = common.read_jsonl(data / "train.jsonl")
    validation = common.read_jsonl(data / "validation.jsonl")
    test = common.read_jsonl(data / "test.jsonl")
    candidates = [json.loads(line) for line in (data / "candidates.jsonl").open()]
    items = np.array(sorted(candidate["id"] for candidate in candidates))
    sequences = {candidate["id"]: candidate["in1"] for candidate in candidates} if item_raters else None
    rng = np.random.default_rng(0)
    common.write_jsonl(data / "implicit_train.jsonl", implicit(train, items, negatives, rng, sequences))
    common.write_jsonl(data / "implicit_validation.jsonl", implicit(validation, items, negatives, rng, sequences))
    hp = {**report["hyperparameters"], **RECOMMEND_HP, **(QUICK_RECOMMEND if quick else {}), **overrides}
    base = common.make_opt_ml(
        root / "recommend",
        hp,
        {
            "train": [data / "implicit_train.jsonl"],
            "validation": [data / "implicit_validation.jsonl"],
            "candidates": [data / "candidates.jsonl"],
        },
    )
    print("[retrieval c] training ...", file=sys.stderr, flush=True)
    run = common.train(base)
    if split == "validation":  # known: train; held out: validation; peers fit on train
        fit_on, held_out = train, validation
    else:  # known: train + validation; held out: test; peers fit on train + validation
        fit_on, held_out = train + validation, test
    exclude = known_items(fit_on)
    relevant = relevant_items(held_out)
    users = sorted(relevant)
    ours, seconds = rank_ours(run.model_dir, users, exclude)
    out: dict[str, Any] = {
        "split": split,
        "negatives": negatives,
        "item_raters": item_raters,
        "overrides": overrides,
        "users": len(users),
        "items": len(items),
        "train_seconds": round(run.seconds, 1),
        "best_epoch": run.best_epoch(),
        "ours": ranking_metrics(ours, relevant),
        "ours_query_seconds": round(seconds, 3),
        "most_popular": ranking_metrics(rank_popular(fit_on, users, exclude), relevant),
    }
    svd = rank_svd(fit_on, users, items, exclude, root)
    if svd is not None:
        out["svd"] = ranking_metrics(svd[0], relevant)
        out["svd_fit_seconds"] = round(svd[1], 2)
    print(f"[retrieval c] {out}", file=sys.stderr, flush=True)
    return out


# ---------------------------------------------------------------------------------------------
# (d) Reuters labels by top-k


def part_d(root: Path, quick: bool) -> dict[str, Any] | None:
    import random

    import bench_data
    import reuters

    source = bench_data.require("reuters", missing_ok=quick)  # the full run stops with the instructions
    if source is None:
        print("[retrieval d] skipped: no Reuters-21578 data (see above)", file=sys.stderr)
        return None
    from object2vec.retrieval.protocol import RetrievalParams
    from object2vec.retrieval.retriever import Retriever

    train_all, test = reuters.read_modapte(source)
    shuffled = list(train_all)
    random.Random(0).shuffle(shuffled)
    cut = int(round(len(shuffled) * reuters.VALIDATION_FRACTION))
    validation, train = shuffled[:cut], shuffled[cut:]
    if quick:
        train, validation, test = train[:300], validation[:60], test[:60]
    labels = sorted({label for doc in train_all for label in doc["labels"]} & {x for d in test for x in d["labels"]})
    if quick:
        labels = sorted({label for doc in train + validation + test for label in doc["labels"]})
    raw = root / "reuters_raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, docs in (("train", train), ("validation", validation), ("test", test)):
        common.write_jsonl(raw / f"{name}.jsonl", [{"text": d["text"], "labels": d["labels"]} for d in docs])
    (raw / "label_vocab.json").write_text(json.dumps({label: i for i, label in enumerate(labels)}))
    data = root / "reuters"
    report = common.prepare(
        "multilabel",
        *("--train", raw / "train.jsonl", "--validation", raw / "validation.jsonl", "--test", raw / "test.jsonl"),
        *("--label-vocab", raw / "label_vocab.json", "--seed", "0"),
        *("--candidates", "test_candidates.jsonl", "--output-dir", data, "--overwrite"),
    )
    # reuters.py's pooled_embedding settings: positives only on disk, the trainer draws the negatives
    settings = {**reuters.BASE_HP, **reuters.ENCODER_HP["pooled_embedding"]}
    hp = {**report["hyperparameters"], **settings, **(reuters.QUICK_HP if quick else {})}
    hp["enc1_vocab_size"] = len(labels)
    channels = {"train": [data / "train.jsonl"], "validation": [data / "validation.jsonl"]}
    base = common.make_opt_ml(root / "reuters_model", hp, {**channels, "candidates": [data / "candidates.jsonl"]})
    print("[retrieval d] training ...", file=sys.stderr, flush=True)
    run = common.train(base)
    predictor = common.load_predictor(run.model_dir)
    retriever = Retriever.load(run.model_dir, predictor)
    assert retriever is not None
    docs, truth = reuters.candidate_docs(data / "test_candidates.jsonl", len(labels))
    index_of = {json.dumps(label).encode(): i for i, label in enumerate(labels)}
    with common.timer() as exhaustive_time:
        exhaustive = reuters.score_pairs(predictor, docs, len(labels))  # every (document, label) pair
    out: dict[str, Any] = {
        "documents": len(docs),
        "labels": len(labels),
        "exhaustive_p_at_1": round(reuters.precision_at_1(exhaustive, truth), 4),
        "exhaustive_seconds": round(exhaustive_time[0], 2),
        "train_seconds": round(run.seconds, 1),
    }
    for name, top_n in (("top_1", None), ("top_1_rerank_10", 10)):
        with common.timer() as elapsed:
            found = retriever.neighbors([{"in0": doc} for doc in docs], RetrievalParams(top_k=1, top_n=top_n))
        chosen = np.array([index_of[retriever.id_json(int(rows[0]))] for rows in found.rows])
        out[f"{name}_p_at_1"] = round(float(truth[np.arange(len(docs)), chosen].mean()), 4)
        out[f"{name}_seconds"] = round(elapsed[0], 2)
        out[f"{name}_same_label_as_exhaustive"] = round(float(np.mean(chosen == exhaustive.argmax(axis=1))), 4)
    print(f"[retrieval d] {out}", file=sys.stderr, flush=True)
    return out


# ---------------------------------------------------------------------------------------------


def judge(result: dict[str, Any]) -> list[str]:
    """Each target of the issue, met or missed, with the figure."""
    verdicts = []
    for row in result.get("a", []):
        if "rate_build_cpu" in row:
            verdict = "met" if row["rate_build_cpu"] >= BUILD_TARGET else "MISSED"
            verdicts.append(
                f"build >= {BUILD_TARGET:,}/s on one core at {row['candidates']:,}: {row['rate_build_cpu']:,} per "
                f"CPU-second ({row['rate_build']:,}/s of wall time on the shared core), {verdict}"
            )
        if row["candidates"] >= 1_000_000 and "top10_p99_ms" in row:
            verdict = "met" if row["top10_p99_ms"] <= P99_TARGET_MS else "MISSED"
            verdicts.append(
                f"p99 <= {P99_TARGET_MS:g} ms at {row['candidates']:,}: {row['top10_p99_ms']} ms, {verdict}"
            )
    if result.get("c"):
        c = result["c"]
        peers = [c["most_popular"], *([c["svd"]] if "svd" in c else [])]
        beats = all(c["ours"][m] > peer[m] for peer in peers for m in ("ndcg_at_10", "recall_at_10"))
        names = "most-popular and SVD" if "svd" in c else "most-popular (SVD not installed)"
        verdicts.append(f"ML-100k top-10 beats {names} on NDCG@10 and recall@10: {'met' if beats else 'MISSED'}")
    if result.get("d"):
        d = result["d"]
        same = d["top_1_p_at_1"] == d["exhaustive_p_at_1"]
        share = d["top_1_seconds"] / max(d["exhaustive_seconds"], 1e-9)
        verdicts.append(
            f"Reuters P@1 by top-k equals exhaustive ({d['top_1_p_at_1']} vs {d['exhaustive_p_at_1']}) in "
            f"{share:.0%} of its time: {'met' if same and share < 1 else 'MISSED'}"
        )
    return verdicts


def render(result: dict[str, Any]) -> str:
    """The markdown section for RESULTS.md (and the README's figures)."""
    lines = ["## Retrieval (`benchmarks/retrieval.py`)", ""]
    lines += [f"Run on {result['date']} (commit {result['commit']}), `{result['command']}`.", ""]
    if result.get("a"):
        lines += [
            "**(a) Build, memory, latency** (synthetic catalogues, enc_dim 64; `index` pinned to one core with one "
            "thread; one `serve` worker pinned to one core, the HTTP client on the other; each top-10 query "
            "(re-rank depth 100) interleaved with a plain embedding request to the same server as the reference):",
            "",
            "| candidates | search | build (read + encode + index + write): wall, CPU | whole `index` process | "
            "index file | top-10 p50 / p99 | embedding p50 / p99 | "
            "CPU per request, top-10 / embedding: worker (whole server) | "
            "index pages per worker (2 workers): Rss / Pss | anonymous memory per worker | load before / after |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in result["a"]:
            search = row["search"]
            kind = "exact" if search["kind"] == "exact" else f"ivf nlist {search['nlist']}, nprobe {search['nprobe']}"
            if not {"build", "latency", "memory"} <= set(row.get("steps", A_STEPS)):
                figures = ", ".join(f"{key} {row[key]}" for key in PARTIAL_KEYS if key in row)
                lines.append(f"| {row['candidates']:,} | {kind} | partial run ({', '.join(row['steps'])}): {figures} |")
                continue
            workers = row["workers"]
            lines.append(
                f"| {row['candidates']:,} | {kind} | {row['build_seconds']:.2f} s = {row['rate_build']:,}/s, "
                f"{row['build_cpu_seconds']:.2f} s = {row['rate_build_cpu']:,}/s | "
                f"{row['process_seconds']:.1f} s = {row['rate_process']:,}/s | {row['file_mb']} MB | "
                f"{row['top10_p50_ms']} / {row['top10_p99_ms']} ms | {row['embedding_p50_ms']} / "
                f"{row['embedding_p99_ms']} ms | {row['top10_cpu_ms']} / {row['embedding_cpu_ms']} ms "
                f"({row['top10_server_cpu_ms']} / {row['embedding_server_cpu_ms']} ms) | "
                + ", ".join(f"{w['index_rss']:.0f} / {w['index_pss']:.0f} MB" for w in workers)
                + " | "
                + ", ".join(f"{w['anonymous']:.0f} MB" for w in workers)
                + f" | {row['load_before'].split(' on ')[0].replace('load average ', '')} / "
                f"{row['load_after'].split(' on ')[0].replace('load average ', '')} |"
            )
        lines.append("")
    if result.get("b"):
        lines += [
            f"**(b) Recall@10 of the approximate path** ({RECALL_QUERIES} queries; exact = brute force in float64 on "
            "the model's encodings; in-process time per query, one thread):",
            "",
            "| catalogue | nlist | nprobe (share scanned) | recall@10 | queries with the exact top-10 | ms/query |",
            "|---|---|---|---|---|---|",
        ]
        for row in result["b"]:
            mark = " (default)" if row["default"] else ""
            lines.append(
                f"| {row['catalogue']} | {row['nlist']} | {row['nprobe']}{mark} ({row['scanned_share']:.1%}) | "
                f"{row['recall_at_10']:.4f} | {row['exact_top10_share']:.1%} | {row['ms_per_query_in_process']} |"
            )
        lines.append("")
    if result.get("c"):
        c = result["c"]
        lines += [
            f"**(c) ML-100k top-10 recommendation** ({c['split']} split: {c['users']} users with held-out ratings "
            f">= 4, {c['items']} items, each user's known items excluded; ours trained {c['train_seconds']} s, "
            f"best epoch {c['best_epoch']}; top-k for every user in {c['ours_query_seconds']} s):",
            "",
            "| ranker | NDCG@10 | recall@10 |",
            "|---|---|---|",
            f"| Object2Vec top-k (implicit feedback, {c['negatives']} sampled negatives"
            f"{', items by up to {} raters'.format(c['item_raters']) if c.get('item_raters') else ''}) | "
            f"{c['ours']['ndcg_at_10']} | "
            f"{c['ours']['recall_at_10']} |",
            f"| most popular | {c['most_popular']['ndcg_at_10']} | {c['most_popular']['recall_at_10']} |",
        ]
        if "svd" in c:
            lines.append(f"| Surprise SVD, every item scored | {c['svd']['ndcg_at_10']} | {c['svd']['recall_at_10']} |")
        lines.append("")
    if result.get("d"):
        d = result["d"]
        lines += [
            f"**(d) Reuters labels by top-k** ({d['documents']} test documents, {d['labels']} labels; one thread):",
            "",
            "| method | P@1 | time | same top label as exhaustive |",
            "|---|---|---|---|",
            f"| exhaustive: every (document, label) pair scored | {d['exhaustive_p_at_1']} | "
            f"{d['exhaustive_seconds']} s | - |",
            f"| top_k=1 (re-rank depth 100: every label) | {d['top_1_p_at_1']} | {d['top_1_seconds']} s | "
            f"{d['top_1_same_label_as_exhaustive']:.1%} |",
            f"| top_k=1, top_n=10 | {d['top_1_rerank_10_p_at_1']} | {d['top_1_rerank_10_seconds']} s | "
            f"{d['top_1_rerank_10_same_label_as_exhaustive']:.1%} |",
            "",
        ]
    lines += ["Targets:", "", *[f"- {verdict}" for verdict in result.get("targets", [])], ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="a,b,c,d", help="which parts to run (default a,b,c,d)")
    parser.add_argument("--sizes", default="10000,100000,1000000", help="catalogue sizes for (a) and (b)")
    parser.add_argument("--split", choices=("validation", "test"), default="test", help="(c): held-out split")
    parser.add_argument("--c-set", default="{}", help="(c): JSON object of hyperparameters to try (validation)")
    parser.add_argument("--c-negatives", type=int, default=NEGATIVES, help="(c): sampled negatives per rating")
    parser.add_argument(
        "--c-item-raters", type=int, default=0, help="(c): prepare ratings --item-raters (default 0: the id alone)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: small sizes, slices, few epochs")
    parser.add_argument(
        "--a-steps",
        default=",".join(A_STEPS),
        help="(a): which measurements (default build,latency,memory); without build, the index left in "
        "--work-dir by an earlier run is measured",
    )
    parser.add_argument("--requests", type=int, help=f"(a): timed requests of each kind (default {LATENCY_REQUESTS})")
    parser.add_argument("--work-dir", help="folder for models, catalogues and logs (default: a new temp folder)")
    parser.add_argument("--json-out", type=Path, help="write the figures here")
    parser.add_argument("--markdown-out", type=Path, help="write the RESULTS.md section here")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    root = common.work_dir(args.work_dir, "retrieval")
    sizes = [2000] if args.quick else [int(size) for size in args.sizes.split(",")]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=common.ROOT)
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "commit": head.stdout.strip() or "?",
        "command": "python " + " ".join(["benchmarks/retrieval.py", *sys.argv[1:]]),
        "cpus": len(os.sched_getaffinity(0)),
    }
    if "a" in parts:
        requests = args.requests or (50 if args.quick else LATENCY_REQUESTS)
        steps = set(args.a_steps.split(","))
        if not steps <= set(A_STEPS):
            parser.error(f"--a-steps: choose from {','.join(A_STEPS)}")
        result["a"] = part_a(root, sizes, requests, 3 if args.quick else 20, steps)
    if "b" in parts:
        approximate = sizes if args.quick else [size for size in sizes if size > 50_000]
        result["b"] = part_b(root, approximate, 50 if args.quick else RECALL_QUERIES)
    if "c" in parts:
        result["c"] = part_c(root, args.quick, args.split, json.loads(args.c_set), args.c_negatives, args.c_item_raters)
    if "d" in parts:
        result["d"] = part_d(root, args.quick)
    result["targets"] = judge(result)
    text = render(result)
    print(text)
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=1) + "\n")
    if args.markdown_out:
        args.markdown_out.write_text(text + "\n")


if __name__ == "__main__":
    main()
