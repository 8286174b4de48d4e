"""Thread settings under load: records/second of the real Trainer with each OpenMP wait policy and
thread count, on an otherwise idle machine, with a busy process on every core from the start, and
with the busy processes arriving mid-run.

torch's CPU kernels run on a libgomp (OpenMP) thread pool whose idle threads spin before they
sleep (GOMP_SPINCOUNT=300000 rounds by default). On a machine of its own that makes parallel
regions start fast; on a shared one the spinning threads take cores other processes need, and a
parallel region waits for a thread the scheduler has preempted. Each setting runs in a fresh
process (libgomp reads its variables once, when torch loads); within a round every case and
setting takes its turn, so that all see the same changes of the machine's other load.

    PYTHONPATH=container python benchmarks/threads.py [--encoders pooled_embedding,hcnn] [--rounds 2]
        [--cases idle,loaded,arriving] [--settings "1 thread,object2vec default"] [--seconds 3]

Cases: "idle" adds no load; "loaded" starts one busy-looping process per core (`--hogs`, default:
the number of cores) a second before the run; "arriving" starts them after the warm-up epoch, when
the timed epochs begin (a count chosen at start is stale then). Timed epochs run for at least
--seconds. The load average of the machine is printed too, since other work on it counts as well.
"object2vec default" is what `train` does when the user sets nothing (object2vec/threads.py):
libgomp's spin, one thread per core idle at start, re-counted every 0.5 s by a ThreadGovernor; the
old default (before 2026-12-02's change) slept at once (OMP_WAIT_POLICY=PASSIVE) and kept the
count chosen at start.
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
WAIT_VARIABLES = (
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "OMP_NUM_THREADS",
    "OBJECT2VEC_THREADS",
    "THREADS_BENCHMARK_START_ALL",
)

CHILD = """
import json, os, sys, time
import numpy as np
sys.path.insert(0, {benchmarks!r})
from object2vec.threads import ThreadGovernor, configure_threads, free_cores, thread_count
configure_threads()  # what `train` does before torch loads (a no-op for variables already set)
import torch
import train_throughput
train_throughput.RECORDS = {records}
from train_throughput import synthetic_dataset, trainer_epochs
threads = thread_count({cores}, free=free_cores())  # what `train` does (OBJECT2VEC_THREADS wins)
if os.environ.get({start_all_env!r}):
    threads = {cores}  # as if the cores had been idle at start: the governor alone must step aside
torch.set_num_threads(threads)
governor = ThreadGovernor.start({cores}) if {governed} else None  # what `train` does
dataset = synthetic_dataset(np.random.default_rng(0), 10000, 20)
epoch = trainer_epochs({network!r}, dataset, 10000, 20, governor)
epoch()  # warm-up
print("ready", flush=True)
sys.stdin.readline()  # the parent starts the busy processes of the "arriving" case now
start, epochs = time.perf_counter(), 0
while epochs < 1 or time.perf_counter() - start < {seconds}:
    epoch()
    epochs += 1
seconds = time.perf_counter() - start
print(json.dumps({{"rate": {records} * epochs / seconds, "threads": threads, "last": torch.get_num_threads(),
                  "changes": governor.changes if governor else 0}}))
"""
START_ALL_ENV = "THREADS_BENCHMARK_START_ALL"  # the child starts with every core, then re-counts
CASES = ("idle", "loaded", "arriving")  # arriving: the busy processes start after the warm-up epoch


def settings(cores: int) -> dict[str, tuple[dict[str, str], bool]]:
    """name: (environment, whether a ThreadGovernor re-sizes the threads as `train` does)."""
    return {
        # libgomp's own default: with OMP_WAIT_POLICY unset it spins 300,000 rounds before sleeping.
        "torch default (spin), all cores": (
            {"GOMP_SPINCOUNT": "300000", "OMP_NUM_THREADS": str(cores), "OBJECT2VEC_THREADS": str(cores)},
            False,
        ),
        "OMP_WAIT_POLICY=PASSIVE, all cores": (
            {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(cores), "OBJECT2VEC_THREADS": str(cores)},
            False,
        ),
        "1 thread": ({"OMP_NUM_THREADS": "1", "OBJECT2VEC_THREADS": "1"}, False),
        "PASSIVE, idle cores at start (old default)": ({"OMP_WAIT_POLICY": "PASSIVE"}, False),
        "object2vec default": ({}, True),
        # The default's answer to load it did not see at start, wherever the machine is busy.
        "object2vec default, forced to all cores at start": ({START_ALL_ENV: "1"}, True),
    }


def run_child(
    network: str,
    seconds: float,
    records: int,
    cores: int,
    env_changes: dict[str, str],
    governed: bool,
    hogs_after_warmup: int = 0,
) -> dict[str, float]:
    env = {key: value for key, value in os.environ.items() if key not in WAIT_VARIABLES}
    env.update(env_changes)
    env["PYTHONPATH"] = str(ROOT / "container")
    code = CHILD.format(
        benchmarks=str(ROOT / "benchmarks"),
        network=network,
        seconds=seconds,
        records=records,
        cores=cores,
        governed=governed,
        start_all_env=START_ALL_ENV,
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdin is not None and child.stdout is not None
    hogs: list[subprocess.Popen[bytes]] = []
    try:
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the {network} run failed before its warm-up ended")
        hogs = start_hogs(hogs_after_warmup)
        child.stdin.write("go\n")
        child.stdin.flush()
        output = child.stdout.read()
        if child.wait(timeout=1800) != 0:
            raise RuntimeError(f"the {network} run failed")
    finally:
        stop_hogs(hogs)
        if child.poll() is None:
            child.kill()
    return json.loads(output.strip().splitlines()[-1])


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
    parser.add_argument("--seconds", type=float, default=3.0, help="timed epochs run at least this long (default 3)")
    parser.add_argument("--records", type=int, default=16_384, help="pairs per epoch (default 16384)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each setting per case (default 2)")
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 1, help="busy processes when loaded")
    parser.add_argument("--cases", default=",".join(CASES), help=f"some of {', '.join(CASES)} (default all)")
    parser.add_argument("--settings", default="", help="runs the settings whose names occur in this text (default all)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the busy processes on the way out
    cores = len(os.sched_getaffinity(0))
    chosen = {name: value for name, value in settings(cores).items() if not args.settings or name in args.settings}
    cases = args.cases.split(",")
    print(f"{cores} cores; {load()}", flush=True)
    results: dict[tuple[str, str, str], list[float]] = {}
    for _ in range(args.rounds):  # every case in every round: all see the same changes of the load
        for network in args.encoders.split(","):
            for case in cases:
                hogs = start_hogs(args.hogs) if case == "loaded" else []
                try:
                    time.sleep(1.0 if hogs else 0.0)
                    for name, (env_changes, governed) in chosen.items():
                        arriving = args.hogs if case == "arriving" else 0
                        outcome = run_child(network, args.seconds, args.records, cores, env_changes, governed, arriving)
                        results.setdefault((case, network, name), []).append(outcome["rate"])
                        print(
                            f"{case:>8} {network:>16} {name:<44} {outcome['rate']:10,.0f} records/s "
                            f"({int(outcome['threads'])} thread(s) at start, {int(outcome['last'])} at the end, "
                            f"{int(outcome['changes'])} changes; {load()})",
                            flush=True,
                        )
                finally:
                    stop_hogs(hogs)
    print("\nmedian records/s [min-max]; under load / idle (1.0 = unaffected by the load)")
    for network in args.encoders.split(","):
        for name in chosen:
            idle = results.get(("idle", network, name))
            parts = [f"{network:>16} {name:<44}"]
            for case in cases:
                rates = results.get((case, network, name))
                if rates:
                    parts.append(f"{case} {statistics.median(rates):8,.0f} [{min(rates):,.0f}-{max(rates):,.0f}]")
                    if idle and case != "idle":
                        parts.append(f"{statistics.median(rates) / statistics.median(idle):.2f}")
            print("  ".join(parts))


if __name__ == "__main__":
    main()
