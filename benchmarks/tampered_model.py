"""Memory a tampered model takes before it is refused, against the size of its files.

Each case runs in a fresh process: the imports and one small model (torch's own first-use
costs) come first, then the peak RSS is reset (/proc/self/clear_refs) and the model dir is
loaded; the peak growth over the RSS before is what loading it allocated.

Cases, made from one trained-like model (pooled_embedding, vocab --vocab x 32; 200 is the size of
local_test's sample, 77 KB of files):
  genuine          the files as saved (loads)
  vocab_3m_x_100   the config claims enc0 vocab 3,000,000 x dim 100 (the issue's case: 2.5 GB
                   RSS per worker before it was refused)
  largest_config   both tables at the largest sizes the parser allows (3,000,000 x 1000, 12 GB each)
  float16          the weights re-saved as float16
  header_claims    the safetensors header claims a 3,000,000 x 100 table the file does not hold

    PYTHONPATH=container python benchmarks/tampered_model.py [--vocab 200]

Target: every tampered model is refused with a ClientError before it allocates more than 2x the
size of its files.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "container"))
logger = logging.getLogger("tampered_model")

HYPERPARAMETERS = {
    "enc0_network": "pooled_embedding",
    "enc0_vocab_size": 200,
    "enc0_max_seq_len": 20,
    "enc0_token_embedding_dim": 32,
    "enc1_network": "enc0",
    "enc_dim": 32,
    "mlp_dim": 32,
    "mlp_layers": 1,
    "output_layer": "softmax",
    "num_classes": 2,
}

PROBE = """
import sys
from pathlib import Path
from object2vec.config import Hyperparameters
from object2vec.errors import ClientError
from object2vec.model.io import load_model
from object2vec.model.object2vec import Object2VecModel
import torch
Object2VecModel(Hyperparameters.from_dict({hp!r}))  # torch's first-use costs, before the measure
with torch.device("meta"):
    Object2VecModel(Hyperparameters.from_dict({hp!r}))

def status(field):
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) for line in lines if line.startswith(field + ":")) * 1024

with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # resets VmHWM, the peak RSS
before = status("VmRSS")
try:
    load_model(Path(sys.argv[1]))
    outcome = "loaded"
except ClientError as err:
    outcome = "ClientError: " + str(err)[:160]
print(status("VmHWM") - before)
print(outcome)
"""


def make_cases(work: Path, hyperparameters: dict[str, object]) -> dict[str, Path]:
    import torch
    from safetensors.torch import load_file, save_file

    from object2vec.config import Hyperparameters
    from object2vec.model.io import save_model
    from object2vec.model.object2vec import Object2VecModel

    torch.manual_seed(0)
    genuine = work / "genuine"
    save_model(Object2VecModel(Hyperparameters.from_dict(hyperparameters)), genuine)
    cases = {"genuine": genuine}

    def variant(name: str) -> Path:
        path = work / name
        shutil.copytree(genuine, path)
        cases[name] = path
        return path

    def edit_config(path: Path, **changes: object) -> None:
        config = json.loads((path / "model_config.json").read_text())
        config["hyperparameters"].update(changes)
        (path / "model_config.json").write_text(json.dumps(config))

    edit_config(variant("vocab_3m_x_100"), enc0_vocab_size=3_000_000, enc0_token_embedding_dim=100)
    edit_config(
        variant("largest_config"),
        enc0_vocab_size=3_000_000,
        enc0_token_embedding_dim=1000,
        enc1_network="pooled_embedding",
        enc1_vocab_size=3_000_000,
        enc1_token_embedding_dim=1000,
        enc1_max_seq_len=20,
    )
    half = variant("float16") / "model.safetensors"
    save_file({k: v.half() for k, v in load_file(str(half)).items()}, str(half), metadata={"format": "pt"})
    claims = variant("header_claims") / "model.safetensors"
    data = claims.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    name = "encoders.0.embedding.weight"
    header[name]["shape"] = [3_000_000, 100]
    header[name]["data_offsets"][1] = header[name]["data_offsets"][0] + 3_000_000 * 100 * 4
    text = json.dumps(header).encode()
    claims.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + size :])
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=200, help="rows of the model's token table")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    hyperparameters = {**HYPERPARAMETERS, "enc0_vocab_size": args.vocab}
    work = Path(tempfile.mkdtemp(prefix="tampered_model_"))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "container"), "OMP_NUM_THREADS": "1"}
    probe = PROBE.format(hp=HYPERPARAMETERS)
    met = True
    try:
        for name, path in make_cases(work, hyperparameters).items():
            files = sum(f.stat().st_size for f in path.iterdir())
            result = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, env=env)
            if result.returncode != 0:
                logger.info("%s: the probe failed:\n%s", name, result.stderr[-2000:])
                met = False
                continue
            grown, outcome = result.stdout.strip().split("\n", 1)
            ratio = int(grown) / files
            ok = name == "genuine" or (outcome.startswith("ClientError") and ratio <= 2)
            met &= ok
            logger.info(
                "%-15s files %7.1f KB, peak RSS growth %8.1f KB (%.2fx the files): %s%s",
                name, files / 1024, int(grown) / 1024, ratio, outcome[:110], "" if ok else "  <- MISSED",
            )  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
