"""The comparator: combines the two encodings into one vector, sub-vectors in comparator_list order."""

from __future__ import annotations

import torch
from torch import nn

# How many enc_dim-wide sub-vectors each operator contributes.
WIDTHS = {"hadamard": 1, "concat": 2, "abs_diff": 1}


class Comparator(nn.Module):
    def __init__(self, operators: tuple[str, ...], enc_dim: int) -> None:
        super().__init__()
        self.operators = operators
        self.output_dim = enc_dim * sum(WIDTHS[op] for op in operators)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # a, b: (B, enc_dim) -> (B, output_dim)
        parts = []
        for op in self.operators:
            if op == "hadamard":
                parts.append(a * b)
            elif op == "concat":
                parts.extend((a, b))
            else:  # abs_diff
                parts.append((a - b).abs())
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
