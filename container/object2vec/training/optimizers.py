"""The optimizer of hp.optimizer (`make_optimizer`), and the handling of token embeddings with sparse
gradients (row_sparse) or frozen pretrained rows.

`plain_optimizer` is the one place an optimizer name becomes a torch optimizer; a model whose
token embeddings need neither row_sparse nor frozen rows uses it unchanged (fused kernels). A
pretrained transformer gets its own learning rate and warm-up (training/pretrained_lr.py).

Token embeddings get their own parameter group with weight_decay=0; `EmbeddingGradients` instead
adjusts their gradients right before every step:
- weight decay is added as in torch's (coupled, L2) optimizers, grad += weight_decay * weight;
  for a sparse gradient only on the rows the batch used (a lazy update, like MXNet's row_sparse);
- the gradient of every frozen row is removed, so neither the update, nor weight decay, nor
  optimizer state (Adam's moments, Adagrad's sums) can move it: the step of each optimizer here
  is exactly zero for a zero gradient (and a sparse gradient simply omits those rows).

row_sparse: adam -> torch.optim.SparseAdam for the token embeddings (a lazy Adam: moments and
weights of a row change only in steps that use it) plus fused Adam for the other parameters;
adagrad and sgd take sparse gradients directly (the non-fused implementations).

Every optimizer is built through `eager(...)`: torch.optim imports torch._dynamo (with sympy and
inductor) the first time an optimizer is built or stepped, only to mark its methods "never
compile". That import takes longer than importing torch itself (measured: 5.4 s of a 13.9 s
`train` run under load, about 40% of its start-up), and nothing here is compiled.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from object2vec.config import Hyperparameters
from object2vec.data.vocab import FROZEN_ROWS
from object2vec.model.transformer import transformer_parameters
from object2vec.training.pretrained_lr import add_warmup, pretrained_param_groups

_EAGER: dict[type, type] = {}
# Optimizer methods that import torch._dynamo on their first call, to wrap themselves in
# torch._dynamo.disable; torch caches the wrapped function on the function as this attribute.
_DYNAMO_CACHE = "__dynamo_disable"
_DISABLED_METHODS = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")


def eager(cls: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """`cls` as a subclass that computes exactly the same but never imports torch._dynamo.

    In eager mode `torch._dynamo.disable(f)` is `f` and `graph_break()` does nothing, so: the
    methods torch wraps with `_disable_dynamo` get their cache filled with themselves, and step
    runs torch's own step function under no_grad (what its `_use_grad` wrapper does for a
    non-differentiable optimizer, minus the graph breaks). Where torch's structure is not the
    expected one (another torch version), `cls` is returned unchanged: correct, only slower.
    """
    if cls in _EAGER:
        return _EAGER[cls]
    step: Any = cls.step
    while hasattr(step, "__wrapped__"):  # torch's profile_hook_step, then _use_grad (or no_grad)
        step = step.__wrapped__
    methods = [getattr(torch.optim.Optimizer, name, None) for name in _DISABLED_METHODS]
    if not callable(step) or not all(hasattr(method, "__wrapped__") for method in methods):
        _EAGER[cls] = cls
        return cls
    for method in methods:
        setattr(method.__wrapped__, _DYNAMO_CACHE, method.__wrapped__)  # type: ignore[union-attr]

    @functools.wraps(step)
    def eager_step(self: torch.optim.Optimizer, closure: Callable[[], float] | None = None) -> Any:
        with torch.no_grad():
            return step(self, closure)

    _EAGER[cls] = type(cls.__name__, (cls,), {"step": eager_step, "__doc__": cls.__doc__})
    return _EAGER[cls]


def make_optimizer(hp: Hyperparameters, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer of hp.optimizer for every trainable parameter of `model`."""
    if needs_embedding_optimizer(hp, model):  # row_sparse or frozen pretrained rows
        return add_warmup(make_embedding_optimizer(hp, model))  # type: ignore[no-any-return]
    params = pretrained_param_groups(hp, model, (p for p in model.parameters() if p.requires_grad))
    return add_warmup(plain_optimizer(hp.optimizer, params, hp.learning_rate, hp.weight_decay))  # type: ignore[no-any-return]


def plain_optimizer(
    name: str, params: Any, lr: float, weight_decay: float = 0.0, sparse_gradients: bool = False
) -> torch.optim.Optimizer:
    """The torch optimizer of hp.optimizer `name` (adam, adagrad, sgd, rmsprop, adadelta).

    The fused kernels update all parameters in one pass: several times faster than the per-tensor
    loop on CPU as on GPU; they (and foreach) take dense gradients only. eager(): the same
    optimizers, without torch.optim's slow import of torch._dynamo.
    """
    kernel: dict[str, bool] = {"foreach": False} if sparse_gradients else {"fused": True}
    if name == "adam":  # sparse gradients go to SparseAdam instead (make_embedding_optimizer)
        return eager(torch.optim.Adam)(params, lr=lr, weight_decay=weight_decay, fused=True)
    if name == "adagrad":
        return eager(torch.optim.Adagrad)(params, lr=lr, weight_decay=weight_decay, **kernel)
    if name == "sgd":
        return eager(torch.optim.SGD)(params, lr=lr, weight_decay=weight_decay, **kernel)
    if name == "rmsprop":
        return eager(torch.optim.RMSprop)(params, lr=lr, weight_decay=weight_decay)
    # AdaDelta adapts its own step size; like MXNet's AdaDelta (the original's engine) it takes
    # no learning rate, so learning_rate is not applied (lr=1.0 is the unscaled update).
    return eager(torch.optim.Adadelta)(params, lr=1.0, weight_decay=weight_decay)


def token_embeddings(model: nn.Module) -> list[nn.Embedding]:
    """Every distinct token table of the model (a tied table once); a pretrained transformer's
    embeddings are its own, trained like its other weights, so they are not among them."""
    inside = {id(p) for p in transformer_parameters(model)}
    seen: dict[int, nn.Embedding] = {}
    for module in model.modules():
        if isinstance(module, nn.Embedding) and id(module.weight) not in inside:
            seen.setdefault(id(module.weight), module)
    return list(seen.values())


def needs_embedding_optimizer(hp: Hyperparameters, model: nn.Module) -> bool:
    return hp.token_embedding_storage_type == "row_sparse" or any(
        getattr(e, FROZEN_ROWS, None) is not None for e in token_embeddings(model)
    )


class EmbeddingGradients:
    """Weight decay and frozen rows, applied to the token embeddings' gradients before a step."""

    def __init__(self, embeddings: list[nn.Embedding], weight_decay: float) -> None:
        self.embeddings = embeddings
        self.weight_decay = weight_decay

    def __call__(self, *_: Any) -> None:  # also an optimizer step pre-hook: (optimizer, args, kwargs)
        with torch.no_grad():
            for embedding in self.embeddings:
                self.adjust(embedding)

    def adjust(self, embedding: nn.Embedding) -> None:
        weight, grad = embedding.weight, embedding.weight.grad
        if grad is None:
            return
        frozen: torch.Tensor | None = getattr(embedding, FROZEN_ROWS, None)
        if grad.is_sparse:
            grad = grad.coalesce()
            rows, values = grad.indices()[0], grad.values()  # (n,), (n, D)
            if self.weight_decay:
                values = values + self.weight_decay * weight[rows]
            if frozen is not None:
                keep = ~frozen[rows]
                rows, values = rows[keep], values[keep]
            if rows.numel() == 0:
                weight.grad = None  # nothing to update: the optimizer skips the parameter
                return
            weight.grad = torch.sparse_coo_tensor(
                rows[None], values, grad.shape, is_coalesced=True, check_invariants=False
            )
            return
        if self.weight_decay:
            grad.add_(weight, alpha=self.weight_decay)
        if frozen is not None:
            grad.masked_fill_(frozen[:, None], 0.0)


class OptimizerGroup:
    """Several optimizers stepped as one (SparseAdam for the sparse tables + Adam for the rest).

    Offers what training and checkpointing use: step, zero_grad, param_groups, state_dict and
    load_state_dict (a list with one state per optimizer, in order).
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def step(self, closure: Callable[[], float] | None = None) -> None:
        if closure is not None:
            with torch.enable_grad():
                closure()
        for optimizer in self.optimizers:
            optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for optimizer, part in zip(self.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(part)


def make_embedding_optimizer(hp: Hyperparameters, model: nn.Module) -> torch.optim.Optimizer | OptimizerGroup:
    """The optimizer of `hp.optimizer` with the token embeddings handled as described above."""
    embeddings = token_embeddings(model)
    table_ids = {id(e.weight) for e in embeddings}
    tables = [e.weight for e in embeddings if e.weight.requires_grad]
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in table_ids]
    lr, decay = hp.learning_rate, hp.weight_decay
    sparse = hp.token_embedding_storage_type == "row_sparse"
    if sparse:
        # Opt out explicitly (the default) of torch's per-tensor sparse checks, which otherwise
        # warns about SEGFAULTs on the first sparse Adagrad step: the gradients are well formed.
        torch.sparse.check_sparse_tensor_invariants.disable()
    groups = [
        *pretrained_param_groups(hp, model, rest, {"weight_decay": decay}),
        {"params": tables, "weight_decay": 0.0},
    ]
    if hp.optimizer == "adam" and sparse:
        sparse_adam = eager(torch.optim.SparseAdam)(tables, lr=lr)
        sparse_adam.register_step_pre_hook(EmbeddingGradients(embeddings, decay))
        dense_adam = eager(torch.optim.Adam)(rest, lr=lr, weight_decay=decay, fused=True)
        return OptimizerGroup([sparse_adam, dense_adam])
    # Each group sets its own weight decay (none on the tables: EmbeddingGradients adds it).
    optimizer = plain_optimizer(hp.optimizer, groups, lr, sparse_gradients=sparse)
    optimizer.register_step_pre_hook(EmbeddingGradients(embeddings, decay))
    return optimizer
