"""The comparator: combines the two encodings into one vector, sub-vectors in comparator_list order."""

from __future__ import annotations

import torch
from torch import nn

from object2vec.config import comparator_width

__all__ = ["COSINE_EPS", "Comparator", "comparator_width"]

COSINE_EPS = 1e-8  # an all-zero encoding (an empty sequence) has cosine 0 with anything


class Comparator(nn.Module):
    def __init__(self, operators: tuple[str, ...], enc_dim: int) -> None:
        super().__init__()
        self.operators = operators
        self.output_dim = sum(comparator_width(op, enc_dim) for op in operators)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # a, b: (B, enc_dim) -> (B, output_dim)
        parts = []
        for op in self.operators:
            if op == "hadamard":
                parts.append(a * b)
            elif op == "concat":
                parts.extend((a, b))
            elif op == "cosine":  # (B, 1): with mlp_layers=0 the score is affine in the cosine itself
                parts.append(torch.cosine_similarity(a, b, dim=1, eps=COSINE_EPS).unsqueeze(1))
            else:  # abs_diff
                parts.append((a - b).abs())
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
