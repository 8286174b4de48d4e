"""Sequence encoders: ids (B, L) + lengths (B,) -> fixed-length vectors (B, enc_dim).

Padding never leaks into the result: pooling is masked by length and the LSTM runs on packed
sequences. An empty sequence encodes to the projection of a zero vector (the projection's bias).

hcnn and bilstm pool their per-token features with `AttentionPool`, which starts as the mean: like
pooled_embedding, every token of a sequence gets the gradient from the first step, and both keep
the token embeddings themselves among the pooled features (hcnn through its residual stack, bilstm
beside the LSTM states). With the max-pool of every level (hcnn) and the final LSTM states (bilstm)
they used before, the two encoders of a pair memorised small data sets instead of learning the rule
pooled_embedding learns (benchmarks/results_notes.md, "Why hcnn and bilstm memorised").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from object2vec.config import EncoderConfig


def length_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(B, L) bool: True at real tokens."""
    return torch.arange(width, device=lengths.device) < lengths[:, None]


class AttentionPool(nn.Module):
    """Masked attention pooling: the weighted mean of a sequence's feature vectors, with weights
    softmax(w . h_t) over its real tokens. w starts at zero, so the pool starts as the plain mean;
    training can then weight tokens (content words over "the" with pretrained vectors) while every
    token still receives gradient, unlike a max-pool, which hands each feature's gradient to one
    token. An empty sequence pools to zeros."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1, bias=False)  # a bias would cancel in the softmax
        nn.init.zeros_(self.score.weight)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # features: (B, L, D), mask: (B, L) True at real tokens -> (B, D)
        scores = self.score(features).squeeze(2)  # (B, L)
        # The dtype's lowest value, not -inf: a row with no real token stays finite (and is zeroed
        # by the mask below), and exp() of a padded position's score is exactly 0.
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=1) * mask  # (B, L)
        return torch.bmm(weights.unsqueeze(1), features).squeeze(1)  # (B, D)


class PooledEmbeddingEncoder(nn.Module):
    """Mean of the token embeddings, projected to enc_dim."""

    def __init__(self, config: EncoderConfig, embedding: nn.Embedding, enc_dim: int, dropout: float) -> None:
        super().__init__()
        self.embedding = embedding
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Linear(config.token_embedding_dim, enc_dim)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = length_mask(lengths, ids.shape[1])  # (B, L)
        offsets = torch.cumsum(lengths, 0) - lengths  # (B,) start of each bag in the flat ids
        # embedding_bag on the flat real tokens fuses lookup and mean without materialising
        # (B, L, D) and skips padding entirely; an empty bag gives zeros.
        pooled = F.embedding_bag(
            ids[mask], self.embedding.weight, offsets, mode="mean", sparse=self.embedding.sparse
        )  # (B, D)
        return self.project(self.dropout(pooled))  # (B, enc_dim)


class HierarchicalCNNEncoder(nn.Module):
    """A stack of `layers` same-width residual 1-D convolutions; each level sees a wider context
    than the one below. Every level is pooled over the sequence (`AttentionPool`, one per level: the
    hierarchy of n-gram features) and the concatenation is projected to enc_dim."""

    def __init__(self, config: EncoderConfig, embedding: nn.Embedding, enc_dim: int, dropout: float) -> None:
        super().__init__()
        dim, width = config.token_embedding_dim, config.cnn_filter_width
        self.embedding = embedding
        self.dropout = nn.Dropout(dropout)
        # "same" output length. torch warns on padding="same" with an even width (it pads a copy
        # of the input on every call), so even widths pad explicitly instead, the same way torch
        # does: (width - 1) // 2 zeros before, width // 2 after. Odd widths keep padding="same".
        self.even_pad = ((width - 1) // 2, width // 2) if width % 2 == 0 else None
        self.convs = nn.ModuleList(
            nn.Conv1d(dim, dim, kernel_size=width, padding=0 if self.even_pad else "same") for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.pools = nn.ModuleList(AttentionPool(dim) for _ in range(config.layers))
        self.project = nn.Linear(dim * config.layers, enc_dim)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = length_mask(lengths, ids.shape[1])  # (B, L)
        x = self.norm(self.dropout(self.embedding(ids))).transpose(1, 2)  # (B, D, L)
        levels = []
        for conv, pool in zip(self.convs, self.pools, strict=True):
            # Zeroing padding before each conv makes it look like the sequence's zero border.
            masked = x * mask[:, None, :]  # (B, D, L)
            masked = masked if self.even_pad is None else F.pad(masked, self.even_pad)  # (B, D, L [+ width - 1])
            x = torch.relu(conv(masked)) + x  # (B, D, L), residual keeps deep stacks trainable
            levels.append(pool(x.transpose(1, 2), mask))  # (B, D)
        return self.project(torch.cat(levels, dim=1))  # (B, D * layers) -> (B, enc_dim)


class BiLSTMEncoder(nn.Module):
    """A `layers`-deep bidirectional LSTM (hidden size = token_embedding_dim). At every token, its
    embedding and the last layer's forward and backward states are concatenated; `AttentionPool`
    pools them over the sequence (InferSent pools all states too, rather than keep the final ones)
    and the result is projected to enc_dim."""

    def __init__(self, config: EncoderConfig, embedding: nn.Embedding, enc_dim: int, dropout: float) -> None:
        super().__init__()
        dim = config.token_embedding_dim
        self.embedding = embedding
        self.dropout = nn.Dropout(dropout)
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

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        width = ids.shape[1]
        x = self.norm(self.dropout(self.embedding(ids)))  # (B, L, D)
        # pack_padded_sequence needs lengths >= 1 on the CPU; empty rows are masked out below.
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        states, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=width)  # (B, L, 2D)
        features = torch.cat([x, states], dim=2)  # (B, L, 3D): each token and its two contexts
        return self.project(self.pool(features, length_mask(lengths, width)))  # (B, enc_dim)


ENCODERS: dict[str, type[nn.Module]] = {
    "pooled_embedding": PooledEmbeddingEncoder,
    "hcnn": HierarchicalCNNEncoder,
    "bilstm": BiLSTMEncoder,
}


def build_encoder(config: EncoderConfig, embedding: nn.Embedding, enc_dim: int, dropout: float) -> nn.Module:
    return ENCODERS[config.network](config, embedding, enc_dim, dropout)
