"""Scoring requests that repeat sequences: each distinct sequence encoded once vs once per pair.

Multi-label tagging scores every document against every label (Reuters: 3,019 test documents x 90
labels), recommendation scores a user against many items: most pairs of such a request repeat a
sequence. The predictor encodes each distinct sequence of a request once and scores the pairs from
the encodings; this script times that (the predictor's forward, input checks excluded) against
encoding both sides of every pair (its path for requests whose pairs are all distinct, which it
used for every request before), in the same process, alternating, one torch thread, and checks
that both give the same scores.

The model is reuters.py's chosen one (enc0 = the document encoder, max_seq_len 256, 128-d tokens;
enc1 = a pooled label id; enc_dim 128, MLP 256), untrained (speed does not depend on the weights);
documents of 40-256 ids from a 30,000-token vocabulary.

    PYTHONPATH=container python benchmarks/repeated_pairs.py [--documents 100] [--labels 90]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "container") not in sys.path:
    sys.path.insert(0, str(ROOT / "container"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import reuters  # noqa: E402

ENCODERS = ("pooled_embedding", "hcnn", "bilstm")
VOCAB = 30_000


def reuters_like_predictor(encoder: str, labels: int):  # noqa: ANN201 - Predictor, imported lazily
    from object2vec.config import Hyperparameters
    from object2vec.model.object2vec import Object2VecModel
    from object2vec.serving.predictor import Predictor

    hp = Hyperparameters.from_dict(reuters.model_hyperparameters(encoder, VOCAB, labels))
    return Predictor(Object2VecModel(hp), hp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=100, help="documents per request (default 100)")
    parser.add_argument("--labels", type=int, default=90, help="labels each document is scored against (default 90)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds of each path (default 3; the best counts)")
    parser.add_argument("--encoders", default=",".join(ENCODERS))
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()

    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    documents = [rng.integers(0, VOCAB, size=int(rng.integers(40, 257))).tolist() for _ in range(args.documents)]
    instances = [{"in0": doc, "in1": [label]} for doc in documents for label in range(args.labels)]
    load = common.machine_load()
    results = {}
    for encoder in [name for name in args.encoders.split(",") if name]:
        predictor = reuters_like_predictor(encoder, args.labels)
        in0 = predictor._sequences(instances, 0, True).truncated(predictor.hp.enc0.max_seq_len)
        in1 = predictor._sequences(instances, 1, True)
        timings: dict[str, list[float]] = {"distinct": [], "every_pair": []}
        outputs = {}
        for _ in range(args.repeats):
            for name, forward in (
                ("distinct", predictor._forward_pairs),
                ("every_pair", predictor._forward_distinct_pairs),
            ):
                start = time.perf_counter()
                outputs[name] = forward(in0, in1)
                timings[name].append(time.perf_counter() - start)
        best = {name: min(values) for name, values in timings.items()}
        gap = float(np.abs(outputs["distinct"] - outputs["every_pair"]).max())
        results[encoder] = {"seconds": best, "speedup": best["every_pair"] / best["distinct"], "max_abs_diff": gap}
        print(
            f"{encoder}: {len(instances)} pairs ({args.documents} documents x {args.labels} labels): "
            f"distinct sequences once {best['distinct']:.3f} s, every pair {best['every_pair']:.3f} s: "
            f"{best['every_pair'] / best['distinct']:.1f}x; scores differ by at most {gap:.2e}",
            flush=True,
        )
    report = {"load_before": load, "load_after": common.machine_load(), "threads": 1, "results": results}
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
