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

The CPU kernels are in model/kernels.py; on a GPU, bilstm runs cuDNN's packed LSTM.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from object2vec.config import EncoderConfig
from object2vec.data.batching import Tokens
from object2vec.model.kernels import (
    conv_window_masks,
    flat_conv,
    lstm_scan,
    segment_max,
)


def length_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(B, L) bool: True at real tokens."""
    return torch.arange(width, device=lengths.device) < lengths[:, None]


class PooledEmbeddingEncoder(nn.Module):
    """Mean of the token embeddings, projected to enc_dim."""

    layout: ClassVar[str] = "flat"

    def __init__(self, config: EncoderConfig, embedding: nn.Embedding, enc_dim: int, dropout: float) -> None:
        super().__init__()
        self.embedding = embedding
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Linear(config.token_embedding_dim, enc_dim)

    def forward(self, tokens: Tokens) -> torch.Tensor:
        weight, sparse = self.embedding.weight, self.embedding.sparse
        if tokens.fixed_length == 1:  # one id per sequence (users, items): the mean is the row itself
            pooled = F.embedding(tokens.ids, weight, sparse=sparse)  # (B, D), 20% faster a step
        else:
            # embedding_bag on the flat ids fuses lookup and mean, never materialising (B, L, D); an
            # empty bag gives zeros. Its own dense backward measured as fast as a hand-written one.
            pooled = F.embedding_bag(tokens.ids, weight, tokens.offsets, mode="mean", sparse=sparse)  # (B, D)
        return self.project(self.dropout(pooled))  # (B, enc_dim)


class HierarchicalCNNEncoder(nn.Module):
    """A stack of `layers` same-width 1-D convolutions; each level sees a wider context than the
    one below. The max-pool of every level over each sequence is kept (the hierarchy of n-gram
    features) and the concatenation is projected to enc_dim."""

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
        self.project = nn.Linear(dim * config.layers, enc_dim)

    def forward(self, tokens: Tokens) -> torch.Tensor:
        width = self.convs[0].kernel_size[0]
        masks = conv_window_masks(tokens, width)  # (K, T, 1) which taps stay inside the sequence
        x = self.dropout(self.embedding(tokens.ids))  # (T, D)
        levels = []
        for conv in self.convs:
            x = torch.relu(flat_conv(x, conv.weight, conv.bias, masks)) + x  # (T, D), residual
            levels.append(x)
        features = segment_max(torch.cat(levels, dim=1), tokens)  # (B, D * layers), 0 when empty
        return self.project(features)  # (B, enc_dim)


class BiLSTMEncoder(nn.Module):
    """A `layers`-deep bidirectional LSTM (hidden size = token_embedding_dim); the last layer's
    final forward and backward states are concatenated and projected to enc_dim."""

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
        self.project = nn.Linear(2 * dim, enc_dim)

    def forward(self, tokens: Tokens) -> torch.Tensor:
        packing = tokens.packed()
        x = self.dropout(self.embedding(tokens.ids.index_select(0, packing.order)))  # (T, D) step by step
        if x.is_cuda:
            final = self._cudnn(tokens, x)  # (B, 2D)
        else:
            final = self._scan(tokens, x)  # (B, 2D)
        final = final * (tokens.lengths > 0)[:, None]  # an empty sequence has no state: zeros
        return self.project(final)  # (B, enc_dim)

    def _scan(self, tokens: Tokens, x: torch.Tensor) -> torch.Tensor:
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
        if not packing.steps:  # every sequence is empty: zeros, with every weight still in the
            # graph (zero gradients, as for any empty sequence), so optimizers and DDP see them all
            return x.new_zeros(len(tokens), 2 * lstm.hidden_size) + torch.cat(outputs, dim=1).sum()
        last = outputs[0].shape[0] - 1
        forward_final = outputs[0].index_select(0, packing.last)  # (B, H) state after the last token
        backward_final = outputs[1].index_select(0, packing.rank.clamp(max=last))  # (B, H) after the first
        return torch.cat([forward_final, backward_final], dim=1)

    def _cudnn(self, tokens: Tokens, x: torch.Tensor) -> torch.Tensor:
        packing = tokens.packed()
        if packing.steps and packing.steps[0] == len(tokens):  # no empty sequence: the packing as is
            packed = PackedSequence(x, packing.batch_sizes, packing.sorted_rows, packing.rank)
        else:  # PackedSequence has no empty sequences: give them one token, zeroed by the caller
            lengths = tokens.lengths.clamp(min=1)
            padded = x.new_zeros(len(tokens), int(lengths.max()), x.shape[1])
            padded[tokens.rows, tokens.positions()] = x.index_select(0, packing.position)
            packed = pack_padded_sequence(padded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (hidden, _) = self.lstm(packed)  # (layers * 2, B, H), in batch order
        return torch.cat([hidden[-2], hidden[-1]], dim=1)


ENCODERS: dict[str, type[nn.Module]] = {
    "pooled_embedding": PooledEmbeddingEncoder,
    "hcnn": HierarchicalCNNEncoder,
    "bilstm": BiLSTMEncoder,
}


def build_encoder(config: EncoderConfig, embedding: nn.Embedding, enc_dim: int, dropout: float) -> nn.Module:
    return ENCODERS[config.network](config, embedding, enc_dim, dropout)
