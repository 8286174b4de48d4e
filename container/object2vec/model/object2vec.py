"""Object2VecModel: enc0 and enc1 -> comparator -> MLP -> output layer.

Inputs are flat token batches, one `Tokens` per side (data/batching.py); `layouts` names the
view each side's encoder reads, for the batcher to build once per batch.
"""

from __future__ import annotations

import torch
from torch import nn

from object2vec.config import Hyperparameters
from object2vec.data.batching import Tokens
from object2vec.model.comparator import Comparator
from object2vec.model.encoders import build_encoder

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "linear": nn.Identity}
EMBEDDING_INIT_STD = 0.1  # small random start; pretrained rows replace it (auxiliary channel)


def make_mlp(input_dim: int, hp: Hyperparameters) -> nn.Sequential:
    """mlp_layers x (Linear -> activation -> dropout), then the output layer."""
    layers: list[nn.Module] = []
    width = input_dim
    for _ in range(hp.mlp_layers):
        layers += [nn.Linear(width, hp.mlp_dim), ACTIVATIONS[hp.mlp_activation](), nn.Dropout(hp.dropout)]
        width = hp.mlp_dim
    layers.append(nn.Linear(width, hp.output_dim))
    return nn.Sequential(*layers)


def make_token_embedding(vocab_size: int, dim: int, sparse: bool) -> nn.Embedding:
    embedding = nn.Embedding(vocab_size, dim, sparse=sparse)
    nn.init.normal_(embedding.weight, std=EMBEDDING_INIT_STD)
    return embedding


class Object2VecModel(nn.Module):
    def __init__(self, hp: Hyperparameters) -> None:
        super().__init__()
        self.hp = hp
        sparse = hp.token_embedding_storage_type == "row_sparse"
        emb0 = make_token_embedding(hp.enc0.vocab_size, hp.enc0.token_embedding_dim, sparse)
        # Tied weights: one table, shared by both encoders (equal sizes are checked in config).
        emb1 = (
            emb0
            if hp.tied_token_embedding_weight
            else make_token_embedding(hp.enc1.vocab_size, hp.enc1.token_embedding_dim, sparse)
        )
        self.encoders = nn.ModuleList(
            [
                build_encoder(hp.enc0, emb0, hp.enc_dim, hp.dropout),
                build_encoder(hp.enc1, emb1, hp.enc_dim, hp.dropout),
            ]
        )
        self.comparator = Comparator(hp.comparator_list, hp.enc_dim)
        self.mlp = make_mlp(self.comparator.output_dim, hp)

    def token_embedding(self, index: int) -> nn.Embedding:
        return self.encoders[index].embedding

    @property
    def layouts(self) -> tuple[str, str]:
        """The batch view each encoder reads ("flat", "packed", "padded"), in0 then in1."""
        return (self.encoders[0].layout, self.encoders[1].layout)

    def encode(self, index: int, tokens: Tokens) -> torch.Tensor:
        """Embeddings of single objects from encoder `index`: B sequences -> (B, enc_dim)."""
        return self.encoders[index](tokens)

    def forward(self, in0: Tokens, in1: Tokens) -> torch.Tensor:
        """Raw outputs: (B, num_classes) logits for softmax, (B, 1) values for regression."""
        a = self.encode(0, in0)  # (B, enc_dim)
        b = self.encode(1, in1)  # (B, enc_dim)
        return self.mlp(self.comparator(a, b))

    def predict(self, in0: Tokens, in1: Tokens) -> torch.Tensor:
        """Scores as served: softmax probabilities (B, num_classes) or values (B, 1)."""
        out = self(in0, in1)
        return torch.softmax(out, dim=1) if self.hp.is_classification else out
