"""training/weight_average.py (ema_decay): the average of the trainable weights, swapped in and out."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from object2vec.training.weight_average import WeightAverage


def two_layers() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    model[1].bias.requires_grad_(False)  # frozen: never averaged
    return model


def step(model: nn.Module, value: float) -> None:
    """Stand-in for an optimizer step: every trainable weight moves by `value`."""
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(value)


def test_the_average_follows_the_steps_at_the_decay() -> None:
    model = two_layers()
    start = model[0].weight.detach().clone()
    average = WeightAverage(model, decay=0.5)
    step(model, 1.0)
    average.update()  # 0.5 x start + 0.5 x (start + 1)
    step(model, 1.0)
    average.update()  # 0.5 x (start + 0.5) + 0.5 x (start + 2)
    assert torch.allclose(average.averages[0], start + 1.25)
    assert average.steps == pytest.approx(2.0)
    assert len(average.averages) == 3  # two weights and a bias; the frozen bias is left out


def test_applied_swaps_the_average_in_and_the_weights_back_even_after_an_error() -> None:
    model = two_layers()
    average = WeightAverage(model, decay=0.9)
    step(model, 1.0)
    average.update()
    raw = model[0].weight.detach().clone()
    with average.applied():
        assert torch.allclose(model[0].weight, average.averages[0])
        assert not torch.allclose(model[0].weight, raw)
    assert torch.equal(model[0].weight, raw)
    with pytest.raises(RuntimeError), average.applied():
        raise RuntimeError("evaluation failed")
    assert torch.equal(model[0].weight, raw)


def test_a_tied_weight_is_averaged_once() -> None:
    shared = nn.Linear(2, 2)
    model = nn.ModuleDict({"left": shared, "right": shared})
    assert len(WeightAverage(model, 0.9).averages) == 2


def test_state_round_trip_and_bad_inputs() -> None:
    model = two_layers()
    first = WeightAverage(model, 0.9)
    step(model, 3.0)
    first.update()
    second = WeightAverage(two_layers(), 0.9)
    second.load_state(first.state())
    assert all(torch.equal(a, b) for a, b in zip(first.averages, second.averages, strict=True))
    with pytest.raises(ValueError, match="holds 2 averaged tensors, the model has 3"):
        second.load_state(first.state()[:2])
    for decay in (0.0, 1.0):
        with pytest.raises(ValueError, match="decay"):
            WeightAverage(model, decay)
