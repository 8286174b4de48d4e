"""Training throughput (records/second) per encoder on synthetic data, through the real Trainer.

Shape (stated, so figures compare across machines): 65,536 pairs; both inputs are sequences of
uniformly 1..20 ids (mean 10.5) from a 10,000-token vocabulary (--max-len 1 --vocab 2000 gives the
user-item shape of the MovieLens use case); token_embedding_dim 32,
enc_dim 32, mlp_dim 32, mlp_layers 1, comparator "hadamard, concat, abs_diff", softmax with 2
classes, adam, mini_batch_size 1024. One warm-up epoch, then the mean of the timed epochs.

    PYTHONPATH=container python benchmarks/train_throughput.py [--epochs 3] [--encoders pooled_embedding,hcnn]
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch

from object2vec.config import Hyperparameters
from object2vec.data.records import PairDataset, TokenSequences
from object2vec.environment import available_cpus
from object2vec.model.object2vec import Object2VecModel
from object2vec.training.signals import StopSignal
from object2vec.training.trainer import Trainer

RECORDS = 65_536


def synthetic_dataset(rng: np.random.Generator, vocab: int, max_len: int) -> PairDataset:
    sides = []
    for _ in range(2):
        lengths = rng.integers(1, max_len + 1, RECORDS)
        values = rng.integers(0, vocab, int(lengths.sum()))
        sides.append(TokenSequences.from_flat(values.astype(np.int64), lengths.astype(np.int64)))
    labels = torch.from_numpy(rng.integers(0, 2, RECORDS))
    return PairDataset(sides[0], sides[1], labels)


def measure(network: str, epochs: int, dataset: PairDataset, vocab: int, max_len: int) -> float:
    hp = Hyperparameters.from_dict(
        {
            "enc0_network": network,
            "enc0_max_seq_len": max_len,
            "enc0_vocab_size": vocab,
            "enc0_token_embedding_dim": 32,
            "enc_dim": 32,
            "mlp_dim": 32,
            "mlp_layers": 1,
            "mini_batch_size": 1024,
            "epochs": 1,
        }
    )
    trainer = Trainer(Object2VecModel(hp), hp, torch.device("cpu"), "bench", StopSignal())
    trainer.train_epoch(dataset, 0)  # warm-up
    start = time.perf_counter()
    for epoch in range(epochs):
        trainer.train_epoch(dataset, epoch)
    return RECORDS * epochs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per encoder (default 3)")
    parser.add_argument("--encoders", default="pooled_embedding,hcnn,bilstm", help="comma-separated networks")
    parser.add_argument("--vocab", type=int, default=10_000, help="vocabulary size (default 10000)")
    parser.add_argument(
        "--max-len",
        type=int,
        default=20,
        help="sequence lengths are uniform in 1..max-len (default 20; 1 = user-item ids)",
    )
    parser.add_argument("--threads", type=int, default=available_cpus(), help="torch threads (default: all cores)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    dataset = synthetic_dataset(np.random.default_rng(0), args.vocab, args.max_len)
    print(
        f"threads={torch.get_num_threads()} records={RECORDS} batch=1024 seq_len=1..{args.max_len} vocab={args.vocab}"
    )
    for network in args.encoders.split(","):
        rate = measure(network, args.epochs, dataset, args.vocab, args.max_len)
        print(f"{network:>17}: {rate:12,.0f} records/second")


if __name__ == "__main__":
    main()
