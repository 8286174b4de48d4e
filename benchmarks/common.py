"""Shared plumbing of the quality benchmarks (movielens.py, reuters.py, sts.py, run_all.py).

Everything goes through the real programs: `python -m object2vec prepare ...` and
`python -m object2vec train` as subprocesses (train on a temporary folder laid out like /opt/ml),
and the real serving Predictor, in process, for scores and embeddings.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import bench_data

ROOT = Path(__file__).resolve().parents[1]
CONTAINER = ROOT / "container"
# The first data root searched; find a data set with bench_data.require(key), which searches them all.
DATA = Path(os.environ.get(bench_data.ENV) or bench_data.SHARED)
if str(CONTAINER) not in sys.path:
    sys.path.insert(0, str(CONTAINER))

QUALITY_LINE = re.compile(
    r"#quality_metric: host=\S+, (?:epoch=(\d+), )?(train|validation|test) (\S+) <(?:loss|score)>=(\S+)"
)
NOT_INSTALLED = "not installed"


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class Row:
    """One use case: our metric and time next to the peer's, and the target."""

    use_case: str
    metric: str  # e.g. "RMSE"
    value: float | None
    seconds: float | None  # our whole fit (the train subprocess, wall clock)
    peer: str  # e.g. "Surprise SVD"
    peer_value: float | None = None
    peer_seconds: float | None = None
    peer_note: str = ""  # "not installed" when the peer was skipped
    target: str = ""  # human text, e.g. "<= 0.92 and < SVD"
    met: bool | None = None  # None: no target / not decidable
    missed_by: str = ""  # e.g. "0.012" when missed
    notes: str = ""
    beside: str = ""  # a transformer result: the use case of the row whose transformer column it fills

    def line(self) -> str:
        peer = self.peer_note or f"{fmt(self.peer_value)} in {fmt_s(self.peer_seconds)}"
        verdict = "" if self.met is None else ("met" if self.met else f"MISSED by {self.missed_by}")
        return (
            f"{self.use_case}: {self.metric}={fmt(self.value)} in {fmt_s(self.seconds)} | "
            f"{self.peer}: {peer} | target {self.target or '-'} {verdict}".rstrip()
        )


@dataclass
class Report:
    """What a benchmark script hands to run_all (--json-out): rows, learning curves, extras."""

    benchmark: str
    rows: list[Row] = field(default_factory=list)
    curves: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)  # run -> series -> [[epoch, v]]
    plots: list[str] = field(default_factory=list)  # PNG paths written by the script itself
    command: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def write(self, path: Path | None, echo: bool = True) -> None:
        """Print the rows (unless echo is off) and write the JSON to `path` (when given)."""
        for row in self.rows if echo else []:
            print(row.line(), flush=True)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(asdict(self), indent=2) + "\n")


def fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def fmt_s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f} s"


def judge_at_least(value: float, target: float) -> tuple[bool, str]:
    return (value >= target, "" if value >= target else f"{target - value:.4f}")


def judge_at_most(value: float, target: float) -> tuple[bool, str]:
    return (value <= target, "" if value <= target else f"{value - target:.4f}")


# ---------------------------------------------------------------------------------------------
# Timing and peers


@contextmanager
def timer() -> Iterator[list[float]]:
    """with timer() as t: ...; t[0] is the elapsed wall time in seconds afterwards."""
    box = [0.0]
    start = time.perf_counter()
    try:
        yield box
    finally:
        box[0] = time.perf_counter() - start


def hidden(name: str) -> bool:
    """OBJECT2VEC_BENCH_HIDE=surprise,fasttext,... pretends those peers are not installed (to check
    what CI, which installs none of them, runs)."""
    return bench_data.hidden(name)


def installed(module: str) -> bool:
    """Whether a module can be imported, without importing it."""
    if hidden(module):
        return False
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def package_dir(module: str) -> Path | None:
    """The folder of an installed package, found without importing it (recbole imports slowly)."""
    if hidden(module):
        return None
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def use_cpus(count: int | None) -> int:
    """Pin this process (and so every subprocess: train, fastText) to COUNT of its cores, as a
    container given COUNT cores would be; `train` sizes its torch threads from this affinity.
    Returns the number of cores in use."""
    cores = sorted(os.sched_getaffinity(0))
    if count:
        cores = cores[:count]
        os.sched_setaffinity(0, cores)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(len(cores))
    os.environ["OMP_NUM_THREADS"] = str(len(cores))
    return len(cores)


def machine_load() -> str:
    """`uptime`-like: load averages and CPU count, recorded next to every timing."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPUs"


# ---------------------------------------------------------------------------------------------
# The real programs


def object2vec_env(**extra: str) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": f"{CONTAINER}{os.pathsep}{path}" if path else str(CONTAINER), **extra}


def wait_until_serving(process: subprocess.Popen, port: int, timeout: float = 180, log: Path | None = None) -> None:
    """Return once `serve` (started as `process`) answers /ping with 200 on 127.0.0.1:PORT; raise
    RuntimeError if it exits first or does not answer in `timeout` seconds (then it is killed)."""
    see = f"; see {log}" if log else ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve exited with {process.returncode}{see}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"serve did not answer /ping in {timeout:.0f} s{see}")


def prepare(*args: str | Path, timeout: float = 600) -> dict[str, Any]:
    """Run `python -m object2vec prepare ARGS`; return its JSON report (stdout)."""
    command = [sys.executable, "-m", "object2vec", "prepare", *map(str, args)]
    result = subprocess.run(command, env=object2vec_env(), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"prepare failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-3000:]}")
    return json.loads(result.stdout)


def make_opt_ml(
    root: Path,
    hyperparameters: dict[str, Any],
    channels: dict[str, Sequence[Path]],
) -> Path:
    """Lay out ROOT/opt/ml like SageMaker does (object2vec.local_job): string hyperparameters,
    inputdataconfig.json, and each channel's files (hard links where possible, else copies)."""
    from object2vec.local_job import lay_out_job

    base = root / "opt" / "ml"
    if base.exists():
        shutil.rmtree(base)
    return lay_out_job(base, hyperparameters, channels)


@dataclass
class TrainRun:
    base: Path
    seconds: float  # wall clock of the whole `train` subprocess
    log: str
    returncode: int

    @property
    def model_dir(self) -> Path:
        return self.base / "model"

    def curves(self) -> dict[str, list[list[float]]]:
        """{"validation mean_squared_error": [[epoch, value], ...], ...} from the metric lines."""
        return parse_curves(self.log)

    def test_metrics(self) -> dict[str, float]:
        return {name: float(value) for epoch, split, name, value in QUALITY_LINE.findall(self.log) if split == "test"}

    def best_epoch(self) -> int | None:
        config = json.loads((self.model_dir / "model_config.json").read_text())
        return config.get("training", {}).get("best_epoch")


# A safety net for the full text runs, not a budget (the epochs cap is): a sequence encoder on
# Reuters takes 15-25 minutes an epoch on one core, and 3600 s killed such a run after 3 epochs.
LONG_TRAIN_TIMEOUT = 8 * 3600


def train(base: Path, timeout: float = 900, echo: bool = False) -> TrainRun:
    """Run the real `python -m object2vec train` on BASE (laid out like /opt/ml)."""
    env = object2vec_env(SAGEMAKER_BASE_DIR=str(base))
    command = [sys.executable, "-m", "object2vec", "train"]
    lines: list[str] = []
    start = time.perf_counter()
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if echo or "#quality_metric" in line:
                print("    " + line.rstrip(), file=sys.stderr, flush=True)
            if time.perf_counter() - start > timeout:
                process.kill()
                break
        returncode = process.wait()
    seconds = time.perf_counter() - start
    log = "".join(lines)
    (base / "train.log").write_text(log)
    if returncode != 0:
        failure = base / "output" / "failure"
        why = failure.read_text() if failure.exists() else log[-3000:]
        raise RuntimeError(f"train failed ({returncode}) on {base}:\n{why}")
    return TrainRun(base, seconds, log, returncode)


def parse_curves(log: str) -> dict[str, list[list[float]]]:
    curves: dict[str, list[list[float]]] = {}
    for epoch, split, name, value in QUALITY_LINE.findall(log):
        if epoch:
            curves.setdefault(f"{split} {name}", []).append([int(epoch), float(value)])
    return curves


def load_predictor(model_dir: Path) -> Any:
    """The serving Predictor on the CPU (what /invocations uses)."""
    from object2vec.serving.predictor import Predictor

    return Predictor.load(model_dir, device="cpu", max_instances=10**9)


def predict(predictor: Any, instances: list[dict[str, list[int]]], chunk: int = 50_000) -> Any:
    """Scores (pairs) or embeddings (single inputs) of every instance, as one numpy array."""
    import numpy as np

    parts = [predictor.predict(instances[i : i + chunk]).values for i in range(0, len(instances), chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def read_jsonl(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    records = []
    with path.open() as f:
        for line in f:
            if line.strip():
                records.append(json.loads(line))
                if limit is not None and len(records) >= limit:
                    break
    return records


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for record in records:
            f.write(json.dumps(record, separators=(",", ":")) + "\n")
    return path


def work_dir(given: str | None, name: str) -> Path:
    """--work-dir or a fresh temp folder (kept: it holds logs and the models)."""
    import tempfile

    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return Path(tempfile.mkdtemp(prefix=f"o2v-bench-{name}-"))


def command_line(script: str) -> str:
    """This run's command, without the options that only say where files go."""
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg in ("--work-dir", "--json-out", "--plots-dir"):
            skip = True
        elif not arg.startswith(("--work-dir=", "--json-out=", "--plots-dir=")):
            args.append(arg)
    return " ".join(["python", f"benchmarks/{script}", *args])


def common_arguments(parser: Any) -> None:
    parser.add_argument("--quick", action="store_true", help="tiny slice and few epochs: the smoke test")
    parser.add_argument("--work-dir", help="folder for data, /opt/ml trees and logs (default: a new temp folder)")
    parser.add_argument("--json-out", type=Path, help="write the rows and learning curves here (for run_all)")
    parser.add_argument("--plots-dir", type=Path, help="write this benchmark's own PNG plots here")
    parser.add_argument("--no-peer", action="store_true", help="skip the peer (its column says 'skipped')")
    parser.add_argument(
        "--download", action="store_true", help="fetch missing data sets (needs internet; see benchmarks/bench_data.py)"
    )
    parser.add_argument(
        "--cpus", type=int, help="run everything (ours and the peer) on this many cores (default: all available)"
    )
