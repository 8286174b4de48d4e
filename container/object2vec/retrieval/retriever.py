"""Top-k queries against the index next to the model: what /invocations answers when asked for top_k.

A query is an embedding-mode instance of the side opposite to the catalogue's ("in0" for a
catalogue of "in1" candidates). Per request:
1. the predictor encodes the queries (checked like any embedding request);
2. each encoding becomes a search vector q (scoring.PairScorer.query_vectors);
3. faiss finds the top_n candidates of largest q . b (every candidate when the catalogue holds no
   more than top_n, so small catalogues are always scored exhaustively);
4. those hits are re-scored with the full pair model (comparator + MLP on the stored encodings) and
   ordered by the model's score;
5. the query's own id is dropped when asked (exclude_self), and the first top_k are returned.

Loading checks the file (index_file), its header, the faiss index (vector_index) and that the
index belongs to this model: a few candidates stored with their token ids are re-encoded and must
give the stored vectors. A mismatch is a ClientError that says to rebuild the index.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import orjson

from object2vec.config import MAX_TOP_N
from object2vec.data.records import TokenSequences
from object2vec.errors import ClientError, RequestError
from object2vec.record_format import INPUT_KEYS
from object2vec.retrieval import vector_index
from object2vec.retrieval.build import FORMAT_VERSION, PROBES
from object2vec.retrieval.candidates import MAX_CANDIDATES, MAX_ID_CHARS
from object2vec.retrieval.index_file import INDEX_FILE, IndexFile, read_index_file
from object2vec.retrieval.protocol import RetrievalParams
from object2vec.retrieval.scoring import PairScorer, search_is_exact
from object2vec.serving.predictor import Predictor

logger = logging.getLogger(__name__)

SEARCH_FLOATS = 1 << 25  # queries x depth x enc_dim per faiss call and re-rank (128 MiB of vectors)
PROBE_TOLERANCE = 1e-3  # relative: another device or batch size changes encodings far less
REBUILD = "rebuild it with `python -m object2vec index --model-dir MODEL_DIR CANDIDATES...`"


@dataclass(frozen=True)
class NeighborLists:
    """Per query, the catalogue rows found and their scores, best first (at most top_k)."""

    rows: list[np.ndarray]  # int64
    scores: list[np.ndarray]  # float32


class Retriever:
    def __init__(self, predictor: Predictor, file: IndexFile, index: Any, plan: vector_index.SearchPlan) -> None:
        self.predictor = predictor
        self.hp = predictor.hp
        self.file = file  # keeps the memory map (and so the faiss index's data) alive
        self.index = index
        self.plan = plan
        self.count = int(file.header["count"])
        self.side = INPUT_KEYS.index(file.header["side"])
        self.query_key = INPUT_KEYS[1 - self.side]
        self.ids = file.sections["ids"]
        self.id_offsets = file.sections["id_offsets"]
        self.scorer = PairScorer(predictor.model, self.hp, self.side, np.asarray(file.sections["mean"]))
        defaults = file.header["defaults"]
        self.default_top_n: int = defaults["top_n"]
        self.default_score_class: int | None = defaults["score_class"]

    @classmethod
    def load(cls, model_dir: Path, predictor: Predictor) -> Retriever | None:
        """The index of model_dir, checked and smoke-tested; None when the model has none."""
        path = model_dir / INDEX_FILE
        if not path.is_file():
            return None
        start = time.perf_counter()
        file = read_index_file(path)
        try:
            plan = _check_header(file, predictor)
            blob = file.sections["faiss"]
            if blob.ndim != 1:
                raise ValueError('section "faiss" must be one-dimensional')
            index = vector_index.read(blob, plan, int(file.header["count"]))
        except ValueError as err:
            raise ClientError(f"{path} is not a usable retrieval index ({err}): {REBUILD}") from err
        _check_probes(file, predictor)
        # faiss parallelises batches of queries with OpenMP: as many threads as torch has here
        # (serve gives each worker cores / workers).
        import torch

        faiss.omp_set_num_threads(torch.get_num_threads())
        retriever = cls(predictor, file, index, plan)
        retriever.smoke_test()
        logger.info(
            "Retrieval index loaded from %s in %.2f s: %d candidates (%s), %s search (%s), %.1f MB mapped; "
            "search vectors %s",
            path,
            time.perf_counter() - start,
            retriever.count,
            file.header["side"],
            plan.kind,
            ", ".join(f"{key}={value}" for key, value in plan.to_dict().items() if key != "kind"),
            file.size / 1e6,
            "order candidates exactly like the model" if search_is_exact(predictor.hp) else "are a first-order guess",
        )
        return retriever

    def smoke_test(self) -> None:
        found = self.neighbors([{self.query_key: [0]}], RetrievalParams(top_k=1))
        if len(found.rows[0]) != 1 or not np.isfinite(found.scores[0]).all():
            raise ClientError(f"{self.file.path}: a test query found no candidate: {REBUILD}")

    def id_json(self, row: int) -> bytes:
        """The candidate's id as JSON (b'"m12"', b'12'), as the catalogue gave it."""
        return bytes(self.ids[self.id_offsets[row] : self.id_offsets[row + 1]])

    # -----------------------------------------------------------------------------------------

    def neighbors(
        self,
        instances: list[Any],
        params: RetrievalParams,
        max_seqlens: tuple[int, int] | None = None,
        check_booleans: bool = True,
    ) -> NeighborLists:
        """The top_k candidates of every instance, in order; RequestError (400) for what cannot be answered."""
        self._check_instances(instances)
        score_class = self._score_class(params)
        if params.top_k > self.count:
            raise RequestError(
                400, f"top_k={params.top_k} is larger than the catalogue of {self.count} candidates: ask for fewer"
            )
        top_n = params.top_n if params.top_n is not None else max(self.default_top_n, params.top_k)
        if top_n < params.top_k:
            raise RequestError(
                400, f"top_n={top_n} is smaller than top_k={params.top_k}: the re-rank depth must be at least top_k"
            )
        own_ids = self._own_ids(instances) if params.exclude_self else None
        depth = top_n + (1 if params.exclude_self else 0)
        encodings = self.predictor.predict(instances, max_seqlens, check_booleans).values  # (B, d)
        if self.predictor.governor is not None:  # faiss's own OpenMP pool follows the re-counted threads
            faiss.omp_set_num_threads(self.predictor.governor.threads)
        rows_out: list[np.ndarray] = []
        scores_out: list[np.ndarray] = []
        chunk = max(1, SEARCH_FLOATS // (min(depth, self.count) * self.plan.stored_dim))
        for start in range(0, len(instances), chunk):
            queries = encodings[start : start + chunk]  # (b, d)
            search = self.scorer.query_vectors(queries, score_class)  # (b, d)
            rows, vectors = vector_index.search(self.index, self.plan, search, depth, self.count)  # (b, k), (b, k, d)
            order, scores = self.scorer.rank(queries, vectors, rows, score_class)
            ranked = np.take_along_axis(rows, order, axis=1)  # (b, k)
            for offset in range(len(queries)):
                found, found_scores = ranked[offset], scores[offset]
                keep = found >= 0
                if own_ids is not None:
                    own = own_ids[start + offset]
                    keep &= np.fromiter((self.id_json(row) != own if row >= 0 else False for row in found), bool)
                rows_out.append(found[keep][: params.top_k])
                scores_out.append(found_scores[keep][: params.top_k])
        return NeighborLists(rows_out, scores_out)

    def _check_instances(self, instances: list[Any]) -> None:
        candidate_key = INPUT_KEYS[self.side]
        for index, instance in enumerate(instances):
            if type(instance) is dict and candidate_key in instance:
                if self.query_key in instance:
                    raise RequestError(
                        400,
                        f'instance {index}: top_k asks for the neighbours of single objects, not pairs: send only "'
                        f'{self.query_key}" (the catalogue holds "{candidate_key}" candidates), or leave top_k out '
                        "to score the pairs",
                    )
                raise RequestError(
                    400,
                    f'instance {index}: the catalogue holds "{candidate_key}" candidates, which the model scores '
                    f'against "{self.query_key}" objects: send {{"{self.query_key}": [...]}} to find their neighbours',
                )

    def _score_class(self, params: RetrievalParams) -> int | None:
        if params.score_class is None:
            return self.default_score_class
        if not self.hp.is_classification:
            raise RequestError(400, "score_class applies to softmax models; this model is a regression: remove it")
        if params.score_class >= self.hp.num_classes:
            raise RequestError(
                400, f"score_class={params.score_class} is not a class of this model: use 0..{self.hp.num_classes - 1}"
            )
        return params.score_class

    def _own_ids(self, instances: list[Any]) -> list[bytes]:
        own = []
        for index, instance in enumerate(instances):
            identifier = instance.get("id") if type(instance) is dict else None
            if type(identifier) not in (str, int):
                raise RequestError(
                    400,
                    f'instance {index}: exclude_self needs the query\'s own candidate "id" (a string or an '
                    'integer) in each instance, like {"id": "m12", "' + self.query_key + '": [4, 17]}',
                )
            own.append(orjson.dumps(identifier))
        return own


def _check_header(file: IndexFile, predictor: Predictor) -> vector_index.SearchPlan:
    """The header's values and the sections' shapes (ValueError says which is wrong)."""
    header, sections = file.header, file.sections
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"format_version {header.get('format_version')!r}; this release reads {FORMAT_VERSION}")
    count = header.get("count")
    if type(count) is not int or not 1 <= count <= MAX_CANDIDATES:
        raise ValueError(f'"count" is {count!r}: must be an integer in [1, {MAX_CANDIDATES}]')
    if header.get("side") not in INPUT_KEYS:
        raise ValueError(f'"side" is {header.get("side")!r}, not "in0" or "in1"')
    plan = vector_index.SearchPlan.from_dict(header.get("search"), count)
    enc_dim = predictor.hp.enc_dim
    if plan.enc_dim != enc_dim:
        raise ValueError(f"it holds {plan.enc_dim}-d encodings but the model's enc_dim is {enc_dim}")
    defaults = header.get("defaults")
    top_n = defaults.get("top_n") if isinstance(defaults, dict) else None
    score_class = defaults.get("score_class", -1) if isinstance(defaults, dict) else -1
    if type(top_n) is not int or not 1 <= top_n <= MAX_TOP_N:
        raise ValueError(f'"defaults.top_n" is {top_n!r}: must be an integer in [1, {MAX_TOP_N}]')
    classes = predictor.hp.num_classes if predictor.hp.is_classification else 0
    if not (score_class is None and classes == 0) and not (type(score_class) is int and 0 <= score_class < classes):
        raise ValueError(f'"defaults.score_class" is {score_class!r}, which this model does not have')
    probes = header.get("probes")
    if not isinstance(probes, list) or not 1 <= len(probes) <= min(PROBES, count):
        raise ValueError('"probes" must list the token ids of 1 to 4 candidates')
    expected = {
        "faiss": np.uint8,
        "ids": np.uint8,
        "id_offsets": np.int64,
        "mean": np.float32,
        "probe_vectors": np.float32,
    }
    for name, dtype in expected.items():
        if name not in sections or sections[name].dtype != dtype:
            raise ValueError(f"section {name!r} is missing or not {np.dtype(dtype).name}")
    offsets = sections["id_offsets"]
    if offsets.shape != (count + 1,) or sections["mean"].shape != (enc_dim,):
        raise ValueError("the id table or the mean encoding has the wrong size")
    if sections["probe_vectors"].shape != (len(probes), enc_dim):
        raise ValueError("the probe vectors have the wrong size")
    lengths = np.diff(offsets)
    if offsets[0] != 0 or offsets[-1] != sections["ids"].shape[0] or lengths.min() < 1:
        raise ValueError("the id table's offsets do not fit its ids")
    if lengths.max() > 6 * MAX_ID_CHARS + 2:  # a JSON string of MAX_ID_CHARS escaped characters
        raise ValueError("the id table holds an id longer than candidates may have")
    return plan


def _check_probes(file: IndexFile, predictor: Predictor) -> None:
    """Re-encode the stored candidates: an index of another model (or another training run) differs."""
    side = INPUT_KEYS.index(file.header["side"])
    vocab_size = predictor.hp.encoder(side).vocab_size
    probes = file.header["probes"]
    stored = np.asarray(file.sections["probe_vectors"])
    fits = all(
        isinstance(tokens, list) and all(type(t) is int and 0 <= t < vocab_size for t in tokens) for tokens in probes
    )
    if fits:
        encoded = predictor.embed(side, TokenSequences.from_lists(probes))  # (p, d)
        scale = max(1.0, float(np.abs(stored).max()))
        if np.abs(encoded - stored).max() <= PROBE_TOLERANCE * scale:
            return
    raise ClientError(
        f"{file.path} was built with another model: its candidates do not encode to the vectors it holds "
        f"with the model in {file.path.parent}; {REBUILD}"
    )
