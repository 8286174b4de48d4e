"""row_sparse vs dense token embeddings: training step time with a 1,000,000-token vocabulary.

Shape (stated, so figures compare across machines): vocab --vocab (default 1,000,000),
token_embedding_dim --dim (default 64), pooled_embedding encoders with tied weights, enc_dim 64,
mlp_dim 64, 1 mlp layer, mini_batch_size 256, sequences of 20 ids drawn uniformly from the
vocabulary. A step is forward + backward + optimizer step through Trainer's optimizer
(make_optimizer); --warmup untimed steps, then the mean of --steps timed ones. With dense storage
every step computes and applies a gradient for all vocab rows; row_sparse touches only the rows
of the batch (at most 256 x 20 x 2 = 10,240).

    PYTHONPATH=container python benchmarks/row_sparse.py [--optimizers adam,adagrad,sgd]
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from object2vec.config import Hyperparameters
from object2vec.data.batching import Tokens
from object2vec.environment import available_cpus
from object2vec.model.object2vec import Object2VecModel
from object2vec.training.optimizers import make_optimizer
from object2vec.training.trainer import compute_loss

BATCH, LENGTH = 256, 20


def step_seconds(storage: str, optimizer_name: str, vocab: int, dim: int, warmup: int, steps: int) -> float:
    hp = Hyperparameters.from_dict(
        {
            "enc0_network": "pooled_embedding",
            "enc0_max_seq_len": LENGTH,
            "enc0_vocab_size": vocab,
            "enc0_token_embedding_dim": dim,
            "tied_token_embedding_weight": "true",
            "enc_dim": 64,
            "mlp_dim": 64,
            "mlp_layers": 1,
            "optimizer": optimizer_name,
            "token_embedding_storage_type": storage,
        }
    )
    torch.manual_seed(0)
    model = Object2VecModel(hp)
    optimizer = make_optimizer(hp, model)
    generator = torch.Generator().manual_seed(0)
    lengths = torch.full((BATCH,), LENGTH)

    def step() -> None:
        ids0 = torch.randint(0, vocab, (BATCH, LENGTH), generator=generator)
        ids1 = torch.randint(0, vocab, (BATCH, LENGTH), generator=generator)
        labels = torch.randint(0, 2, (BATCH,), generator=generator)
        loss = compute_loss(model(Tokens.from_padded(ids0, lengths), Tokens.from_padded(ids1, lengths)), labels, True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--optimizers", default="adam,adagrad,sgd")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: the available CPUs)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads or available_cpus())
    print(f"threads={torch.get_num_threads()} vocab={args.vocab:,} dim={args.dim} batch={BATCH}x{LENGTH} ids x 2")
    for name in args.optimizers.split(","):
        dense = step_seconds("dense", name, args.vocab, args.dim, args.warmup, args.steps)
        sparse = step_seconds("row_sparse", name, args.vocab, args.dim, args.warmup, args.steps)
        print(
            f"{name:>8}: dense {dense * 1e3:8.1f} ms/step, row_sparse {sparse * 1e3:7.1f} ms/step, "
            f"dense/row_sparse x{dense / sparse:.1f}"
        )


if __name__ == "__main__":
    main()
