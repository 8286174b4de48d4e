"""The comparator: sub-vectors in comparator_list order, their widths and values."""

from __future__ import annotations

import itertools

import pytest
import torch

from object2vec.model.comparator import Comparator, comparator_width

A = torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.0, -1.0]])
B = torch.tensor([[4.0, 5.0, -6.0], [0.5, 2.0, 1.0]])
PARTS = {
    "hadamard": [torch.tensor([[4.0, -10.0, -18.0], [0.25, 0.0, -1.0]])],
    "concat": [A, B],
    "abs_diff": [torch.tensor([[3.0, 7.0, 9.0], [0.0, 2.0, 2.0]])],
    "cosine": [torch.tensor([[-24.0 / (14.0**0.5 * 77.0**0.5)], [-0.75 / (1.25**0.5 * 5.25**0.5)]])],
}
ORDERS = [order for size in (1, 2, 3) for order in itertools.permutations(PARTS, size)]


@pytest.mark.parametrize("order", ORDERS, ids=["+".join(order) for order in ORDERS])
def test_sub_vectors_follow_comparator_list_order(order: tuple[str, ...]) -> None:
    comparator = Comparator(order, enc_dim=3)
    out = comparator(A, B)
    expected = torch.cat([part for op in order for part in PARTS[op]], dim=1)
    assert out.shape == (2, comparator.output_dim)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize(
    ("order", "width"),
    [
        (("hadamard",), 8),
        (("concat",), 16),
        (("abs_diff",), 8),
        (("cosine",), 1),
        (("hadamard", "concat", "abs_diff"), 32),
        (("hadamard", "cosine"), 9),
    ],
)
def test_output_width(order: tuple[str, ...], width: int) -> None:
    assert Comparator(order, enc_dim=8).output_dim == width
    assert sum(comparator_width(op, 8) for op in order) == width


def test_cosine_ignores_scale_and_is_zero_for_an_all_zero_encoding() -> None:
    cosine = Comparator(("cosine",), 3)
    torch.testing.assert_close(cosine(A * 7.0, B * 0.1), cosine(A, B))
    a = torch.zeros(1, 3, requires_grad=True)
    out = cosine(a, B[:1])
    out.sum().backward()
    assert out.item() == 0.0 and torch.isfinite(a.grad).all()


def test_abs_diff_is_symmetric_and_concat_is_not() -> None:
    torch.testing.assert_close(
        Comparator(("abs_diff", "hadamard"), 3)(A, B), Comparator(("abs_diff", "hadamard"), 3)(B, A)
    )
    assert not torch.equal(Comparator(("concat",), 3)(A, B), Comparator(("concat",), 3)(B, A))


def test_gradients_flow_to_both_inputs() -> None:
    a, b = A.clone().requires_grad_(), B.clone().requires_grad_()
    Comparator(("hadamard", "concat", "abs_diff"), 3)(a, b).sum().backward()
    assert a.grad is not None and b.grad is not None
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
