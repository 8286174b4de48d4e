"""Sequence encoders: flat token batches (data/batching.py `Tokens`) -> fixed-length vectors (B, enc_dim).

Interface: `encoder(tokens) -> (B, enc_dim)`. `tokens.ids` (T,) are the batch's real tokens,
`offsets`/`lengths` (B,) delimit the sequences and `rows` (T,) names each token's sequence.
An encoder's class attribute `layout` names the one extra view it reads ("flat": none,
"packed": `tokens.packed()`, "padded": `tokens.padded_ids()`); the trainer has the batcher
build it once per batch, and any encoder also accepts Tokens without it.

No padding is ever computed on: pooled_embedding and hcnn work on the flat tokens (hcnn's
convolutions sum each token's window with taps beyond the sequence's ends left out, which is
exactly conv1d with padding="same" on each sequence alone); bilstm runs over packed time steps.
An empty sequence encodes to the projection of a zero vector (the projection's bias).

hcnn and bilstm pool their per-token features with `AttentionPool`, which starts as the mean: like
pooled_embedding, every token of a sequence gets the gradient from the first step, and both keep
the token embeddings themselves among the pooled features (hcnn through its residual stack, bilstm
beside the LSTM states). With the max-pool of every level (hcnn) and the final LSTM states (bilstm)
they used before, the two encoders of a pair memorised small data sets instead of learning the rule
pooled_embedding learns (benchmarks/results_notes.md, "Why hcnn and bilstm memorised").

The CPU kernels are in model/kernels.py; on a GPU, bilstm runs cuDNN's packed LSTM.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from object2vec.config import EncoderConfig
from object2vec.data.batching import Tokens
from object2vec.model.kernels import conv_window_masks, flat_conv, lstm_scan


def length_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(B, L) bool: True at real tokens."""
    return torch.arange(width, device=lengths.device) < lengths[:, None]


class AttentionPool(nn.Module):
    """Masked attention pooling: the weighted mean of a sequence's token features, with weights
    softmax(w . h_t) over its tokens. w starts at zero, so the pool starts as the plain mean;
    training can then weight tokens (content words over "the" with pretrained vectors) while every
    token still receives gradient, unlike a max-pool, which hands each feature's gradient to one
    token. Works on flat tokens (any order): `rows` names each token's sequence. An empty sequence
    pools to zeros."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1, bias=False)  # a bias would cancel in the softmax
        nn.init.zeros_(self.score.weight)

    def forward(self, features: torch.Tensor, rows: torch.Tensor, count: int) -> torch.Tensor:
        # features: (T, D), rows: (T,) sequence of each token in 0 .. count - 1 -> (count, D)
        scores = self.score(features).squeeze(1)  # (T,)
        # Softmax per sequence: subtracting each sequence's largest score (a constant within the
        # sequence, so no gradient is lost by detaching it) keeps exp() finite.
        top = scores.new_full((count,), float("-inf"))
        top = top.scatter_reduce(0, rows, scores.detach(), "amax")  # (B,), -inf for an empty sequence
        exp = torch.exp(scores - top.index_select(0, rows))  # (T,)
        total = scores.new_zeros(count).index_add(0, rows, exp)  # (B,)
        weights = exp / total.index_select(0, rows)  # (T,)
        return features.new_zeros(count, features.shape[1]).index_add(0, rows, weights[:, None] * features)


class PooledEmbeddingEncoder(nn.Module):
    """Mean of the token embeddings, projected to enc_dim. With pooling="attention" (an extension)
    a learnt weighted mean instead (`AttentionPool` over the token vectors, starting as the mean):
    a bag of words that can weight content words over "the" and "."; with pooling="sqrt_n" (an
    extension) their sum / sqrt(length), SVD++'s normalisation of implicit feedback: the sum of n
    random vectors is about sqrt(n) times as long as one, so long sequences (an item's raters) start
    at the scale of a single id instead of 1 / sqrt(n) of it, as the mean does."""

    layout: ClassVar[str] = "flat"

    def __init__(self, config: EncoderConfig, embedding: nn.Embedding, enc_dim: int, dropout: float) -> None:
        super().__init__()
        self.embedding = embedding
        self.dropout = nn.Dropout(dropout)
        self.pool = AttentionPool(config.token_embedding_dim) if config.pooling == "attention" else None
        self.sqrt_n = config.pooling == "sqrt_n"
        self.project = nn.Linear(config.token_embedding_dim, enc_dim)

    def forward(self, tokens: Tokens) -> torch.Tensor:
        weight, sparse = self.embedding.weight, self.embedding.sparse
        if self.pool is not None:
            # Dropout on the token vectors, before the weights are scored (what was measured: STS-B
            # dev 0.712 / 0.714 pair / cosine against 0.667 / 0.673 for the mean, results_notes.md).
            # One id per sequence goes this way too: its weight is 1, and the score still gets its
            # (zero) gradient, which DistributedDataParallel expects of every parameter.
            tokens_x = self.dropout(F.embedding(tokens.ids, weight, sparse=sparse))  # (T, D)
            return self.project(self.pool(tokens_x, tokens.rows, len(tokens)))  # (B, enc_dim)
        if tokens.fixed_length == 1:  # one id per sequence (users, items): the mean is the row itself
            pooled = F.embedding(tokens.ids, weight, sparse=sparse)  # (B, D), 20% faster a step
        else:
            # embedding_bag on the flat ids fuses lookup and mean, never materialising (B, L, D); an
            # empty bag gives zeros. Its own dense backward measured as fast as a hand-written one.
            mode = "sum" if self.sqrt_n else "mean"
            pooled = F.embedding_bag(tokens.ids, weight, tokens.offsets, mode=mode, sparse=sparse)  # (B, D)
            if self.sqrt_n:
                pooled = pooled / tokens.lengths.clamp(min=1).to(pooled.dtype).sqrt()[:, None]  # (B, D)
        return self.project(self.dropout(pooled))  # (B, enc_dim)


class HierarchicalCNNEncoder(nn.Module):
    """Layer-normalised token vectors, then a stack of `layers` same-width residual 1-D
    convolutions; each level sees a wider context than the one below. Every level is pooled over
    the sequence (`AttentionPool`, one per level: the hierarchy of n-gram features) and the
    concatenation is projected to enc_dim."""

    layout: ClassVar[str] = "flat"

    def __init__(self, config: EncoderConfig, embedding: nn.Embedding, enc_dim: int, dropout: float) -> None:
        super().__init__()
        dim, width = config.token_embedding_dim, config.cnn_filter_width
        self.embedding = embedding
        self.dropout = nn.Dropout(dropout)
        # Conv1d modules hold the weights (and name them in checkpoints); forward never calls them:
        # it applies their weights to the flat tokens with kernels.flat_conv, which equals
        # conv1d(padding="same") on each sequence alone, even widths included ((width - 1) // 2
        # zeros before, width // 2 after, as torch pads).
        self.convs = nn.ModuleList(nn.Conv1d(dim, dim, kernel_size=width, padding="same") for _ in range(config.layers))
        # Pretrained vectors come at any scale (GloVe's norms vary 10x between words): normalised
        # tokens give the convolutions and the pools inputs of one scale.
        self.norm = nn.LayerNorm(dim)
        self.pools = nn.ModuleList(AttentionPool(dim) for _ in range(config.layers))
        self.project = nn.Linear(dim * config.layers, enc_dim)

    def forward(self, tokens: Tokens) -> torch.Tensor:
        width = self.convs[0].kernel_size[0]
        masks = conv_window_masks(tokens, width)  # (K, T, 1) which taps stay inside the sequence
        x = self.norm(self.dropout(self.embedding(tokens.ids)))  # (T, D)
        levels = []
        for conv, pool in zip(self.convs, self.pools, strict=True):
            x = torch.relu(flat_conv(x, conv.weight, conv.bias, masks)) + x  # (T, D), residual
            levels.append(pool(x, tokens.rows, len(tokens)))  # (B, D)
        return self.project(torch.cat(levels, dim=1))  # (B, D * layers) -> (B, enc_dim)


class BiLSTMEncoder(nn.Module):
    """A `layers`-deep bidirectional LSTM (hidden size = token_embedding_dim) over layer-normalised
    token vectors. At every token, its vector and the last layer's forward and backward states are
    concatenated; `AttentionPool` pools them over the sequence (InferSent pools all states too,
    rather than keep the final ones) and the result is projected to enc_dim."""

    layout: ClassVar[str] = "packed"

    def __init__(self, config: EncoderConfig, embedding: nn.Embedding, enc_dim: int, dropout: float) -> None:
        super().__init__()
        dim = config.token_embedding_dim
        self.embedding = embedding
        self.dropout = nn.Dropout(dropout)
        # Holds the weights (torch's names and layout); on the CPU forward runs them through
        # kernels.lstm_scan, on a GPU through this module (cuDNN).
        self.lstm = nn.LSTM(
            dim,
            dim,
            num_layers=config.layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if config.layers > 1 else 0.0,
        )
        self.norm = nn.LayerNorm(dim)
        self.pool = AttentionPool(3 * dim)
        self.project = nn.Linear(3 * dim, enc_dim)

    def forward(self, tokens: Tokens) -> torch.Tensor:
        packing = tokens.packed()
        # (T, D) in packing (slot) order: step by step, longest sequences first
        x = self.norm(self.dropout(self.embedding(tokens.ids.index_select(0, packing.order))))
        states = self._cudnn(tokens, x) if x.is_cuda else self._scan(tokens, x)  # (T, 2D) slot order
        features = torch.cat([x, states], dim=1)  # (T, 3D): each token and its two contexts
        rows = tokens.rows.index_select(0, packing.order)  # (T,) sequence of each slot
        return self.project(self.pool(features, rows, len(tokens)))  # (B, enc_dim)

    def _scan(self, tokens: Tokens, x: torch.Tensor) -> torch.Tensor:
        """(T, 2H) the last layer's forward and backward state at every slot."""
        packing = tokens.packed()
        lstm = self.lstm
        outputs: list[torch.Tensor] = []
        for layer in range(lstm.num_layers):
            if layer:
                x = torch.cat(outputs, dim=1)  # (T, 2H)
                x = nn.functional.dropout(x, lstm.dropout, self.training)  # between layers, as nn.LSTM
            outputs = []
            for suffix, reverse in (("", False), ("_reverse", True)):
                w_ih = getattr(lstm, f"weight_ih_l{layer}{suffix}")  # (4H, D_in)
                w_hh = getattr(lstm, f"weight_hh_l{layer}{suffix}")  # (4H, H)
                bias = getattr(lstm, f"bias_ih_l{layer}{suffix}") + getattr(lstm, f"bias_hh_l{layer}{suffix}")
                gates_in = torch.addmm(bias, x, w_ih.t())  # (T, 4H) every step's input projection at once
                outputs.append(lstm_scan(gates_in, w_hh, packing.steps, reverse))  # (T, H)
        return torch.cat(outputs, dim=1)  # (T, 2H)

    def _cudnn(self, tokens: Tokens, x: torch.Tensor) -> torch.Tensor:
        """(T, 2H) as _scan, by cuDNN."""
        packing = tokens.packed()
        if packing.steps and packing.steps[0] == len(tokens):  # no empty sequence: the packing as is
            packed = PackedSequence(x, packing.batch_sizes, packing.sorted_rows, packing.rank)
            return self.lstm(packed)[0].data  # (T, 2H)
        # PackedSequence has no empty sequences: give them one token, never read back (with only
        # empty sequences the LSTM still runs, so its weights get their zero gradients)
        lengths = tokens.lengths.clamp(min=1)
        padded = x.new_zeros(len(tokens), int(lengths.max()), x.shape[1])
        padded[tokens.rows, tokens.positions()] = x.index_select(0, packing.position)
        packed = pack_padded_sequence(padded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        states, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True)  # (B, L, 2H)
        flat = states[tokens.rows, tokens.positions()]  # (T, 2H) flat order
        return flat.index_select(0, packing.order)  # (T, 2H) slot order


ENCODERS: dict[str, type[nn.Module]] = {
    "pooled_embedding": PooledEmbeddingEncoder,
    "hcnn": HierarchicalCNNEncoder,
    "bilstm": BiLSTMEncoder,
}


def build_encoder(config: EncoderConfig, embedding: nn.Embedding, enc_dim: int, dropout: float) -> nn.Module:
    return ENCODERS[config.network](config, embedding, enc_dim, dropout)
