"""Bucketing speed-up: training epoch time with bucket_width=0 vs bucket_width>0, hcnn and bilstm.

Shape (stated, so figures compare across machines): --records pairs (default 16,384) whose in0 and
in1 lengths are drawn independently from a long-tailed distribution on 1..--max-len (default 100:
half of the sequences are at most 15 tokens, a few reach 100, as sentences do); vocab 5,000,
token_embedding_dim 32, enc_dim 32, mlp_dim 32, 1 mlp layer, layers 2 (hcnn) / 1 (bilstm),
adam, mini_batch_size 256. A warm-up epoch on 1,024 records per setting, then the mean of --epochs
timed epochs, through the real Trainer. Padding is reported as the tokens a padded (B, L) batch
would hold / real tokens: the encoders themselves no longer pad (hcnn runs on the flat tokens,
bilstm on packed steps), so bucketing now changes the step count and the batches' make-up more
than the work per token.

Buckets are cells of the (len0, len1) grid, and each cell ends in a partial batch: the step count
grows with the number of cells (here 4,096 records give 92 batches instead of 16; 65,536 give 323
instead of 256), so bucketing pays off once the data set is large next to batch size x cells.

    PYTHONPATH=container python benchmarks/bucketing.py [--widths 0,10] [--networks hcnn,bilstm]
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch

from object2vec.config import Hyperparameters
from object2vec.data.batching import iterate_batches
from object2vec.data.records import PairDataset, TokenSequences
from object2vec.data.sampling import take
from object2vec.environment import available_cpus
from object2vec.model.object2vec import Object2VecModel
from object2vec.training.signals import StopSignal
from object2vec.training.trainer import Trainer

VOCAB = 5_000


def variable_length_dataset(records: int, max_len: int, rng: np.random.Generator) -> PairDataset:
    sides = []
    for _ in range(2):
        lengths = np.minimum(1 + rng.exponential(max_len / 5, records).astype(np.int64), max_len)
        values = rng.integers(0, VOCAB, int(lengths.sum()))
        sides.append(TokenSequences.from_flat(values.astype(np.int64), lengths))
    return PairDataset(sides[0], sides[1], torch.from_numpy(rng.integers(0, 2, records)))


def padding_ratio(dataset: PairDataset, width: int) -> float:
    batches = iterate_batches(dataset, 256, torch.Generator().manual_seed(0), width)
    padded = sum(b.in0.padded_ids().numel() + b.in1.padded_ids().numel() for b in batches)
    return padded / int(dataset.in0.lengths.sum() + dataset.in1.lengths.sum())


def seconds_per_epoch(network: str, width: int, max_len: int, epochs: int, dataset: PairDataset) -> float:
    hp = Hyperparameters.from_dict(
        {
            "enc0_network": network,
            "enc0_max_seq_len": max_len,
            "enc0_vocab_size": VOCAB,
            "enc0_token_embedding_dim": 32,
            "enc0_layers": 2 if network == "hcnn" else 1,
            "enc_dim": 32,
            "mlp_dim": 32,
            "mlp_layers": 1,
            "mini_batch_size": 256,
            "bucket_width": width,
            "epochs": 1,
        }
    )
    torch.manual_seed(0)
    trainer = Trainer(Object2VecModel(hp), hp, torch.device("cpu"), "bench", StopSignal())
    warmup = torch.arange(min(len(dataset), 1024))
    trainer.train_epoch(PairDataset(take(dataset.in0, warmup), take(dataset.in1, warmup), dataset.labels[warmup]), 0)
    start = time.perf_counter()
    for epoch in range(epochs):
        trainer.train_epoch(dataset, epoch)
    return (time.perf_counter() - start) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=16384)
    parser.add_argument("--max-len", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per setting (default 2)")
    parser.add_argument("--widths", default="0,10", help="bucket widths; the first is the baseline (default 0,10)")
    parser.add_argument("--networks", default="hcnn,bilstm")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: the available CPUs)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads or available_cpus())
    dataset = variable_length_dataset(args.records, args.max_len, np.random.default_rng(0))
    widths = [int(w) for w in args.widths.split(",")]
    lengths = dataset.in0.lengths.float()
    print(
        f"threads={torch.get_num_threads()} records={args.records} batch=256 lengths 1..{args.max_len} "
        f"(median {lengths.median():.0f}, mean {lengths.mean():.1f})"
    )
    for width in widths:
        print(f"bucket_width={width:>3}: padded/real tokens {padding_ratio(dataset, width):.2f}")
    for network in args.networks.split(","):
        times = [seconds_per_epoch(network, w, args.max_len, args.epochs, dataset) for w in widths]
        for width, seconds in zip(widths, times, strict=True):
            print(
                f"{network:>7} bucket_width={width:>3}: {seconds:7.2f} s/epoch, {args.records / seconds:9,.0f} "
                f"records/s, speed-up x{times[0] / seconds:.2f}"
            )


if __name__ == "__main__":
    main()
