"""GPU check (a few minutes): the real `train` program on one GPU and, when several are visible,
DDP across all of them; with checkpoints on. Not part of CI (CI machines have no GPU).

Shape: 32,768 synthetic training pairs (+4,096 validation), both inputs 1..20 ids from a
5,000-token vocabulary, hcnn encoders (token_embedding_dim 64, enc_dim 128), mini_batch_size 256,
3 epochs, _seed 7. A pair is labelled 1 when its inputs share a token, so the model learns.

    PYTHONPATH=container python benchmarks/gpu_check.py [--records 32768] [--epochs 3] [--json-out r.json]

Checks, each a failure when it does not hold:
- _num_gpus=1 trains on cuda:0 and writes the model, a checkpoint per epoch and metric lines;
- with N > 1 GPUs, _num_gpus=auto starts N DDP processes (NCCL), writes the metric lines once,
  and its validation cross-entropy per epoch is within 0.02 of the one-GPU run (the same global
  mini-batches; the tolerance covers cuDNN/NCCL non-determinism and TF32);
and prints wall time and train throughput for each run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "container") not in sys.path:
    sys.path.insert(0, str(ROOT / "container"))

from object2vec.local_job import lay_out_job  # noqa: E402 - after the path to the checkout's package

VOCAB = 5000
TOLERANCE = 0.02
HYPERPARAMETERS = {
    "enc0_network": "hcnn",
    "enc0_vocab_size": str(VOCAB),
    "enc0_max_seq_len": "20",
    "enc0_token_embedding_dim": "64",
    "enc0_layers": "2",
    "enc_dim": "128",
    "mlp_dim": "128",
    "mlp_layers": "1",
    "mlp_activation": "relu",
    "num_classes": "2",
    "learning_rate": "0.002",
    "mini_batch_size": "256",
    "early_stopping_patience": "5",
    "_seed": "7",
}


def write_records(path: Path, count: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("w") as out:
        for _ in range(count):
            in0 = [rng.randrange(VOCAB) for _ in range(rng.randint(1, 20))]
            if rng.random() < 0.5:
                in1 = [rng.choice(in0)] + [rng.randrange(VOCAB) for _ in range(rng.randint(0, 19))]
            else:
                in1 = [rng.randrange(VOCAB) for _ in range(rng.randint(1, 20))]
            out.write(json.dumps({"in0": in0, "in1": in1, "label": int(bool(set(in0) & set(in1)))}) + "\n")


def make_job(base: Path, records: int, epochs: int, num_gpus: str) -> Path:
    hp = {**HYPERPARAMETERS, "epochs": str(epochs), "_num_gpus": num_gpus}
    lay_out_job(base, hp, {"train": None, "validation": None}, checkpoints=True)
    write_records(base / "input/data/train/train.jsonl", records, 1)
    write_records(base / "input/data/validation/validation.jsonl", max(records // 8, 512), 2)
    return base


def run(base: Path) -> dict:
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "PYTHONPATH": str(ROOT / "container")}
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "object2vec", "train"], env=env, capture_output=True, text=True, timeout=1200
    )
    seconds = time.monotonic() - start
    log = result.stdout + result.stderr
    if result.returncode != 0:
        print(log[-6000:], file=sys.stderr)
        raise SystemExit(f"train exited {result.returncode} in {base}")
    return {
        "seconds": round(seconds, 1),
        "throughput": [float(v) for v in re.findall(r"train throughput=(\S+) records/second", log)],
        "validation_cross_entropy": [float(v) for v in re.findall(r"validation cross_entropy <loss>=(\S+)", log)],
        "validation_accuracy": [float(v) for v in re.findall(r"validation accuracy <score>=(\S+)", log)],
        "metric_lines_per_epoch": log.count("epoch=0, validation cross_entropy"),
        "checkpoints": sorted(p.name for p in (base / "checkpoints").glob("*.json")),
        "device_line": next((line for line in log.splitlines() if "Training on" in line), ""),
        "processes_line": next((line for line in log.splitlines() if "training processes" in line), ""),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=32768)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    gpus = torch.cuda.device_count()
    if gpus == 0:
        raise SystemExit("no CUDA GPU visible: this check needs one")
    report: dict = {"gpus": gpus, "device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="o2v-gpu-check-") as tmp:
        single = run(make_job(Path(tmp) / "one", args.records, args.epochs, "1"))
        assert "cuda:0" in single["device_line"], single["device_line"]
        assert single["metric_lines_per_epoch"] == 1 and single["checkpoints"], single
        report["one_gpu"] = single
        if gpus > 1:
            ddp = run(make_job(Path(tmp) / "all", args.records, args.epochs, "auto"))
            assert f"Starting {gpus} training processes" in ddp["processes_line"], ddp["processes_line"]
            assert ddp["metric_lines_per_epoch"] == 1, ddp
            gap = max(
                abs(a - b)
                for a, b in zip(ddp["validation_cross_entropy"], single["validation_cross_entropy"], strict=True)
            )
            report["ddp_all_gpus"] = {**ddp, "max_validation_gap": gap, "tolerance": TOLERANCE}
            assert gap < TOLERANCE, f"DDP validation cross-entropy differs by {gap} (> {TOLERANCE})"
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")


if __name__ == "__main__":
    main()
