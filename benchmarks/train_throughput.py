"""Training throughput (records/second) per encoder on synthetic data, through the real Trainer, and
with --reference next to a hand-written PyTorch loop of the same shape in the same process.

Shape (stated, so figures compare across machines): 65,536 pairs; both inputs are sequences of
uniformly 1..20 ids (mean 10.5) from a 10,000-token vocabulary (--max-len 1 --vocab 2000 gives the
user-item shape of the MovieLens use case); token_embedding_dim 32, enc_dim 32, mlp_dim 32,
mlp_layers 1, comparator "hadamard, concat, abs_diff", softmax with 2 classes, adam (fused),
mini_batch_size 1024, defaults otherwise (bucket_width 0). One warm-up epoch, then the timed ones.
Threads: the count is --threads (the default: all cores; with --reference 1 and all cores), fixed
as `train` runs OBJECT2VEC_THREADS, so idle threads sleep (OMP_WAIT_POLICY=PASSIVE unless a wait
policy is set): not the idle-core rule and re-counting of `train` (benchmarks/threads.py).

The reference (--reference) is the tightest loop we could write by hand for the same model: its
own nn.Modules, the flat ids of the dataset, `randperm` mini-batches and fused Adam; for
pooled_embedding `F.embedding_bag` with offsets and no padding; for hcnn `nn.Conv1d` on padded
batches bucketed by length (cells of 3 x 3 lengths); for bilstm cuDNN-style `nn.LSTM` over
`pack_padded_sequence` of length-sorted, bucketed batches. Reference and trainer epochs alternate,
so both see the same machine load; the ratio is trainer / reference records per second (the median
over the epoch pairs).

    PYTHONPATH=container python benchmarks/train_throughput.py [--epochs 3] [--encoders pooled_embedding,hcnn]
    PYTHONPATH=container python benchmarks/train_throughput.py --reference [--max-len 1 --vocab 2000]
"""

from __future__ import annotations

import os

from object2vec.threads import SPIN_COUNT_ENV, WAIT_POLICY_ENV, ThreadGovernor

# Before torch loads: the wait policy `train` uses for a fixed count (OMP_WAIT_POLICY=PASSIVE unless set).
if WAIT_POLICY_ENV not in os.environ and SPIN_COUNT_ENV not in os.environ:
    os.environ[WAIT_POLICY_ENV] = "PASSIVE"

import argparse  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

from object2vec.config import Hyperparameters  # noqa: E402
from object2vec.data.batching import bucket_batches  # noqa: E402
from object2vec.data.records import PairDataset, TokenSequences  # noqa: E402
from object2vec.environment import available_cpus  # noqa: E402
from object2vec.model.object2vec import Object2VecModel  # noqa: E402
from object2vec.training.signals import StopSignal  # noqa: E402
from object2vec.training.trainer import Trainer  # noqa: E402

RECORDS = 65_536
BATCH = 1024
DIM = 32
REFERENCE_BUCKET_WIDTH = 2  # the reference's length cells: 3 x 3 (in0, in1) lengths


def synthetic_dataset(rng: np.random.Generator, vocab: int, max_len: int) -> PairDataset:
    sides = []
    for _ in range(2):
        lengths = rng.integers(1, max_len + 1, RECORDS)
        values = rng.integers(0, vocab, int(lengths.sum()))
        sides.append(TokenSequences.from_flat(values.astype(np.int64), lengths.astype(np.int64)))
    labels = torch.from_numpy(rng.integers(0, 2, RECORDS))
    return PairDataset(sides[0], sides[1], labels)


def trainer_epochs(
    network: str, dataset: PairDataset, vocab: int, max_len: int, governor: ThreadGovernor | None = None
) -> Callable[[], float]:
    """One epoch of the real Trainer per call; returns its seconds. `governor`: as `train` passes it."""
    hp = Hyperparameters.from_dict(
        {
            "enc0_network": network,
            "enc0_max_seq_len": max_len,
            "enc0_vocab_size": vocab,
            "enc0_token_embedding_dim": DIM,
            "enc_dim": DIM,
            "mlp_dim": DIM,
            "mlp_layers": 1,
            "mini_batch_size": BATCH,
            "epochs": 1,
        }
    )
    trainer = Trainer(Object2VecModel(hp), hp, torch.device("cpu"), "bench", StopSignal(), governor=governor)

    def epoch() -> float:
        start = time.perf_counter()
        trainer.train_epoch(dataset, 0)
        return time.perf_counter() - start

    return epoch


# ---------------------------------------------------------------------------------------------
# The hand-written reference


class ReferenceEncoder(nn.Module):
    def __init__(self, network: str, vocab: int, layers: int) -> None:
        super().__init__()
        self.network = network
        self.embedding = nn.Embedding(vocab, DIM)
        nn.init.normal_(self.embedding.weight, std=0.1)
        if network == "hcnn":
            self.convs = nn.ModuleList(nn.Conv1d(DIM, DIM, 3, padding="same") for _ in range(layers))
            self.project = nn.Linear(DIM * layers, DIM)
        elif network == "bilstm":
            self.lstm = nn.LSTM(DIM, DIM, num_layers=layers, batch_first=True, bidirectional=True)
            self.project = nn.Linear(2 * DIM, DIM)
        else:
            self.project = nn.Linear(DIM, DIM)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.network == "pooled_embedding":
            return self.project(F.embedding_bag(ids, self.embedding.weight, offsets, mode="mean"))
        width = int(lengths.max())
        rows = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
        padded = torch.zeros(len(lengths), width, dtype=torch.int64)  # (B, L)
        padded[rows, torch.arange(len(ids)) - offsets[rows]] = ids
        if self.network == "hcnn":
            mask = (torch.arange(width) < lengths[:, None])[:, None, :]  # (B, 1, L)
            x = self.embedding(padded).transpose(1, 2)  # (B, D, L)
            levels = []
            for conv in self.convs:
                x = torch.relu(conv(x * mask)) + x
                levels.append(x.masked_fill(~mask, float("-inf")).amax(dim=2))
            return self.project(torch.cat(levels, dim=1))
        order = torch.sort(lengths, descending=True).indices  # cuDNN-style: longest first
        packed = pack_padded_sequence(self.embedding(padded[order]), lengths[order], batch_first=True)
        _, (hidden, _) = self.lstm(packed)  # (layers * 2, B, D)
        final = torch.empty(len(lengths), 2 * DIM)
        final[order] = torch.cat([hidden[-2], hidden[-1]], dim=1)
        return self.project(final)


def reference_epochs(network: str, dataset: PairDataset, vocab: int) -> Callable[[], float]:
    """One epoch of the hand-written loop per call; returns its seconds."""
    layers = {"hcnn": 4, "bilstm": 1}.get(network, 1)  # the documented "auto" layers
    encoders = nn.ModuleList(ReferenceEncoder(network, vocab, layers) for _ in range(2))
    mlp = nn.Sequential(nn.Linear(4 * DIM, DIM), nn.Linear(DIM, 2))
    params = [*encoders.parameters(), *mlp.parameters()]
    optimizer = torch.optim.Adam(params, lr=0.0004, fused=True)
    sides = (dataset.in0, dataset.in1)
    generator = torch.Generator().manual_seed(0)

    def gather(sequences: TokenSequences, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        lengths = sequences.lengths[index]
        offsets = torch.cumsum(lengths, 0) - lengths
        rows = torch.repeat_interleave(torch.arange(len(index)), lengths)
        ids = sequences.values[sequences.offsets[index][rows] + torch.arange(len(rows)) - offsets[rows]]
        return ids, offsets, lengths

    def epoch() -> float:
        start = time.perf_counter()
        if network == "pooled_embedding":
            order = torch.randperm(len(dataset), generator=generator)
            batches = [order[i : i + BATCH] for i in range(0, len(dataset), BATCH)]
        else:
            batches = bucket_batches(dataset, BATCH, REFERENCE_BUCKET_WIDTH, generator)
        for index in batches:
            a = encoders[0](*gather(sides[0], index))
            b = encoders[1](*gather(sides[1], index))
            logits = mlp(torch.cat([a * b, a, b, (a - b).abs()], dim=1))
            loss = F.cross_entropy(logits, dataset.labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return time.perf_counter() - start

    return epoch


# ---------------------------------------------------------------------------------------------


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPUs"


def side_by_side(
    network: str, epochs: int, dataset: PairDataset, vocab: int, max_len: int
) -> tuple[float, float, float]:
    """(trainer records/s, reference records/s, ratio): epochs alternate between the two, and the
    ratio is the median of the epoch pairs' ratios, so a burst of load on the machine moves it less."""
    ours, reference = trainer_epochs(network, dataset, vocab, max_len), reference_epochs(network, dataset, vocab)
    ours(), reference()  # warm-up
    pairs = [(reference(), ours()) for _ in range(epochs)]  # (reference seconds, trainer seconds)
    rate_ours = RECORDS * epochs / sum(o for _, o in pairs)
    rate_reference = RECORDS * epochs / sum(r for r, _ in pairs)
    return rate_ours, rate_reference, statistics.median(r / o for r, o in pairs)


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
    parser.add_argument(
        "--threads",
        default=None,
        help="torch threads, comma-separated (default: all cores; with --reference: 1 and all cores)",
    )
    parser.add_argument("--reference", action="store_true", help="also run the hand-written loop; print ratios")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cores = available_cpus()
    default_threads = sorted({1, cores}) if args.reference else [cores]
    threads = [int(t) for t in args.threads.split(",")] if args.threads else default_threads
    dataset = synthetic_dataset(np.random.default_rng(0), args.vocab, args.max_len)
    print(f"records={RECORDS} batch={BATCH} seq_len=1..{args.max_len} vocab={args.vocab} ({load()})", flush=True)
    for count in threads:
        torch.set_num_threads(count)
        for network in args.encoders.split(","):
            if not args.reference:
                epoch = trainer_epochs(network, dataset, args.vocab, args.max_len)
                epoch()  # warm-up
                rate = RECORDS * args.epochs / sum(epoch() for _ in range(args.epochs))
                print(f"threads={count} {network:>17}: {rate:12,.0f} records/second", flush=True)
                continue
            ours, reference, ratio = side_by_side(network, args.epochs, dataset, args.vocab, args.max_len)
            print(
                f"threads={count} {network:>17}: trainer {ours:10,.0f} records/s, reference {reference:10,.0f} "
                f"records/s, ratio {ratio:.2f} ({load()})",
                flush=True,
            )


if __name__ == "__main__":
    main()
