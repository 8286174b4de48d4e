"""model/kernels.py against the plain PyTorch compositions they replace: values and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from object2vec.data.batching import Tokens
from object2vec.model.kernels import conv_window_masks, flat_conv, lstm_scan, segment_max

# torch warns that an even filter width with padding="same" costs a padded copy: expected here.
pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning"),
]

LENGTHS = [3, 0, 1, 5, 2, 5, 4]  # an empty sequence, a single token, equal lengths


def tokens_of(lengths: list[int]) -> Tokens:
    return Tokens.from_lists([[1] * n for n in lengths])  # the ids do not matter here


def split(values: torch.Tensor, lengths: list[int]) -> list[torch.Tensor]:
    return list(torch.split(values, lengths))


def test_segment_max_matches_a_masked_amax_with_its_gradient() -> None:
    torch.manual_seed(0)
    tokens = tokens_of(LENGTHS)
    values = torch.randn(sum(LENGTHS), 6, requires_grad=True)
    weight = torch.randn(len(LENGTHS), 6)
    out = segment_max(values, tokens)
    (out * weight).sum().backward()
    assert values.grad is not None
    reference_values = values.detach().clone().requires_grad_()
    expected = torch.stack(
        [part.amax(dim=0) if len(part) else torch.zeros(6) for part in split(reference_values, LENGTHS)]
    )
    (expected * weight).sum().backward()
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(values.grad, reference_values.grad)


def test_segment_max_splits_the_gradient_of_tied_maxima_like_amax() -> None:
    values = torch.tensor([[1.0, 2.0], [3.0, 2.0], [3.0, 0.0], [5.0, 5.0]], requires_grad=True)
    out = segment_max(values, tokens_of([3, 1]))
    assert out.tolist() == [[3.0, 2.0], [5.0, 5.0]]
    out.sum().backward()
    assert values.grad is not None
    assert values.grad.tolist() == [[0.0, 0.5], [0.5, 0.5], [0.5, 0.0], [1.0, 1.0]]


def test_segment_max_of_only_empty_sequences_is_zero() -> None:
    values = torch.zeros(0, 3, requires_grad=True)
    out = segment_max(values, tokens_of([0, 0]))
    assert out.tolist() == [[0.0] * 3] * 2
    out.sum().backward()


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5])
def test_window_masks_mark_taps_inside_the_sequence(width: int) -> None:
    masks = conv_window_masks(tokens_of([3, 1]), width)  # (K, T, 1)
    left = (width - 1) // 2
    expected = [
        [float(0 <= position + k - left < length) for length in (3, 1) for position in range(length)]
        for k in range(width)
    ]
    assert masks[:, :, 0].tolist() == expected


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5])
def test_flat_conv_is_conv1d_same_on_each_sequence_alone(width: int) -> None:
    torch.manual_seed(width)
    conv = nn.Conv1d(4, 3, kernel_size=width, padding="same")
    tokens = tokens_of(LENGTHS)
    x = torch.randn(sum(LENGTHS), 4, requires_grad=True)
    grad = torch.randn(sum(LENGTHS), 3)
    out = flat_conv(x, conv.weight, conv.bias, conv_window_masks(tokens, width))
    (out * grad).sum().backward()
    ours = (x.grad, conv.weight.grad, conv.bias.grad)
    conv.zero_grad()
    reference_x = x.detach().clone().requires_grad_()
    parts = [conv(part.t()[None])[0].t() for part in split(reference_x, LENGTHS) if len(part)]
    expected = torch.cat(parts)
    (expected * grad).sum().backward()
    torch.testing.assert_close(out, expected)
    for got, want in zip(ours, (reference_x.grad, conv.weight.grad, conv.bias.grad), strict=True):
        torch.testing.assert_close(got, want)


def packed_inputs(lengths: list[int], width: int, seed: int = 0) -> tuple[Tokens, torch.Tensor]:
    torch.manual_seed(seed)
    tokens = tokens_of(lengths)
    return tokens, torch.randn(sum(lengths), width)  # per-token values in flat order


@pytest.mark.parametrize("reverse", [False, True])
def test_lstm_scan_is_an_lstm_run_on_each_sequence_alone(reverse: bool) -> None:
    hidden = 3
    lstm = nn.LSTM(2, hidden, batch_first=True)
    tokens, x = packed_inputs(LENGTHS, 2)
    packing = tokens.packed()
    x.requires_grad_()
    grad = torch.randn(sum(LENGTHS), hidden)
    # Ours: the input projection, then the scan over packed steps; back to flat order.
    gates_in = x[packing.order] @ lstm.weight_ih_l0.t() + lstm.bias_ih_l0 + lstm.bias_hh_l0
    out = lstm_scan(gates_in, lstm.weight_hh_l0, packing.steps, reverse)[packing.position]  # (T, H)
    (out * grad).sum().backward()
    ours = (x.grad, lstm.weight_ih_l0.grad, lstm.weight_hh_l0.grad, lstm.bias_hh_l0.grad)
    lstm.zero_grad()
    reference_x = x.detach().clone().requires_grad_()
    parts = []
    for part in split(reference_x, LENGTHS):
        if not len(part):
            continue
        seq = part.flip(0) if reverse else part
        states, _ = lstm(seq[None])  # (1, n, H)
        parts.append(states[0].flip(0) if reverse else states[0])
    expected = torch.cat(parts)
    (expected * grad).sum().backward()
    torch.testing.assert_close(out, expected)
    reference = (reference_x.grad, lstm.weight_ih_l0.grad, lstm.weight_hh_l0.grad, lstm.bias_hh_l0.grad)
    for got, want in zip(ours, reference, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("reverse", [False, True])
def test_lstm_scan_gradient_passes_gradcheck(reverse: bool) -> None:
    tokens, _ = packed_inputs([3, 1, 2, 3], 1)
    steps = tokens.packed().steps
    torch.manual_seed(1)
    gates_in = torch.randn(9, 8, dtype=torch.float64, requires_grad=True)
    w_hh = torch.randn(8, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda g, w: lstm_scan(g, w, steps, reverse), (gates_in, w_hh))


def test_lstm_scan_of_no_tokens_keeps_the_weight_in_the_graph() -> None:
    w_hh = torch.randn(8, 2, requires_grad=True)
    out = lstm_scan(torch.zeros(0, 8, requires_grad=True), w_hh, (), False)
    assert out.shape == (0, 2)
    out.sum().backward()
    assert w_hh.grad is not None and not w_hh.grad.any()  # a zero gradient, not None


def test_kernels_run_under_inference_mode() -> None:
    tokens, x = packed_inputs(LENGTHS, 4)
    with torch.inference_mode():
        assert segment_max(x, tokens).shape == (len(LENGTHS), 4)
        conv = nn.Conv1d(4, 4, 3, padding="same")
        assert flat_conv(x, conv.weight, conv.bias, conv_window_masks(tokens, 3)).shape == x.shape
        assert lstm_scan(torch.randn(len(x), 16), torch.randn(16, 4), tokens.packed().steps, True).shape == x.shape
