"""How candidates are ranked (the model's own score) and how a query finds them (one inner product).

The model scores a pair as out = MLP(comparator(a, b)), a = enc0(in0), b = enc1(in1). A query is
one object of one side, the candidates are objects of the other side; their encodings are stored
in the index, so scoring a (query, candidate) pair needs only the comparator and the MLP.

**The ranking score** is what the model predicts for the pair:
- regression (mean_squared_error): the prediction out[0];
- softmax: the probability of class k (retrieval_score_class, or the request's score_class;
  default the last class, class 1 of a binary model). Candidates are ordered by the logit margin
  out[k] - logsumexp(out[j], j != k), which orders them exactly as P(k) does but does not round
  to 1.0 in float32, so confident matches keep their order; the probability is what is returned.

**The search vector.** Exact and IVF search find the candidates b with the largest q . b. The
query vector q is the gradient of the ranking key with respect to the candidate's encoding, taken
at the catalogue's mean encoding m:  key(a, b) ~ key(a, m) + q . (b - m), so q . b orders the
candidates like the key does, to first order. The approximation is exact, and q . b orders the
catalogue exactly like the model, when the key is affine in b: comparator_list of hadamard and
concat only, an affine MLP (mlp_layers=0, or mlp_activation=linear), and regression or two
classes. For comparator_list=hadamard and mlp_layers=0 that is the inner product folded with the
output weights: q = (W_k - W_j)[hadamard part] * a + (W_k - W_j)[concat part of b], so a
candidate's own output weights (its bias-like term) are part of the search. For other models
(abs_diff, relu/tanh MLPs, more than two classes) the search is a first-order guess; the top_n
hits it finds are re-scored with the full model, and a catalogue of at most top_n candidates is
scored exhaustively (exact for every model).
"""

from __future__ import annotations

import numpy as np
import torch

from object2vec.config import Hyperparameters
from object2vec.model.object2vec import Object2VecModel

AFFINE_COMPARATORS = frozenset({"hadamard", "concat"})
RERANK_ROWS = 1 << 16  # pairs per comparator + MLP forward while re-ranking


def search_is_exact(hp: Hyperparameters) -> bool:
    """Whether q . b orders candidates exactly like the model (the ranking key is affine in b)."""
    affine_mlp = hp.mlp_layers == 0 or hp.mlp_activation == "linear"
    two_sided = not hp.is_classification or hp.num_classes == 2
    return set(hp.comparator_list) <= AFFINE_COMPARATORS and affine_mlp and two_sided


def default_score_class(hp: Hyperparameters) -> int | None:
    """The class whose probability ranks (None for regression)."""
    if not hp.is_classification:
        return None
    return hp.retrieval_score_class if hp.retrieval_score_class is not None else hp.num_classes - 1


class PairScorer:
    """Scores (query, candidate) encodings with the model's comparator and MLP."""

    def __init__(self, model: Object2VecModel, hp: Hyperparameters, candidate_side: int, mean: np.ndarray) -> None:
        self.model = model
        self.hp = hp
        self.candidate_side = candidate_side
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self.mean = torch.tensor(np.array(mean), dtype=self.dtype, device=self.device)  # (enc_dim,), a copy
        # For an affine score, q(a) = a @ M + c exactly: kept per class, one matmul per query.
        self.affine = search_is_exact(hp)
        self._linear_maps: dict[int | None, tuple[np.ndarray, np.ndarray]] = {}

    def _outputs(self, query: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
        """Raw outputs (N, output_dim) of N pairs, each encoding put on its side of the model."""
        if self.candidate_side == 1:
            return self.model.score_encodings(query, candidate)
        return self.model.score_encodings(candidate, query)

    def _key_and_score(self, out: torch.Tensor, score_class: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(ranking key, returned score), each (N,)."""
        if score_class is None:  # regression
            return out[:, 0], out[:, 0]
        others = torch.cat([out[:, :score_class], out[:, score_class + 1 :]], dim=1)  # (N, C - 1)
        key = out[:, score_class] - torch.logsumexp(others, dim=1)
        return key, torch.softmax(out, dim=1)[:, score_class]

    def query_vectors(self, queries: np.ndarray, score_class: int | None) -> np.ndarray:
        """(B, enc_dim) encodings -> (B, enc_dim) search vectors q: the key's gradient at the mean candidate."""
        if not self.affine:
            return self._gradients(queries, score_class)
        if score_class not in self._linear_maps:
            # The gradient of an affine score is affine in the query: probe it at 0 and at each unit vector.
            dim = queries.shape[1]
            probes = np.vstack([np.zeros((1, dim), np.float32), np.eye(dim, dtype=np.float32)])  # (d + 1, d)
            gradients = self._gradients(probes, score_class).astype(np.float64)  # (d + 1, d)
            self._linear_maps[score_class] = (gradients[1:] - gradients[0], gradients[0])
        matrix, offset = self._linear_maps[score_class]
        return (np.asarray(queries, dtype=np.float64) @ matrix + offset).astype(np.float32)  # (B, d)

    def _gradients(self, queries: np.ndarray, score_class: int | None) -> np.ndarray:
        query = torch.as_tensor(queries, dtype=self.dtype, device=self.device)  # (B, d)
        with torch.enable_grad():
            candidate = self.mean.expand_as(query).clone().requires_grad_(True)  # (B, d)
            key, _ = self._key_and_score(self._outputs(query, candidate), score_class)
            # Each row's key depends only on its own row of `candidate`: one backward gives all B gradients.
            (gradient,) = torch.autograd.grad(key.sum(), candidate)
        return gradient.detach().float().cpu().numpy()  # (B, d)

    def rank(
        self, queries: np.ndarray, candidates: np.ndarray, rows: np.ndarray, score_class: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Re-score every (query, hit) pair with the full model and order the hits.

        queries (B, d), candidates (B, M, d) float32, rows (B, M) int64: the hits' catalogue rows,
        -1 where a slot holds no hit. Returns (order (B, M): positions into M, best first, empty
        slots last; scores (B, M) float32 in that order). Equal keys go in catalogue order.
        """
        count, depth, dim = candidates.shape
        keys = np.empty((count, depth), dtype=np.float64)
        scores = np.empty((count, depth), dtype=np.float32)
        rows_per_query = max(1, RERANK_ROWS // max(depth, 1))
        with torch.inference_mode():
            for start in range(0, count, rows_per_query):
                stop = min(count, start + rows_per_query)
                block = stop - start
                query = torch.as_tensor(queries[start:stop], dtype=self.dtype, device=self.device)  # (b, d)
                query = query[:, None, :].expand(block, depth, dim).reshape(block * depth, dim)  # (b*M, d)
                candidate = torch.as_tensor(candidates[start:stop], dtype=self.dtype, device=self.device)
                key, score = self._key_and_score(
                    self._outputs(query, candidate.reshape(block * depth, dim)), score_class
                )  # (b*M,), (b*M,)
                keys[start:stop] = key.reshape(block, depth).double().cpu().numpy()
                scores[start:stop] = score.reshape(block, depth).float().cpu().numpy()
        keys[rows < 0] = -np.inf
        order = np.lexsort((rows, -keys), axis=1)  # (B, M): by key, then by row
        return order, np.take_along_axis(scores, order, axis=1)
