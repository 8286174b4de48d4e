"""The model behind /invocations: validates instances in bulk and runs chunked forwards.

The mode comes from the instances, as in the real algorithm: in0 and in1 -> pair scores; only in0
-> enc0 embeddings; only in1 -> enc1 embeddings. Ids are checked once per request with numpy (type,
range, length) and the first bad one is reported by instance index and field, with the same
vocabulary message training gives. Sequences are truncated like training (first max_seq_len ids);
empty sequences are accepted (they encode to the projection bias, as in training).
"""

from __future__ import annotations

import logging
import reprlib
import time
from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch

from object2vec.config import Hyperparameters
from object2vec.data.batching import Tokens
from object2vec.data.records import TokenSequences
from object2vec.errors import AlgorithmError, RequestError
from object2vec.model.io import load_model
from object2vec.model.object2vec import Object2VecModel
from object2vec.record_format import INPUT_KEYS, vocab_error
from object2vec.serving.codec import Prediction
from object2vec.serving.settings import DEFAULT_MAX_INSTANCES
from object2vec.threads import ThreadGovernor

logger = logging.getLogger(__name__)

MAX_SEQUENCE_IDS = 100_000  # before truncation; more is surely not a real sequence (413)
CHUNK_ROWS = 4096  # rows per forward; bounds memory together with CHUNK_ELEMENTS
CHUNK_ELEMENTS = 1 << 24  # padded tokens x per-token width of the encoders, per forward
POOLED = "pooled_embedding"
MODES = {3: "pair scoring", 1: 'enc0 embeddings (only "in0")', 2: 'enc1 embeddings (only "in1")'}
EXAMPLE = '{"in0": [1, 2], "in1": [3, 4]}'


class Predictor:
    """A loaded model and what it takes to answer requests with it."""

    def __init__(
        self,
        model: Object2VecModel,
        hyperparameters: Hyperparameters,
        device: str | torch.device = "cpu",
        max_instances: int = DEFAULT_MAX_INSTANCES,
    ) -> None:
        self.model = model.eval()
        self.hp = hyperparameters
        self.device = torch.device(device)
        self.max_instances = max_instances
        self.governor: ThreadGovernor | None = None  # re-sizes torch's CPU threads (serving.server.worker_governor)
        # Per-token cost of each encoder in a forward: the embedding width unless the encoder
        # pools without materialising (B, L, D) (pooled_embedding uses embedding_bag), or what the
        # encoder says (a transformer: its feed-forward width and attention rows).
        self.token_cost = tuple(
            getattr(encoder, "token_cost", 1 if enc.network == POOLED else enc.token_embedding_dim)
            for enc, encoder in zip((self.hp.enc0, self.hp.enc1), self.model.encoders, strict=True)
        )
        self.row_cost = self.model.comparator.output_dim + self.hp.mlp_dim * self.hp.mlp_layers

    @classmethod
    def load(
        cls, model_dir: Path, device: str | torch.device | None = None, max_instances: int = DEFAULT_MAX_INSTANCES
    ) -> Predictor:
        """Load the model `train` wrote and run a smoke inference: a model that cannot answer
        fails here, at worker start, never on /ping or the first request."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        start = time.perf_counter()
        loaded = load_model(model_dir, device)
        predictor = cls(loaded.model, loaded.hyperparameters, device, max_instances)
        predictor.smoke_test()
        hp = loaded.hyperparameters
        logger.info(
            "Model loaded from %s in %.2f s: enc0 %s (vocab %d, max_seq_len %d), enc1 %s (vocab %d, "
            "max_seq_len %d), enc_dim %d, output %s, on %s",
            model_dir,
            time.perf_counter() - start,
            hp.enc0.network,
            hp.enc0.vocab_size,
            hp.enc0.max_seq_len,
            hp.enc1.network,
            hp.enc1.vocab_size,
            hp.enc1.max_seq_len,
            hp.enc_dim,
            hp.output_layer,
            device,
        )
        return predictor

    def smoke_test(self) -> None:
        """One pair, one embedding per encoder, and an empty sequence, checked for shape and finiteness."""
        checks = (
            ([{"in0": [0, 1], "in1": [1]}, {"in0": [], "in1": [0]}], self.hp.output_dim),
            ([{"in0": [1]}], self.hp.enc_dim),
            ([{"in1": [1]}], self.hp.enc_dim),
        )
        for instances, width in checks:
            result = self.predict(instances)
            if result.values.shape != (len(instances), width) or not np.isfinite(result.values).all():
                raise AlgorithmError(
                    f"smoke inference failed: {result.key} of shape {result.values.shape} "
                    f"(expected {(len(instances), width)}), finite={bool(np.isfinite(result.values).all())}"
                )

    # -----------------------------------------------------------------------------------------

    def predict(
        self,
        instances: Sequence[Any],
        max_seqlens: tuple[int, int] | None = None,
        check_booleans: bool = True,
    ) -> Prediction:
        """Scores or embeddings of every instance, in order; RequestError for bad input.

        max_seqlens (infer_max_seqlens) may lower the truncation length of enc0 and enc1.
        check_booleans=False skips looking for JSON true/false among the ids (the codec knows
        when the body holds none).
        """
        count = len(instances)
        if count > self.max_instances:
            raise RequestError(
                413, f"the request has {count} instances; at most {self.max_instances} are accepted: split it"
            )
        mode = self._mode(instances)
        if count == 0:
            return Prediction("embeddings" if mode != 3 else "scores", np.zeros((0, 0), dtype=np.float32))
        limits = [enc.max_seq_len for enc in (self.hp.enc0, self.hp.enc1)]
        if max_seqlens is not None:
            limits = [min(limit, asked) for limit, asked in zip(limits, max_seqlens, strict=True)]
        sides = [
            self._sequences(instances, side, check_booleans).truncated(limits[side]) if mode & (1 << side) else None
            for side in (0, 1)
        ]
        if mode == 3:
            assert sides[0] is not None and sides[1] is not None
            scores = self._forward_pairs(sides[0], sides[1])
            labels = scores.argmax(axis=1) if self.hp.is_classification else None
            return Prediction("scores", scores, labels)
        side = 0 if mode == 1 else 1
        sequences = sides[side]
        assert sequences is not None
        return Prediction("embeddings", self._forward_single(side, sequences))

    def embed(self, side: int, sequences: TokenSequences) -> np.ndarray:
        """Encoder `side`'s embeddings (N, enc_dim) of sequences whose ids are already checked against
        the vocabulary (the retrieval catalogue); truncated like requests, chunked like predict."""
        return self._forward_single(side, sequences.truncated(self.hp.encoder(side).max_seq_len))

    def _mode(self, instances: Sequence[Any]) -> int:
        """3: pairs, 1: only in0, 2: only in1 (bit i set when in<i> is present); 0 for no instances."""
        kinds = [("in0" in x) + 2 * ("in1" in x) if type(x) is dict else -1 for x in instances]
        found = set(kinds)
        if len(found) == 1 and found.pop() > 0:
            return kinds[0]
        for index, kind in enumerate(kinds):
            if kind == -1:
                raise RequestError(400, f"instance {index}: must be a JSON object like {EXAMPLE}")
            if kind == 0:
                raise RequestError(
                    400,
                    f'instance {index}: has neither "in0" nor "in1": give both to score a pair, or one '
                    "of them to get that encoder's embedding",
                )
        if not kinds:
            return 0
        other = next(index for index, kind in enumerate(kinds) if kind != kinds[0])
        raise RequestError(
            400,
            f"instances mix modes: instance 0 asks for {MODES[kinds[0]]} but instance {other} asks for "
            f"{MODES[kinds[other]]}; send pairs and single inputs (and in0 and in1 embeddings) in "
            "separate requests",
        )

    def _sequences(self, instances: Sequence[Any], side: int, check_booleans: bool) -> TokenSequences:
        """The id lists of one field, type- and range-checked in bulk."""
        key = INPUT_KEYS[side]
        lists = [instance[key] for instance in instances]
        if set(map(type, lists)) != {list}:
            index = next(i for i, value in enumerate(lists) if type(value) is not list)
            raise RequestError(400, f'instance {index}, field "{key}": must be a list of token ids, like [4, 17]')
        lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
        longest = int(lengths.argmax())
        if lengths[longest] > MAX_SEQUENCE_IDS:
            raise RequestError(
                413,
                f'instance {longest}, field "{key}": has {lengths[longest]} ids; at most {MAX_SEQUENCE_IDS} are '
                f"accepted (sequences are truncated to enc{side}_max_seq_len={self.hp.encoder(side).max_seq_len})",
            )
        flat = list(chain.from_iterable(lists))
        try:
            values = np.array(flat) if flat else np.zeros(0, dtype=np.int64)
        except (ValueError, TypeError, OverflowError, RecursionError):  # ragged or deeply nested lists
            values = np.zeros((0, 0))  # not 1-D: the slow check below names the culprit
        if values.ndim != 1 or values.dtype.kind not in "iu" or (check_booleans and bool in set(map(type, flat))):
            self._raise_type_error(lists, key)
        vocab_size = self.hp.encoder(side).vocab_size
        bad = np.flatnonzero((values < 0) | (values >= vocab_size))
        if bad.size:
            index = int(np.searchsorted(np.cumsum(lengths), bad[0], side="right"))
            self._raise_vocab_error(key, side, index, int(values[bad[0]]))
        return TokenSequences.from_flat(values.astype(np.int64, copy=False), lengths)

    def _raise_type_error(self, lists: list[list[Any]], key: str) -> None:
        side = INPUT_KEYS.index(key)
        for index, sequence in enumerate(lists):
            for value in sequence:
                if type(value) is float and value.is_integer() and abs(value) >= 2**63:
                    # orjson reads an integer beyond 64 bits as a float: report the id it was meant to be.
                    self._raise_vocab_error(key, side, index, int(value), approximate=True)
                if type(value) is not int:
                    raise RequestError(
                        400,
                        f'instance {index}, field "{key}": must hold integer token ids only, found {_show(value)}',
                    )
                if not 0 <= value < self.hp.encoder(side).vocab_size:  # too large for int64
                    self._raise_vocab_error(key, side, index, value)
        raise RequestError(400, f'field "{key}": must hold integer token ids only')  # not reached

    def _raise_vocab_error(self, key: str, side: int, index: int, value: int, approximate: bool = False) -> None:
        where = f'instance {index}, field "{key}"'
        raise RequestError(400, vocab_error(side, value, self.hp.encoder(side).vocab_size, where, approximate))

    # -----------------------------------------------------------------------------------------

    def _chunks(self, lengths: list[torch.Tensor], costs: list[int]) -> list[torch.Tensor]:
        """Index chunks in order of padded cost, each within CHUNK_ROWS and CHUNK_ELEMENTS."""
        count = int(lengths[0].shape[0])
        width = sum(max(int(n.max()), 1) * cost for n, cost in zip(lengths, costs, strict=True))
        if count <= CHUNK_ROWS and count * (width + self.row_cost) <= CHUNK_ELEMENTS:
            return [torch.arange(count)]  # the common real-time case: one forward, no sorting
        key = sum(length * cost for length, cost in zip(lengths, costs, strict=True))
        order = torch.argsort(key, stable=True)
        chunks = []
        start = 0
        while start < count:
            end = min(count, start + CHUNK_ROWS)
            while True:
                index = order[start:end]
                width = sum(max(int(n[index].max()), 1) * cost for n, cost in zip(lengths, costs, strict=True))
                if (end - start) * (width + self.row_cost) <= CHUNK_ELEMENTS or end - start == 1:
                    break
                end = start + max(1, (end - start) // 2)
            chunks.append(index)
            start = end
        return chunks

    def _forward_pairs(self, in0: TokenSequences, in1: TokenSequences) -> np.ndarray:
        if self.governor is not None:
            self.governor.tick()
        (unique0, inverse0), (unique1, inverse1) = in0.distinct(), in1.distinct()
        if len(unique0) == len(in0) and len(unique1) == len(in1):
            return self._forward_distinct_pairs(in0, in1)
        # A request that repeats sequences (a document against every label, a user against many
        # items): each distinct sequence is encoded once, then the pairs are scored from the
        # encodings, instead of encoding a sequence again for every pair it is in.
        with torch.inference_mode():
            a, b = self._encode(0, unique0), self._encode(1, unique1)  # (D0, enc_dim), (D1, enc_dim)
            out = torch.empty((len(in0), self.hp.output_dim), dtype=torch.float32)
            for start in range(0, len(in0), CHUNK_ROWS):
                rows = slice(start, start + CHUNK_ROWS)
                raw = self.model.score_encodings(a[inverse0[rows]].to(self.device), b[inverse1[rows]].to(self.device))
                out[rows] = self.model.scores(raw).float().cpu()  # (B, output_dim)
        return out.numpy()

    def _forward_distinct_pairs(self, in0: TokenSequences, in1: TokenSequences) -> np.ndarray:
        out = torch.empty((len(in0), self.hp.output_dim), dtype=torch.float32)
        with torch.inference_mode():
            for index in self._chunks([in0.lengths, in1.lengths], list(self.token_cost)):
                sides = [
                    Tokens.gather(sequences, index).with_layout(layout).to(self.device)
                    for sequences, layout in zip((in0, in1), self.model.layouts, strict=True)
                ]
                scores = self.model.predict(*sides)
                out[index] = scores.float().cpu()  # (B, output_dim)
        return out.numpy()

    def _forward_single(self, side: int, sequences: TokenSequences) -> np.ndarray:
        if self.governor is not None:
            self.governor.tick()
        with torch.inference_mode():
            return self._encode(side, sequences).numpy()

    def _encode(self, side: int, sequences: TokenSequences) -> torch.Tensor:
        """Encoder `side`'s embeddings (N, enc_dim), float32 on the CPU, encoded in chunks."""
        out = torch.empty((len(sequences), self.hp.enc_dim), dtype=torch.float32)
        for index in self._chunks([sequences.lengths], [self.token_cost[side]]):
            tokens = Tokens.gather(sequences, index).with_layout(self.model.layouts[side])
            embeddings = self.model.encode(side, tokens.to(self.device))
            out[index] = embeddings.float().cpu()  # (B, enc_dim)
        return out


# Shows a wrong value briefly: a few levels and items of a nested list, never a RecursionError.
_BRIEF = reprlib.Repr()
_BRIEF.maxlevel, _BRIEF.maxlist, _BRIEF.maxdict, _BRIEF.maxstring, _BRIEF.maxother = 3, 4, 2, 30, 30


def _show(value: Any) -> str:
    """A value as the user wrote it in JSON (true/false/null), at most 40 characters."""
    if isinstance(value, bool) or value is None:
        return orjson.dumps(value).decode()
    text = _BRIEF.repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
