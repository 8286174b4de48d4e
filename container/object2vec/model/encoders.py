"""Sequence encoders: ids (B, L) + lengths (B,) -> fixed-length vectors (B, enc_dim).

Padding never leaks into the result: pooling is masked by length and the LSTM runs on packed
sequences. An empty sequence encodes to the projection of a zero vector (the projection's bias).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from object2vec.config import EncoderConfig


def length_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(B, L) bool: True at real tokens."""
    return torch.arange(width, device=lengths.device) < lengths[:, None]


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
    """A stack of `layers` same-width 1-D convolutions; each level sees a wider context than the
    one below. The masked max-pool of every level is kept (the hierarchy of n-gram features) and
    the concatenation is projected to enc_dim."""

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
        self.project = nn.Linear(dim * config.layers, enc_dim)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = length_mask(lengths, ids.shape[1])[:, None, :]  # (B, 1, L)
        x = self.dropout(self.embedding(ids)).transpose(1, 2)  # (B, D, L)
        levels = []
        for conv in self.convs:
            # Zeroing padding before each conv makes it look like the sequence's zero border.
            masked = x * mask if self.even_pad is None else F.pad(x * mask, self.even_pad)  # (B, D, L [+ width - 1])
            x = torch.relu(conv(masked)) + x  # (B, D, L), residual keeps deep stacks trainable
            pooled = x.masked_fill(~mask, float("-inf")).amax(dim=2)  # (B, D)
            levels.append(pooled)
        features = torch.cat(levels, dim=1)  # (B, D * layers)
        features = features.masked_fill(lengths[:, None] == 0, 0.0)  # empty sequences: -inf -> 0
        return self.project(features)  # (B, enc_dim)


class BiLSTMEncoder(nn.Module):
    """A `layers`-deep bidirectional LSTM (hidden size = token_embedding_dim); the last layer's
    final forward and backward states are concatenated and projected to enc_dim."""

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
        self.project = nn.Linear(2 * dim, enc_dim)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.embedding(ids))  # (B, L, D)
        # pack_padded_sequence needs lengths >= 1 on the CPU; empty rows are zeroed below.
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        _, (hidden, _) = self.lstm(packed)  # hidden: (layers * 2, B, D)
        final = torch.cat([hidden[-2], hidden[-1]], dim=1)  # (B, 2D) forward and backward
        final = final * (lengths > 0)[:, None]
        return self.project(final)  # (B, enc_dim)


ENCODERS: dict[str, type[nn.Module]] = {
    "pooled_embedding": PooledEmbeddingEncoder,
    "hcnn": HierarchicalCNNEncoder,
    "bilstm": BiLSTMEncoder,
}


def build_encoder(config: EncoderConfig, embedding: nn.Embedding, enc_dim: int, dropout: float) -> nn.Module:
    return ENCODERS[config.network](config, embedding, enc_dim, dropout)
