"""Thread settings under load: records/second of the real Trainer with each OpenMP wait policy and
thread count, on an otherwise idle machine and with a busy process on every core.

torch's CPU kernels run on a libgomp (OpenMP) thread pool whose idle threads spin before they
sleep (about 3 ms by default). On a machine of its own that makes parallel regions start fast; on
a shared one the spinning threads take cores other processes need, and a parallel region waits
for a thread the scheduler has preempted. Each setting runs in a fresh process (libgomp reads its
variables once, when torch loads), and the settings take turns so that all see the same load.

    PYTHONPATH=container python benchmarks/threads.py [--encoders pooled_embedding,hcnn] [--rounds 2]

Loaded means one busy-looping process per core (`--hogs`, default: the number of cores), started
by this script and stopped when it ends; the load average of the machine is printed too, since
other work on it counts as well. "object2vec default" is what `train` does when the user sets
nothing: OMP_WAIT_POLICY=PASSIVE and one thread per core idle at start (object2vec/threads.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Variables that decide how the thread pool waits; each setting states all of them.
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "OBJECT2VEC_THREADS")

CHILD = """
import json, os, sys, time
import numpy as np
sys.path.insert(0, {benchmarks!r})
from object2vec.threads import configure_threads, free_cores, thread_count
configure_threads()  # what `train` does before torch loads (a no-op for variables already set)
import torch
import train_throughput
train_throughput.RECORDS = {records}
from train_throughput import synthetic_dataset, trainer_epochs
threads = thread_count({cores}, free=free_cores())  # what `train` does (OBJECT2VEC_THREADS wins)
torch.set_num_threads(threads)
dataset = synthetic_dataset(np.random.default_rng(0), 10000, 20)
epoch = trainer_epochs({network!r}, dataset, 10000, 20)
epoch()  # warm-up
seconds = sum(epoch() for _ in range({epochs}))
print(json.dumps({{"rate": {records} * {epochs} / seconds, "threads": threads}}))
"""


def settings(cores: int) -> dict[str, dict[str, str]]:
    return {
        # libgomp's own default: with OMP_WAIT_POLICY unset it spins 300,000 rounds (about 3 ms).
        "torch default (spin ~3 ms), all cores": {
            "GOMP_SPINCOUNT": "300000",
            "OMP_NUM_THREADS": str(cores),
            "OBJECT2VEC_THREADS": str(cores),
        },
        "OMP_WAIT_POLICY=PASSIVE, all cores": {
            "OMP_WAIT_POLICY": "PASSIVE",
            "OMP_NUM_THREADS": str(cores),
            "OBJECT2VEC_THREADS": str(cores),
        },
        "GOMP_SPINCOUNT=10000, all cores": {
            "GOMP_SPINCOUNT": "10000",
            "OMP_NUM_THREADS": str(cores),
            "OBJECT2VEC_THREADS": str(cores),
        },
        "1 thread": {"OMP_NUM_THREADS": "1", "OBJECT2VEC_THREADS": "1"},
        "object2vec default (idle cores, PASSIVE)": {},
    }


def run_child(network: str, epochs: int, records: int, cores: int, env_changes: dict[str, str]) -> dict[str, float]:
    env = {key: value for key, value in os.environ.items() if key not in WAIT_VARIABLES}
    env.update(env_changes)
    env["PYTHONPATH"] = str(ROOT / "container")
    code = CHILD.format(
        benchmarks=str(ROOT / "benchmarks"), network=network, epochs=epochs, records=records, cores=cores
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def start_hogs(count: int) -> list[subprocess.Popen[bytes]]:
    """`count` processes that each keep one core busy (a Python busy loop)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def stop_hogs(hogs: list[subprocess.Popen[bytes]]) -> None:
    for hog in hogs:
        hog.terminate()
    for hog in hogs:
        hog.wait(timeout=30)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", default="pooled_embedding", help="comma-separated networks")
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per run (default 1)")
    parser.add_argument("--records", type=int, default=16_384, help="pairs per epoch (default 16384)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each setting per case (default 2)")
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 1, help="busy processes when loaded")
    parser.add_argument("--cases", default="idle,loaded", help="idle, loaded or both (default both)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the busy processes on the way out
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} cores; {load()}", flush=True)
    results: dict[tuple[str, str, str], list[float]] = {}
    for case in args.cases.split(","):
        hogs = start_hogs(args.hogs) if case == "loaded" else []
        try:
            time.sleep(1.0 if hogs else 0.0)
            for _ in range(args.rounds):
                for network in args.encoders.split(","):
                    for name, env_changes in settings(cores).items():
                        outcome = run_child(network, args.epochs, args.records, cores, env_changes)
                        results.setdefault((case, network, name), []).append(outcome["rate"])
                        print(
                            f"{case:>6} {network:>16} {name:<40} {outcome['rate']:10,.0f} records/s "
                            f"({int(outcome['threads'])} thread(s); {load()})",
                            flush=True,
                        )
        finally:
            stop_hogs(hogs)
    print("\nmedian records/s; loaded / idle (1.0 = unaffected by the load)")
    for network in args.encoders.split(","):
        for name in settings(cores):
            idle = results.get(("idle", network, name))
            loaded = results.get(("loaded", network, name))
            parts = [f"{network:>16} {name:<40}"]
            if idle:
                parts.append(f"idle {statistics.median(idle):10,.0f}")
            if loaded:
                parts.append(f"loaded {statistics.median(loaded):10,.0f}")
            if idle and loaded:
                parts.append(f"ratio {statistics.median(loaded) / statistics.median(idle):.2f}")
            print("  ".join(parts))


if __name__ == "__main__":
    main()
