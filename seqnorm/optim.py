"""Optimizer parameter groups that give the constrained parameters their own learning rate.

The norm-preserving RNN recipes (expRNN, scoRNN, nnRNN) train the parameters behind an
orthogonal recurrent matrix with a learning rate 10x smaller than the rest.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .constraints import constrained_tensors

__all__ = ["constrained_parameters", "param_groups"]


def constrained_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters behind every constrained tensor of ``model``.

    Asked of each parametrization (:func:`seqnorm.constraints.constrained_tensors`): the
    stored tensors (``original`` or ``original0..n``) except those a constraint leaves free
    (with ``constrained_gates``, the free gate blocks' tensor), and the constraint's own
    parameters (``scaled``'s ``gamma_raw``). Whatever the tensor's name. Module order, no
    repeats.

    Args:
        model: any module.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    found: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for p in constrained_tensors(module):
            found.setdefault(id(p), p)
    return list(found.values())


def param_groups(
    model: nn.Module,
    lr: float | None = None,
    constrained_lr: float | None = None,
    **optimizer_defaults: Any,
) -> list[dict[str, Any]]:
    """Parameter groups with every constrained parameter in a group of its own.

    Args:
        model: the model to optimise.
        lr: learning rate of the other parameters (``None``: the optimizer's own ``lr``).
        constrained_lr: learning rate of :func:`constrained_parameters` (``None``: as ``lr``).
        **optimizer_defaults: other per-group options (``weight_decay``, ...) for both groups.

    Returns:
        ``[{"params": others, ...}, {"params": constrained, ...}]`` (the second only when the
        model has constrained parameters); every parameter of ``model`` appears exactly once.

    >>> import torch, seqnorm
    >>> rnn = seqnorm.SpectralRNN(2, 8, constraint="orthogonal")
    >>> opt = torch.optim.RMSprop(param_groups(rnn, lr=1e-3, constrained_lr=1e-4))
    >>> [g["lr"] for g in opt.param_groups]
    [0.001, 0.0001]
    """
    for name, val in (("lr", lr), ("constrained_lr", constrained_lr)):
        if val is not None and not (isinstance(val, (int, float)) and val > 0):
            raise ValueError(f"{name} must be None or a positive number, got {val!r}")
    constrained = constrained_parameters(model)
    ids = {id(p) for p in constrained}
    others = [p for p in model.parameters() if id(p) not in ids]
    base = dict(optimizer_defaults)
    if lr is not None:
        base["lr"] = lr
    groups = [{"params": others, **base}]
    if constrained:
        group = {"params": constrained, **base}
        if constrained_lr is not None:
            group["lr"] = constrained_lr
        groups.append(group)
    return groups
