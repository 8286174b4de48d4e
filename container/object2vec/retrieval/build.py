"""Building an index: encode every candidate with the trained model, index the vectors, write the file.

Used by the training job (the candidates channel, after the model is saved) and by
`python -m object2vec index` (a new catalogue for a trained model). Blocks of candidates are
encoded as they arrive, so only the vectors (n x enc_dim float32) and the ids stay in memory; a
progress line is logged every PROGRESS_SECONDS. The file replaces the previous index atomically.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from object2vec import __version__
from object2vec.config import Hyperparameters
from object2vec.errors import AlgorithmError
from object2vec.record_format import INPUT_KEYS
from object2vec.retrieval import vector_index
from object2vec.retrieval.candidates import CandidateBlock
from object2vec.retrieval.index_file import INDEX_FILE, write_index_file
from object2vec.retrieval.scoring import default_score_class, search_is_exact
from object2vec.serving.predictor import Predictor

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
PROBES = 4  # candidates re-encoded when the index loads, to prove it was built with that model
PROGRESS_SECONDS = 5.0


class IndexBuilder:
    """Accumulates encoded blocks of one catalogue; `finish` writes the index next to the model."""

    def __init__(self, predictor: Predictor, hp: Hyperparameters) -> None:
        self.predictor = predictor
        self.hp = hp
        self.side: int | None = None
        self.ids: list[bytes] = []
        self.vectors: list[np.ndarray] = []  # (b, enc_dim) float32 per block, until the index takes them
        self.vector_sum: np.ndarray | None = None  # (enc_dim,) float64: the catalogue's mean encoding
        self.probe_tokens: list[list[int]] = []
        self.probe_vectors: list[np.ndarray] = []
        self.started = time.monotonic()
        self.started_cpu = time.process_time()  # CPU seconds of every thread: the build's cost in core-seconds
        self._last_progress = self.started

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, block: CandidateBlock) -> None:
        if self.side is None:
            self.side = block.side
        assert block.side == self.side, "a catalogue's blocks are all on one side (the reader checks)"
        vectors = self.predictor.embed(block.side, block.sequences)  # (B, enc_dim) float32
        if not np.isfinite(vectors).all():
            raise AlgorithmError("the model encodes some candidates to non-finite values (NaN or infinity)")
        self.vectors.append(vectors)
        block_sum = vectors.sum(axis=0, dtype=np.float64)
        self.vector_sum = block_sum if self.vector_sum is None else self.vector_sum + block_sum
        self.ids.extend(block.ids)
        for index in range(min(PROBES - len(self.probe_tokens), len(block))):
            start, length = int(block.sequences.offsets[index]), int(block.sequences.lengths[index])
            self.probe_tokens.append(block.sequences.values[start : start + length].tolist())
            self.probe_vectors.append(vectors[index].copy())
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_SECONDS:
            self._last_progress = now
            logger.info(
                "index: %d candidates read and encoded (%.0f/s)", len(self.ids), len(self.ids) / (now - self.started)
            )

    def finish(self, model_dir: Path) -> dict[str, Any]:
        """Build the faiss index and write model_dir/retrieval.index; returns what the header says."""
        assert self.side is not None and self.ids, "finish() needs at least one block"
        assert self.vector_sum is not None
        encoded, encoded_cpu = time.monotonic(), time.process_time()
        count, enc_dim = len(self.ids), self.vectors[0].shape[1]
        plan = vector_index.plan_search(count, enc_dim, self.hp)
        index, plan = vector_index.build(self.vectors, plan, self.hp.seed)  # takes (and empties) the blocks
        indexed, indexed_cpu = time.monotonic(), time.process_time()
        id_bytes = np.frombuffer(b"".join(self.ids), dtype=np.uint8)
        id_offsets = np.zeros(count + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, self.ids), dtype=np.int64, count=count), out=id_offsets[1:])
        header = {
            "format_version": FORMAT_VERSION,
            "object2vec_version": __version__,
            "count": count,
            "side": INPUT_KEYS[self.side],
            "search": plan.to_dict(),
            "search_is_exact": search_is_exact(self.hp),
            # Query-time defaults (a request may override them): stored here so a re-index can change them.
            "defaults": {"top_n": self.hp.retrieval_top_n, "score_class": default_score_class(self.hp)},
            "probes": self.probe_tokens,
            "seconds": {  # wall, and CPU of every thread (the cost on a core of its own)
                "encode": round(encoded - self.started, 3),
                "index": round(indexed - encoded, 3),
                "encode_cpu": round(encoded_cpu - self.started_cpu, 3),
                "index_cpu": round(indexed_cpu - encoded_cpu, 3),
            },
        }
        sections = {
            "faiss": lambda write: faiss.write_index(index, faiss.PyCallbackIOWriter(write)),
            "ids": id_bytes,
            "id_offsets": id_offsets,
            "mean": (self.vector_sum / count).astype(np.float32),
            "probe_vectors": np.stack(self.probe_vectors),
        }
        size = write_index_file(model_dir / INDEX_FILE, header, sections)
        seconds = time.monotonic() - self.started
        cpu_seconds = time.process_time() - self.started_cpu
        logger.info(
            "Retrieval index written to %s: %d %s candidates, %s search (%s), %.1f MB, in %.2f s, %.2f s of CPU "
            "(reading and encoding %.2f s, indexing %.2f s; of CPU %.2f s and %.2f s: %.0f candidates/s, "
            "%.0f per CPU-second)",
            model_dir / INDEX_FILE,
            count,
            INPUT_KEYS[self.side],
            plan.kind,
            ", ".join(f"{key}={value}" for key, value in plan.to_dict().items() if key != "kind"),
            size / 1e6,
            seconds,
            cpu_seconds,
            encoded - self.started,
            indexed - encoded,
            encoded_cpu - self.started_cpu,
            indexed_cpu - encoded_cpu,
            count / max(seconds, 1e-9),
            count / max(cpu_seconds, 1e-9),
        )
        return {**header, "bytes": size, "cpu_seconds": round(cpu_seconds, 3)}


def build_index(
    predictor: Predictor, blocks: Iterable[CandidateBlock], hp: Hyperparameters, model_dir: Path
) -> dict[str, Any]:
    """Encode and index every block; write model_dir/retrieval.index (replacing any earlier one)."""
    builder = IndexBuilder(predictor, hp)
    for block in blocks:
        builder.add(block)
    return builder.finish(model_dir)
