"""SIGTERM at any moment of `train`: exit code, failure file, and seconds from the signal to the exit.

For each delay, `train` starts on a copy of local_test/test_dir (with enough epochs that it is
still training at the last delay), gets SIGTERM that many seconds after it started, and is
waited for. In the image (--image) the delay counts from `docker run -d` returning, and the
signal is `docker kill --signal TERM` (no SIGKILL follows: a lost signal shows as a run that goes
on until --timeout). With --local the program runs as the image runs it
(`env --block-signal=TERM,INT python -m object2vec train`), without Docker.

    python benchmarks/stop_latency.py --image object2vec:latest [--delays 0,0.1,0.5,1,2]
    PYTHONPATH=container python benchmarks/stop_latency.py --local

Target: every run exits 143 with a TrainingStopped failure file within 5 s of the signal.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "container") not in sys.path:
    sys.path.insert(0, str(ROOT / "container"))
SAMPLE = ROOT / "local_test" / "test_dir"
DEFAULT_DELAYS = "0,0.01,0.02,0.05,0.1,0.2,0.3,0.5,0.75,1,1.25,1.5,2,3,5,8"
TARGET_S = 5.0
logger = logging.getLogger("stop_latency")


def make_opt_ml(dest: Path) -> Path:
    from object2vec.local_job import copy_job

    copy_job(SAMPLE, dest, epochs="100", early_stopping_patience="5")  # still training at the last delay
    os.chmod(dest, 0o777)
    return dest


def run_in_image(image: str, opt_ml: Path, delay: float, timeout: float) -> tuple[int | None, float]:
    name = f"o2v-stop-{uuid.uuid4().hex[:8]}"
    docker = ["docker"]
    subprocess.run(
        [*docker, "run", "-d", "--name", name, "--network", "none", "-v", f"{opt_ml}:/opt/ml", image, "train"],
        check=True,
        capture_output=True,
    )
    try:
        time.sleep(delay)
        subprocess.run([*docker, "kill", "--signal", "TERM", name], check=False, capture_output=True)
        sent = time.monotonic()
        try:
            waited = subprocess.run([*docker, "wait", name], capture_output=True, text=True, timeout=timeout)
            return int(waited.stdout.strip()), time.monotonic() - sent
        except subprocess.TimeoutExpired:
            return None, time.monotonic() - sent
    finally:
        subprocess.run([*docker, "rm", "-f", name], check=False, capture_output=True)


def run_locally(opt_ml: Path, delay: float, timeout: float) -> tuple[int | None, float]:
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(opt_ml), "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "container"), os.environ.get("PYTHONPATH")]))
    command = ["env", "--block-signal=TERM,INT", sys.executable, "-m", "object2vec", "train"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    process.terminate()
    sent = time.monotonic()
    try:
        return process.wait(timeout=timeout), time.monotonic() - sent
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None, time.monotonic() - sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--image", help="the image to run `train` in")
    where.add_argument("--local", action="store_true", help="run the program here, blocked as the image starts it")
    parser.add_argument("--delays", default=DEFAULT_DELAYS, help="seconds after the start, comma-separated")
    parser.add_argument(
        "--timeout", type=float, default=60, help="a run still going this long after the signal lost it"
    )
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    rows = []
    for delay in (float(value) for value in args.delays.split(",")):
        work = Path(tempfile.mkdtemp(prefix="stop_latency_"))
        opt_ml = make_opt_ml(work / "opt_ml")
        if args.image:
            code, seconds = run_in_image(args.image, opt_ml, delay, args.timeout)
        else:
            code, seconds = run_locally(opt_ml, delay, args.timeout)
        failure_file = opt_ml / "output" / "failure"
        failure = failure_file.read_text().split(":", 1)[0] if failure_file.exists() else "(none)"
        met = code == 143 and failure == "TrainingStopped" and seconds <= TARGET_S
        rows.append({"delay_s": delay, "exit_code": code, "failure": failure, "stop_s": round(seconds, 2), "met": met})
        logger.info(
            "SIGTERM %.2f s after the start: exit %s, %s, stopped %.2f s after the signal%s",
            delay, code, failure, seconds, "" if met else "  <- MISSED",
        )  # fmt: skip
        shutil.rmtree(work, ignore_errors=True)
    met = sum(row["met"] for row in rows)
    logger.info(
        "%d/%d runs met the target (exit 143, TrainingStopped, within %.0f s); slowest stop %.2f s; load %s",
        met, len(rows), TARGET_S, max(row["stop_s"] for row in rows), os.getloadavg(),
    )  # fmt: skip
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if met == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
