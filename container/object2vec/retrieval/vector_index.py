"""The vectors behind retrieval, held by faiss: exact inner-product search, or IVF above a size.

**exact** (catalogues up to retrieval_exact_max candidates, 50,000 by default): an IndexFlatIP, every
candidate's q . b is computed for every query (SIMD, or BLAS for batches).

**ivf** (larger catalogues): an IndexIVFFlat. Why IVF and not HNSW: on one core, IVF built 1M
64-d vectors at about 90k/s (k-means on 32 points per cell, then one assignment pass) where HNSW
inserted 3-6k vectors/s (M=16/32, efConstruction=40: measured here, benchmarks/results_notes.md),
far from the 50k/s a re-index of a million-item catalogue should take; IVF-Flat adds 8 bytes per
vector (its ids) where HNSW adds its graph (2 x M x 4 bytes per vector, as much again as 64-d
vectors), and its one knob, nprobe, trades speed for recall plainly. Neither finds the neighbours
of structureless (isotropic Gaussian) data much faster than a scan (measured); IVF does on
clustered data, which learned embeddings are.
Maximum inner product search is turned into nearest-neighbour search, which IVF's k-means suits:
each vector b is stored as [b, sqrt(M^2 - |b|^2)] (M: the largest norm) and a query as [q, 0], so
|q' - b'|^2 = |q|^2 + M^2 - 2 q . b: the nearest b' is the b of the largest inner product.
Parameters ("auto" hyperparameters): nlist = 2 sqrt(n) cells and nprobe = 2 sqrt(nlist) cells
searched per query (8% of 100k candidates, 4.5% of 1M: the work per query grows as n^(3/4)); both
are recorded in the index file's header.

A faiss index is read zero-copy from a memory-mapped file (faiss.ZeroCopyIOReader), so server
workers share one copy of the vectors through the page cache. Before faiss parses it, its leading
fields (type, dimension, count, cells, quantizer) are checked against the header at their fixed
offsets, and its length against the size they imply: a damaged or foreign file is refused before
anything is allocated from it.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import faiss
import numpy as np

from object2vec.config import Hyperparameters

logger = logging.getLogger(__name__)

KINDS = ("exact", "ivf")
KMEANS_POINTS_PER_CELL = 32  # faiss samples this many vectors per cell to train k-means
KMEANS_ITERATIONS = 6  # faiss's default is 25; 6 on a sample of 32 per cell gives the same recall (results_notes)
FLAT_MAGIC, IVF_MAGIC, L2_QUANTIZER_MAGIC = b"IxFI", b"IwFl", b"IxF2"
METRIC_L2 = 1  # faiss.METRIC_L2


@dataclass(frozen=True)
class SearchPlan:
    """How the index is built and searched; stored in the index file's header."""

    kind: str  # "exact" | "ivf"
    enc_dim: int  # the candidates' encoding size
    nlist: int = 1  # ivf: cells
    nprobe: int = 1  # ivf: cells searched per query
    max_norm: float = 0.0  # ivf: M of the [b, sqrt(M^2 - |b|^2)] augmentation

    @property
    def stored_dim(self) -> int:
        """Width of the vectors faiss holds (ivf adds the augmentation column)."""
        return self.enc_dim + (self.kind == "ivf")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Any, count: int) -> SearchPlan:
        """Parse and range-check a header's "search" object (ValueError says what is wrong)."""
        if not isinstance(raw, dict):
            raise ValueError('"search" must be an object')
        kind, dim = raw.get("kind"), raw.get("enc_dim")
        nlist, nprobe, max_norm = raw.get("nlist", 1), raw.get("nprobe", 1), raw.get("max_norm", 0.0)
        if kind not in KINDS:
            raise ValueError(f'"search.kind" is {kind!r}, not one of {", ".join(KINDS)}')
        for name, value, upper in (("enc_dim", dim, 10_000), ("nlist", nlist, count), ("nprobe", nprobe, nlist)):
            if type(value) is not int or not 1 <= value <= max(upper, 1):
                raise ValueError(f'"search.{name}" is {value!r}: must be an integer in [1, {upper}]')
        if type(max_norm) not in (int, float) or not math.isfinite(max_norm) or max_norm < 0:
            raise ValueError(f'"search.max_norm" is {max_norm!r}: must be a finite number >= 0')
        return cls(kind=kind, enc_dim=dim, nlist=nlist, nprobe=nprobe, max_norm=float(max_norm))


def plan_search(count: int, enc_dim: int, hp: Hyperparameters) -> SearchPlan:
    """Resolve the retrieval_* hyperparameters for a catalogue of `count` candidates."""
    kind = hp.retrieval_index
    if kind == "auto":
        kind = "exact" if count <= hp.retrieval_exact_max else "ivf"
    if kind == "exact":
        return SearchPlan("exact", enc_dim)
    nlist = hp.retrieval_ivf_nlist or max(1, round(2 * math.sqrt(count)))
    nlist = min(nlist, count)  # k-means needs at least one vector per cell
    # 2 sqrt(nlist) cells: the vectors scanned grow as n^(3/4) (8% of 100k, 4.5% of 1M), not as n.
    nprobe = min(hp.retrieval_ivf_nprobe or math.ceil(2 * math.sqrt(nlist)), nlist)
    return SearchPlan("ivf", enc_dim, nlist=nlist, nprobe=nprobe)


def build(vectors: np.ndarray | list[np.ndarray], plan: SearchPlan, seed: int) -> tuple[faiss.Index, SearchPlan]:
    """A faiss index of float32 vectors, (n, enc_dim) or a list of (b, enc_dim) blocks in row
    order (faiss id = row); the plan comes back with max_norm set for ivf.

    A list is emptied as its blocks go into the index, so that their memory is freed while the
    index's grows: the vectors are never copied into one array first."""
    blocks = vectors if isinstance(vectors, list) else [vectors]
    if plan.kind == "exact":
        index = faiss.IndexFlatIP(plan.enc_dim)
        while blocks:
            index.add(np.ascontiguousarray(blocks.pop(0)))
        return index, plan
    norms = [np.sqrt(np.einsum("ij,ij->i", block, block)) for block in blocks]  # (b,) float32 each
    max_norm = max((float(block_norms.max()) for block_norms in norms if len(block_norms)), default=0.0)
    plan = SearchPlan("ivf", plan.enc_dim, plan.nlist, plan.nprobe, max_norm)
    quantizer = faiss.IndexFlatL2(plan.stored_dim)
    index = faiss.IndexIVFFlat(quantizer, plan.stored_dim, plan.nlist, faiss.METRIC_L2)
    index.cp.niter = KMEANS_ITERATIONS
    index.cp.seed = seed
    index.cp.min_points_per_centroid = 1  # small catalogues: no warning, fewer points per cell is fine
    index.cp.max_points_per_centroid = KMEANS_POINTS_PER_CELL  # the sample below is already this size
    index.train(_training_sample(blocks, norms, plan, seed))
    while blocks:  # each block's cell assignment (a BLAS product with every centroid) and its lists
        index.add(augment(blocks.pop(0), norms.pop(0), max_norm))
    index.nprobe = plan.nprobe
    return index, plan


def _training_sample(blocks: Sequence[np.ndarray], norms: Sequence[np.ndarray], plan: SearchPlan, seed: int):
    """KMEANS_POINTS_PER_CELL x nlist augmented rows drawn at random (all rows when there are fewer)."""
    sizes = np.array([len(block) for block in blocks])
    count = int(sizes.sum())
    wanted = min(count, plan.nlist * KMEANS_POINTS_PER_CELL)
    rows = np.sort(np.random.default_rng(seed).choice(count, wanted, replace=False))  # (s,)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    parts = []
    for number, (block, block_norms) in enumerate(zip(blocks, norms, strict=True)):
        local = rows[np.searchsorted(rows, starts[number]) : np.searchsorted(rows, starts[number + 1])] - starts[number]
        parts.append(augment(block[local], block_norms[local], plan.max_norm))
    return np.concatenate(parts)  # (s, d + 1)


def augment(vectors: np.ndarray, norms: np.ndarray, max_norm: float) -> np.ndarray:
    """[b, sqrt(M^2 - |b|^2)] for each row: inner product search as L2 search."""
    stored = np.empty((len(vectors), vectors.shape[1] + 1), dtype=np.float32)  # (n, d + 1)
    stored[:, :-1] = vectors
    stored[:, -1] = np.sqrt(np.maximum(max_norm * max_norm - norms.astype(np.float64) ** 2, 0.0))
    return stored


def search(index: faiss.Index, plan: SearchPlan, queries: np.ndarray, depth: int, count: int) -> tuple:
    """The `depth` candidates of largest q . b per query, with their vectors.

    queries (B, enc_dim) float32. Returns (rows (B, k) int64, -1 in empty slots; vectors
    (B, k, enc_dim) float32), k = min(depth, count). When k covers the whole catalogue every cell is
    searched, so every candidate comes back.
    """
    k = min(depth, count)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if plan.kind == "exact":
        _, rows, vectors = index.search_and_reconstruct(queries, k)
        return rows, vectors
    query = np.hstack([queries, np.zeros((len(queries), 1), dtype=np.float32)])  # (B, d + 1)
    params = faiss.SearchParametersIVF(nprobe=plan.nlist if k >= count else plan.nprobe)
    _, rows, vectors = index.search_and_reconstruct(query, k, params=params)
    return rows, vectors[:, :, : plan.enc_dim]


# ---------------------------------------------------------------------------------------------
# Checked reading


def expected_length(plan: SearchPlan, count: int) -> tuple[int, int]:
    """Bounds on the serialized index's length: faiss's header and quantizer sizes come from an
    empty index of the same shape, the data from count x (vector [+ id])."""
    if plan.kind == "exact":
        exact = len(faiss.serialize_index(faiss.IndexFlatIP(plan.enc_dim))) + count * plan.enc_dim * 4
        return exact, exact
    empty = faiss.IndexIVFFlat(faiss.IndexFlatL2(plan.stored_dim), plan.stored_dim, 1, faiss.METRIC_L2)
    empty.is_trained = True
    base = len(faiss.serialize_index(empty)) - plan.stored_dim * 4  # without one centroid
    low = base + plan.nlist * plan.stored_dim * 4 + count * (plan.stored_dim * 4 + 8)
    return low, low + 16 * plan.nlist + 64  # the list sizes, written dense or sparse


def check_blob(blob: np.ndarray, plan: SearchPlan, count: int) -> None:
    """Check the serialized index's type, sizes and length against the plan before faiss parses it."""
    head = bytes(blob[:72])
    low, high = expected_length(plan, count)
    if not low <= len(blob) <= high:
        raise ValueError(f"the faiss index has {len(blob)} bytes where {plan.kind} with {count} vectors needs {low}")
    magic = FLAT_MAGIC if plan.kind == "exact" else IVF_MAGIC
    dim, total = struct.unpack_from("<iq", head, 4)
    if head[:4] != magic or (dim, total) != (plan.stored_dim, count):
        raise ValueError(
            f"the faiss index is {head[:4]!r} of dimension {dim} with {total} vectors, "
            f"not {magic!r} of dimension {plan.stored_dim} with {count}"
        )
    if plan.kind == "ivf":
        metric = struct.unpack_from("<i", head, 33)[0]
        nlist = struct.unpack_from("<Q", head, 37)[0]
        quantizer_dim, quantizer_total = struct.unpack_from("<iq", head, 57)
        if (metric, nlist, head[53:57], quantizer_dim, quantizer_total) != (
            METRIC_L2,
            plan.nlist,
            L2_QUANTIZER_MAGIC,
            plan.stored_dim,
            plan.nlist,
        ):
            raise ValueError(f"the faiss IVF index does not have the {plan.nlist} L2 cells the header gives")


def read(blob: np.ndarray, plan: SearchPlan, count: int) -> faiss.Index:
    """The index, zero-copy over `blob` (a uint8 view of a memory map the caller keeps alive)."""
    check_blob(blob, plan, count)
    reader = faiss.ZeroCopyIOReader(faiss.swig_ptr(blob), blob.size)
    try:
        index = faiss.read_index(reader)
    except RuntimeError as err:
        raise ValueError(f"faiss cannot read the index: {str(err).splitlines()[0]}") from err
    expected = faiss.IndexFlatIP if plan.kind == "exact" else faiss.IndexIVFFlat
    if not isinstance(index, expected):
        raise ValueError(f"faiss read a {type(index).__name__}, not an {expected.__name__}")
    if plan.kind == "ivf":
        sizes = sum(index.invlists.list_size(cell) for cell in range(index.nlist))
        if sizes != count:
            raise ValueError(f"the IVF cells hold {sizes} vectors, not {count}")
        index.nprobe = plan.nprobe
    if index.ntotal != count or index.d != plan.stored_dim:
        raise ValueError(f"faiss read {index.ntotal} vectors of dimension {index.d}")
    return index
