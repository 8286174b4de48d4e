"""Streaming a pretrained embedding file: MB/s and memory of data/vocab.read_pretrained.

Generates a GloVe-style text file of --mb megabytes (300-d vectors by default, the shape of
glove.840B.300d.txt, whose 5.6 GB hold 2.2 M lines), a vocab of --vocab tokens of which --hit
are in the file, then times:
- the raw line loop (`for line in file`), the floor for any line-by-line reader;
- read_pretrained, which keeps only the vocab's rows;
and reports MB/s and the growth of the process's peak resident memory during the load, which
follows the vocab (found rows x dim x 4 bytes), not the file. The file is read from the page
cache after the first pass, so this measures the reader's CPU cost, the cost left once the
disk delivers.

    PYTHONPATH=container python benchmarks/glove_load.py [--mb 1024] [--dim 300] [--vocab 100000]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from object2vec.data.vocab import read_pretrained
from object2vec.record_format import open_data_file


def generate(path: Path, megabytes: int, dim: int, rng: np.random.Generator) -> int:
    """Write lines "tok<i> <dim floats>" until the file reaches `megabytes`; return the line count."""
    # 512 distinct vector strings, reused: formatting floats is slower than the reader under test.
    pool = [" ".join(f"{v:.5f}" for v in row).encode() for row in rng.standard_normal((512, dim))]
    target = megabytes << 20
    lines = 0
    with open(path, "wb") as out:
        written = 0
        while written < target:
            block = b"".join(b"tok%d %s\n" % (lines + k, pool[(lines + k) % 512]) for k in range(4096))
            out.write(block)
            written += len(block)
            lines += 4096
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=1024, help="file size in MiB (default 1024; 5.6 GB = 5340)")
    parser.add_argument("--dim", type=int, default=300)
    parser.add_argument("--vocab", type=int, default=100_000, help="vocab tokens (default 100,000)")
    parser.add_argument("--hit", type=float, default=0.8, help="fraction of the vocab present in the file")
    parser.add_argument("--keep", action="store_true", help="keep the generated file")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    folder = Path(tempfile.mkdtemp(prefix="glove_bench_"))
    path = folder / "vectors.txt"
    start = time.perf_counter()
    lines = generate(path, args.mb, args.dim, rng)
    size_mb = path.stat().st_size / 1e6
    print(
        f"generated {size_mb:,.0f} MB, {lines:,} lines of {args.dim}-d vectors in {time.perf_counter() - start:.1f} s"
    )
    found = int(args.vocab * args.hit)
    in_file = rng.choice(lines, size=found, replace=False)
    vocab = {f"tok{i}": k for k, i in enumerate(in_file)}
    vocab.update({f"missing{k}": found + k for k in range(args.vocab - found)})

    with open(path, "rb") as f:  # warm the page cache, and the floor: the bare line loop
        for _ in f:
            pass
    start = time.perf_counter()
    with open_data_file(path) as f:
        for _ in f:
            pass
    raw = time.perf_counter() - start
    print(f"bare line loop:   {size_mb / raw:8,.0f} MB/s ({raw:.2f} s)")

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    start = time.perf_counter()
    with open_data_file(path) as f:
        rows = read_pretrained(f, vocab, args.dim)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    print(
        f"read_pretrained:  {size_mb / elapsed:8,.0f} MB/s ({elapsed:.2f} s), {len(rows):,} of {args.vocab:,} vocab "
        f"tokens found, peak RSS growth {peak / 1e6:,.0f} MB (kept rows: {rows.vectors.nbytes / 1e6:,.0f} MB; "
        f"file: {size_mb:,.0f} MB)"
    )
    if not args.keep:
        os.unlink(path)
        folder.rmdir()


if __name__ == "__main__":
    main()
