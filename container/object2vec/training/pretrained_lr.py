"""The learning rate of pretrained transformer parameters: a param group of their own, and its warm-up.

Fine-tuning a pretrained transformer wants a far smaller step than the freshly initialised parts
(projection, comparator MLP) around it, and a gentle start while those parts are still random:
- `pretrained_param_groups` puts the transformer's trainable parameters in their own param group at
  learning rate x `transformer_learning_rate_multiplier`; the other parameters keep the optimizer's
  learning rate (one group, as without a transformer);
- `add_warmup` makes that group's learning rate climb linearly over the first
  `transformer_warmup_steps` optimizer steps: step k (1-based) uses target x min(1, k / steps).

The warm-up lives in the param group itself (keys `target_lr`, `warmup_steps`, `steps_done`) and
is advanced by an optimizer step post-hook, so the training loop needs no call of its own, and the
optimizer's state_dict (hence a checkpoint) carries the warm-up position: a resumed run continues
the ramp where it stopped. Other schedules can coexist: they see plain param groups.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from object2vec.config import Hyperparameters
from object2vec.model.transformer import transformer_parameters

TARGET_LR = "target_lr"  # the group's learning rate after warm-up
WARMUP_STEPS = "warmup_steps"
STEPS_DONE = "steps_done"


def optimizer_base_lr(hp: Hyperparameters) -> float:
    """The learning rate the optimizer applies (AdaDelta takes none: 1.0 is its unscaled update)."""
    return 1.0 if hp.optimizer == "adadelta" else hp.learning_rate


def pretrained_param_groups(
    hp: Hyperparameters, model: nn.Module, params: Iterable[nn.Parameter], extra: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """`params` as param groups: the others (no lr key: the optimizer's default), then the
    transformer's at base lr x multiplier with its warm-up keys. Empty groups are left out; `extra`
    goes into both (e.g. a weight_decay)."""
    pretrained = {id(p) for p in transformer_parameters(model)}
    params = list(params)
    others = [p for p in params if id(p) not in pretrained]
    mine = [p for p in params if id(p) in pretrained]
    groups: list[dict[str, Any]] = []
    if others:
        groups.append({"params": others, **(extra or {})})
    if mine:
        target = optimizer_base_lr(hp) * hp.transformer_learning_rate_multiplier
        steps = hp.transformer_warmup_steps
        groups.append(
            {
                "params": mine,
                **(extra or {}),
                "lr": _warmup_lr(target, steps, 0),
                TARGET_LR: target,
                WARMUP_STEPS: steps,
                STEPS_DONE: 0,
            }
        )
    return groups


def _warmup_lr(target: float, steps: int, done: int) -> float:
    """The learning rate of step done + 1."""
    return target if steps <= 0 else target * min(1.0, (done + 1) / steps)


def advance_warmup(optimizer: torch.optim.Optimizer, *_: Any) -> None:
    """After a step: count it and set the learning rate of the next one (a step post-hook)."""
    for group in optimizer.param_groups:
        if group.get(WARMUP_STEPS, 0) > 0 and group[STEPS_DONE] < group[WARMUP_STEPS]:
            group[STEPS_DONE] += 1
            group["lr"] = _warmup_lr(group[TARGET_LR], group[WARMUP_STEPS], group[STEPS_DONE])


def add_warmup(optimizer: Any) -> Any:
    """Register the warm-up on `optimizer` (or on each optimizer of an OptimizerGroup) when one of
    its groups warms up; returns it."""
    for inner in getattr(optimizer, "optimizers", [optimizer]):
        if any(group.get(WARMUP_STEPS, 0) > 0 for group in inner.param_groups):
            inner.register_step_post_hook(advance_warmup)
    return optimizer
