"""Training with negative sampling: grouped batches (each document encoded once for itself and its
negatives, `negative_sampling_grouped=true`) against shuffled ones (every pair encodes its document),
through the real Trainer, epochs alternating in one process, one torch thread.

Shape (Reuters' multi-label use case, reuters.py's chosen model: token_embedding_dim 128,
enc_dim 128, MLP 256 relu, adam, batch 1024, negative_sampling_rate 48): --documents documents of
uniformly 40..256 ids from a 30,000-token vocabulary, each with 1 or 2 of 90 labels.
An epoch is documents x ~1.5 labels x 49 pairs. The ratio is shuffled / grouped seconds (the median
over the epoch pairs).

    PYTHONPATH=container python benchmarks/grouped_negatives.py [--documents 300] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "container") not in sys.path:
    sys.path.insert(0, str(ROOT / "container"))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads (reuters imports object2vec)
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import reuters  # noqa: E402

ENCODERS = ("pooled_embedding", "hcnn", "bilstm")
VOCAB, LABELS, RATE = 30_000, 90, 48


def multilabel_dataset(documents: int):  # noqa: ANN201 - PairDataset, imported lazily
    import torch

    from object2vec.data.records import PairDataset, TokenSequences

    rng = np.random.default_rng(0)
    docs, labels = [], []
    for _ in range(documents):
        doc = rng.integers(0, VOCAB, int(rng.integers(40, 257))).tolist()
        for label in rng.choice(LABELS, int(rng.integers(1, 3)), replace=False).tolist():
            docs.append(doc)
            labels.append([label])
    return PairDataset(
        TokenSequences.from_lists(docs), TokenSequences.from_lists(labels), torch.ones(len(docs), dtype=torch.int64)
    )


def trainer_epoch(encoder: str, grouped: bool, dataset):  # noqa: ANN001, ANN201
    import torch

    from object2vec.config import Hyperparameters
    from object2vec.model.object2vec import Object2VecModel
    from object2vec.training.signals import StopSignal
    from object2vec.training.trainer import Trainer

    changes = {"negative_sampling_grouped": grouped, "negative_sampling_rate": RATE, "epochs": 1}
    hp = Hyperparameters.from_dict(reuters.model_hyperparameters(encoder, VOCAB, LABELS, **changes))
    torch.manual_seed(0)
    trainer = Trainer(Object2VecModel(hp), hp, torch.device("cpu"), "bench", StopSignal())

    def epoch() -> float:
        start = time.perf_counter()
        trainer.train_epoch(dataset, 0)
        return time.perf_counter() - start

    return epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=300, help="documents (default 300)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs of each kind (default 2)")
    parser.add_argument("--encoders", default=",".join(ENCODERS))
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    dataset = multilabel_dataset(args.documents)
    load = common.machine_load()
    print(f"{args.documents} documents, {len(dataset)} positive pairs, rate {RATE}, 1 thread ({load})", flush=True)
    results = {}
    for encoder in [name for name in args.encoders.split(",") if name]:
        shuffled, grouped = trainer_epoch(encoder, False, dataset), trainer_epoch(encoder, True, dataset)
        pairs = [(shuffled(), grouped()) for _ in range(args.epochs)]
        ratio = statistics.median(s / g for s, g in pairs)
        results[encoder] = {"seconds": pairs, "ratio": ratio}
        print(
            f"{encoder}: an epoch shuffled {statistics.median(s for s, _ in pairs):.1f} s, grouped "
            f"{statistics.median(g for _, g in pairs):.1f} s: {ratio:.1f}x ({common.machine_load()})",
            flush=True,
        )
    if args.json_out:
        report = {"documents": args.documents, "pairs": len(dataset), "rate": RATE, "load": load, "results": results}
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
