"""Load benchmark of `serve`: the real server (nginx + gunicorn) on loopback against the bare predictor.

Reports
  (a) single-instance request latency, p50 and p99 (one client, sequential requests);
  (b) records/second for 6 MB JSON Lines pair-scoring payloads, with one client and with as many
      clients as the server has workers (what MaxConcurrentTransforms asks of a batch transform);
  (c) the in-process records/second of the same predictor on the same records, no HTTP:
      (c1) predictor.predict on already-decoded instances, (c2) decode + predict + encode,
      with the torch threads of one worker;
  and (b, one client) / (c1), / (c2): the same compute on both sides.

    PYTHONPATH=container python benchmarks/serve_load.py [--requests 2000] [--payloads 6]

The server is what `serve` runs: nginx in front of gunicorn when nginx is installed.
--compare-fronts instead measures what nginx costs: two servers on the same model, one behind
nginx and one with gunicorn alone (OBJECT2VEC_NGINX=off), (a) and (b) in alternating rounds so
that both see the same machine load, and the ratios.

Targets on 2 cores (pooled_embedding): p50 <= 3 ms, p99 <= 10 ms, (b) >= 50% of (c).
"""

from __future__ import annotations

import argparse
import http.client
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "container"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from object2vec.config import Hyperparameters  # noqa: E402
from object2vec.environment import available_cpus  # noqa: E402
from object2vec.model.io import save_model  # noqa: E402
from object2vec.model.object2vec import Object2VecModel  # noqa: E402
from object2vec.serving.codec import OutputFormat, decode_request, encode_response  # noqa: E402
from object2vec.serving.predictor import Predictor  # noqa: E402

logger = logging.getLogger("serve_load")

VOCAB = 10_000
MAX_LEN = 50
HYPERPARAMETERS = {
    "enc0_network": "pooled_embedding",
    "enc1_network": "pooled_embedding",
    "enc0_vocab_size": VOCAB,
    "enc1_vocab_size": VOCAB,
    "enc0_max_seq_len": MAX_LEN,
    "enc1_max_seq_len": MAX_LEN,
    "enc0_token_embedding_dim": 128,
    "enc1_token_embedding_dim": 128,
    "enc_dim": 128,
    "mlp_dim": 128,
    "mlp_layers": 1,
    "output_layer": "softmax",
    "num_classes": 2,
}
PAYLOAD_BYTES = 6 * 2**20 - 1024  # just under the 6 MB limit


def make_payload(rng: np.random.Generator) -> tuple[bytes, int]:
    """JSON Lines pairs of 1..20 ids each, up to PAYLOAD_BYTES."""
    lines = []
    size = 0
    while True:
        record = {
            "in0": rng.integers(0, VOCAB, int(rng.integers(1, 21))).tolist(),
            "in1": rng.integers(0, VOCAB, int(rng.integers(1, 21))).tolist(),
        }
        line = orjson.dumps(record) + b"\n"
        if size + len(line) > PAYLOAD_BYTES:
            return b"".join(lines), len(lines)
        lines.append(line)
        size += len(line)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post(port: int, body: bytes, content_type: str, accept: str) -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    connection.request("POST", "/invocations", body, {"Content-Type": content_type, "Accept": accept})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    if response.status != 200:
        raise RuntimeError(f"{response.status}: {data[:300]!r}")
    return data


def start_server(base: Path, port: int, **extra_env: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "SAGEMAKER_BIND_TO_PORT": str(port), **extra_env}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "container"), os.environ.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "object2vec", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    common.wait_until_serving(process, port)
    return process


def compare_fronts(base: Path, payload: bytes, records: int, requests: int, payloads: int) -> None:
    """(a) and (b) behind nginx and from gunicorn alone, in alternating rounds."""
    ports = {"nginx": free_port(), "gunicorn": free_port()}
    servers = {
        "nginx": start_server(base, ports["nginx"]),
        "gunicorn": start_server(base, ports["gunicorn"], OBJECT2VEC_NGINX="off"),
    }
    single = orjson.dumps({"instances": [{"in0": [1, 2, 3, 4, 5], "in1": [6, 7, 8]}]})
    latencies: dict[str, list[float]] = {name: [] for name in ports}
    rates: dict[str, list[float]] = {name: [] for name in ports}
    try:
        for port in ports.values():  # warm-up
            for _ in range(200):
                post(port, single, "application/json", "application/json")
            post(port, payload, "application/jsonlines", "application/jsonlines")
        rounds = 10
        for _ in range(rounds):
            for name, port in ports.items():
                for _ in range(requests // rounds):
                    start = time.perf_counter()
                    post(port, single, "application/json", "application/json")
                    latencies[name].append(time.perf_counter() - start)
        for _ in range(payloads):
            for name, port in ports.items():
                start = time.perf_counter()
                output = post(port, payload, "application/jsonlines", "application/jsonlines")
                rates[name].append(records / (time.perf_counter() - start))
                assert output.count(b"\n") == records
    finally:
        for server in servers.values():
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    summary = {}
    for name in ports:
        p50, p99 = np.percentile(np.array(latencies[name]) * 1000, [50, 99])
        summary[name] = (p50, p99, float(np.median(rates[name])))
        logger.info(
            "%-8s (a) p50 %.2f ms, p99 %.2f ms; (b) 6 MB JSON Lines, 1 client: %.0f records/s (median of %d)",
            name, p50, p99, summary[name][2], payloads,
        )  # fmt: skip
    (n50, n99, nrate), (g50, g99, grate) = summary["nginx"], summary["gunicorn"]
    logger.info(
        "nginx costs %+.2f ms at p50 (%.2fx), %+.2f ms at p99 (%.2fx); 6 MB payloads %.0f%% of gunicorn alone; load %s",
        n50 - g50, n50 / g50, n99 - g99, n99 / g99, 100 * nrate / grate, os.getloadavg(),
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="single-instance requests for (a)")
    parser.add_argument("--payloads", type=int, default=6, help="6 MB payloads for (b) and (c)")
    parser.add_argument("--compare-fronts", action="store_true", help="nginx + gunicorn against gunicorn alone")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch

    cores = available_cpus()
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    base = Path(tempfile.mkdtemp(prefix="serve_load_"))
    save_model(Object2VecModel(Hyperparameters.from_dict(HYPERPARAMETERS)), base / "model")
    payload, records = make_payload(rng)
    logger.info("cores %d; payload %.2f MiB, %d pair records", cores, len(payload) / 2**20, records)

    if args.compare_fronts:
        compare_fronts(base, payload, records, args.requests, args.payloads)
        return 0
    port = free_port()
    server = start_server(base, port)
    try:
        # (a) latency of one-instance requests, one client.
        single = orjson.dumps({"instances": [{"in0": [1, 2, 3, 4, 5], "in1": [6, 7, 8]}]})
        for _ in range(200):
            post(port, single, "application/json", "application/json")
        latencies = []
        for _ in range(args.requests):
            start = time.perf_counter()
            post(port, single, "application/json", "application/json")
            latencies.append(time.perf_counter() - start)
        p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])

        # (b) 6 MB JSON Lines payloads: one client (one worker busy, like (c)), then one client
        # per worker (workers = cores by default; what MaxConcurrentTransforms asks for).
        post(port, payload, "application/jsonlines", "application/jsonlines")  # warm-up
        http_rates = {}
        for clients in sorted({1, cores}):
            start = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                outputs = list(
                    pool.map(
                        lambda _: post(port, payload, "application/jsonlines", "application/jsonlines"),
                        range(args.payloads),
                    )
                )
            http_rates[clients] = records * args.payloads / (time.perf_counter() - start)
            assert all(output.count(b"\n") == records for output in outputs)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    # (c) the same predictor in this process, with the torch threads of one server worker
    # (cores // workers): more intra-op threads than free cores make torch far slower, not faster.
    torch.set_num_threads(1)  # serve: cores // workers, workers = cores by default
    predictor = Predictor.load(base / "model", device="cpu")
    decoded = decode_request(payload, "application/jsonlines")
    predictor.predict(decoded.instances)  # warm-up
    start = time.perf_counter()
    for _ in range(args.payloads):
        predictor.predict(decoded.instances, check_booleans=decoded.may_contain_booleans)
    bare_rate = records * args.payloads / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(args.payloads):
        request = decode_request(payload, "application/jsonlines")
        prediction = predictor.predict(request.instances, check_booleans=request.may_contain_booleans)
        encode_response(prediction, OutputFormat("application/jsonlines"))
    full_rate = records * args.payloads / (time.perf_counter() - start)

    logger.info("(a) single-instance latency: p50 %.2f ms, p99 %.2f ms (%d requests)", p50, p99, args.requests)
    for clients, rate in http_rates.items():
        logger.info("(b) HTTP, 6 MB JSON Lines pairs, %d client(s): %.0f records/s", clients, rate)
    logger.info("(c1) in-process predictor.predict on decoded instances: %.0f records/s", bare_rate)
    logger.info("(c2) in-process decode + predict + encode: %.0f records/s", full_rate)
    logger.info(
        "(b, 1 client)/(c1) = %.0f%%, (b, 1 client)/(c2) = %.0f%%",
        100 * http_rates[1] / bare_rate,
        100 * http_rates[1] / full_rate,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
