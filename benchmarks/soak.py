"""Soak test of `serve`: N clients for M minutes, with gunicorn workers killed along the way.

Starts the real server (nginx in front when installed, or --no-nginx) on a pooled_embedding model
the size of serve_load.py's, then runs --clients client threads, each on its own keep-alive
connection, for --minutes: 80% single-pair JSON requests, 15% JSON Lines batches of 10-100 pairs,
5% JSON Lines batches of about 1 MB. At each --kill-at fraction of the run one worker gets
SIGKILL (gunicorn starts another, which loads the model again). Every --interval seconds it
reports requests/s, errors (any answer but 200, or no answer), p50/p99 latency and the RSS of the
whole server (serve, nginx, gunicorn's arbiter and workers), and a summary at the end.

    PYTHONPATH=container python benchmarks/soak.py [--clients 8] [--minutes 10] [--kill-at 0.33,0.66]
        [--interval 60] [--no-nginx] [--json-out soak.json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "container"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

logger = logging.getLogger("soak")

VOCAB = 10_000
HYPERPARAMETERS = {
    "enc0_network": "pooled_embedding",
    "enc1_network": "pooled_embedding",
    "enc0_vocab_size": VOCAB,
    "enc1_vocab_size": VOCAB,
    "enc0_max_seq_len": 50,
    "enc1_max_seq_len": 50,
    "enc0_token_embedding_dim": 128,
    "enc1_token_embedding_dim": 128,
    "enc_dim": 128,
    "mlp_dim": 128,
    "mlp_layers": 1,
    "output_layer": "softmax",
    "num_classes": 2,
}


@dataclass
class Sample:
    at: float  # seconds since the start
    seconds: float
    ok: bool
    kind: str


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds since the start, bytes)
    kills: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def pair(rng: random.Random) -> dict[str, list[int]]:
    return {
        "in0": [rng.randrange(VOCAB) for _ in range(rng.randint(1, 20))],
        "in1": [rng.randrange(VOCAB) for _ in range(rng.randint(1, 20))],
    }


def make_request(rng: random.Random) -> tuple[str, bytes, str, int]:
    roll = rng.random()
    if roll < 0.80:
        return "single", json.dumps({"instances": [pair(rng)]}).encode(), "application/json", 1
    count = rng.randint(10, 100) if roll < 0.95 else 4000  # about 1 MB
    lines = b"".join(json.dumps(pair(rng)).encode() + b"\n" for _ in range(count))
    return ("batch" if count <= 100 else "1MB"), lines, "application/jsonlines", count


def client(port: int, seed: int, until: float, start: float, run: Run) -> None:
    rng = random.Random(seed)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while time.monotonic() < until:
        kind, body, content_type, records = make_request(rng)
        began = time.monotonic()
        ok = False
        error = None
        try:
            connection.request("POST", "/invocations", body, {"Content-Type": content_type, "Accept": content_type})
            response = connection.getresponse()
            data = response.read()
            answers = data.count(b"\n") if content_type == "application/jsonlines" else data.count(b'{"scores"')
            ok = response.status == 200 and answers == records
            if not ok:
                error = f"{response.status}" if response.status != 200 else "wrong answer count"
            if response.getheader("Connection", "").lower() == "close":
                connection.close()
        except (OSError, http.client.HTTPException) as err:
            error = type(err).__name__
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        ended = time.monotonic()
        with run.lock:
            run.samples.append(Sample(began - start, ended - began, ok, kind))
            if error:
                run.errors[error] = run.errors.get(error, 0) + 1
    connection.close()


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            found += tree(int(child))
    return found


def rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def workers(serve_pid: int) -> list[int]:
    """The gunicorn workers: the children of serve's child that is not nginx."""
    for pid in tree(serve_pid)[1:]:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"nginx" not in command:
            return tree(pid)[1:]  # the arbiter's children
    return []


def start_server(base: Path, port: int, nginx: bool, workers_: int | None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "SAGEMAKER_BIND_TO_PORT": str(port)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "container"), os.environ.get("PYTHONPATH")]))
    if not nginx:
        env["OBJECT2VEC_NGINX"] = "off"
    if workers_:
        env["MODEL_SERVER_WORKERS"] = str(workers_)
    log = (base / "serve.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "object2vec", "serve"], env=env, stdout=log, stderr=log)
    common.wait_until_serving(process, port, log=base / "serve.log")
    return process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def summarize(samples: list[Sample], seconds: float) -> dict[str, float]:
    latencies = np.array([s.seconds for s in samples]) * 1000 if samples else np.zeros(1)
    return {
        "requests": len(samples),
        "requests_per_s": len(samples) / seconds,
        "errors": int(sum(not s.ok for s in samples)),
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--kill-at", default="0.33,0.66", help="fractions of the run when a worker gets SIGKILL")
    parser.add_argument("--interval", type=float, default=60, help="seconds per reported row")
    parser.add_argument("--no-nginx", action="store_true")
    parser.add_argument("--workers", type=int, help="MODEL_SERVER_WORKERS (default: the cores)")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch

    from object2vec.config import Hyperparameters
    from object2vec.model.io import save_model
    from object2vec.model.object2vec import Object2VecModel

    torch.manual_seed(0)
    base = Path(tempfile.mkdtemp(prefix="soak_"))
    save_model(Object2VecModel(Hyperparameters.from_dict(HYPERPARAMETERS)), base / "model")
    port = free_port()
    server = start_server(base, port, nginx=not args.no_nginx, workers_=args.workers)
    logger.info(
        "serve on :%d (%s), %d clients for %.1f min, load %s",
        port, "gunicorn only" if args.no_nginx else "nginx + gunicorn", args.clients, args.minutes, os.getloadavg(),
    )  # fmt: skip
    run = Run()
    duration = args.minutes * 60
    start = time.monotonic()
    until = start + duration
    threads = [
        threading.Thread(target=client, args=(port, seed, until, start, run), daemon=True)
        for seed in range(args.clients)
    ]
    for thread in threads:
        thread.start()
    kills = sorted(float(f) * duration for f in args.kill_at.split(",") if f.strip())
    try:
        while time.monotonic() < until:
            now = time.monotonic() - start
            run.rss.append((now, rss(tree(server.pid))))
            if kills and now >= kills[0]:
                kills.pop(0)
                victims = workers(server.pid)
                if victims:
                    os.kill(random.Random(len(run.kills)).choice(victims), signal.SIGKILL)
                    run.kills.append(now)
                    logger.info("%.0f s: SIGKILL to a worker (of %d)", now, len(victims))
            time.sleep(1)
        for thread in threads:
            thread.join(timeout=90)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)

    rows = []
    edges = np.arange(0, duration + 1e-9, args.interval)
    for low in edges[:-1] if len(edges) > 1 else [0.0]:
        high = min(low + args.interval, duration)
        window = [s for s in run.samples if low <= s.at < high]
        memory = [b for t, b in run.rss if low <= t < high]
        row = {"from_s": float(low), "to_s": float(high), **summarize(window, high - low)}
        row["rss_mb"] = max(memory) / 2**20 if memory else 0.0
        row["kills"] = int(sum(low <= k < high for k in run.kills))
        rows.append(row)
    total = summarize(run.samples, duration)
    total["rss_mb_first"] = run.rss[0][1] / 2**20
    total["rss_mb_last"] = run.rss[-1][1] / 2**20
    total["rss_mb_max"] = max(b for _, b in run.rss) / 2**20
    total["kills"] = len(run.kills)
    total["errors_by_kind"] = run.errors
    print("| minutes | requests/s | errors | p50 ms | p99 ms | RSS MB (max) | worker kills |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['from_s'] / 60:g}-{row['to_s'] / 60:g} | {row['requests_per_s']:.0f} | {row['errors']} | "
            f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['rss_mb']:.0f} | {row['kills']} |"
        )
    print(
        f"| all | {total['requests_per_s']:.0f} | {total['errors']} | {total['p50_ms']:.1f} | {total['p99_ms']:.1f} | "
        f"{total['rss_mb_max']:.0f} | {total['kills']} |"
    )
    logger.info(
        "%d requests, %d errors %s, RSS %.0f MB at the start, %.0f MB at the end; load %s",
        total["requests"], total["errors"], run.errors, total["rss_mb_first"], total["rss_mb_last"], os.getloadavg(),
    )  # fmt: skip
    if args.json_out:
        args.json_out.write_text(json.dumps({"rows": rows, "total": total}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
