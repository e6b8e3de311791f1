"""Whole seqnorm modules through ``pickle``, ``torch.save``/``torch.load`` and ``copy``.

torch refuses to pickle a parametrized module (the class it creates for one raises in
``__getstate__``), so a seqnorm layer or cell pickles as a call of :func:`rebuild` with data
only: the name of its class, its constructor arguments, its ``state_dict`` and a few plain
attributes that the ``state_dict`` does not hold (``training`` of every submodule,
``unroll``, which parameters are frozen). Unpickling builds the module again from its
constructor and loads the state, so the constraint, its options and its buffers (the
power-iteration vectors, an orthogonal base, the step counter) come back as they were.

:func:`rebuild` is registered with :func:`torch.serialization.add_safe_globals` when seqnorm
is imported, so ``torch.load(path)`` with its default ``weights_only=True`` loads a model
holding seqnorm modules once the user allows their own classes, as for torch's layers.
It is safe to allow because it calls nothing the data names: the class comes from a fixed
table of seqnorm's six classes (:mod:`.registry`; or is a class the unpickler already
allowed, and must subclass one of them), every argument is checked to be one of the class's
constructor arguments (``constructor_args()``, declared on the class) with a plain value
(``None``, ``bool``, ``int``, ``float``, ``str`` or lists, tuples and dicts of those), the
state must be a mapping of names to tensors and loads with ``strict=True``.
"""

from __future__ import annotations

import copy
import copyreg
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from . import registry
from .weights import base_class, no_global_rng

__all__ = ["deepcopy_module", "rebuild", "reduce_module"]

#: The attributes kept beside the state: what ``rebuild`` accepts in ``extra``.
EXTRA_KEYS = ("training", "unroll", "frozen")


def init_kwargs(module: nn.Module) -> dict[str, Any]:
    """The constructor arguments that rebuild ``module`` (its device and dtype aside)."""
    kwargs = {a: getattr(module, a) for a in module.constructor_args()}
    if kwargs.get("constraint_options") is not None:
        kwargs["constraint_options"] = dict(kwargs["constraint_options"])
    return kwargs


def reduce_module(module: nn.Module) -> tuple[Any, ...]:
    """What ``module.__reduce_ex__`` returns: ``rebuild`` and its data arguments."""
    cls = base_class(module)
    known = registry.by_name()
    name: str | type = cls.__name__ if known.get(cls.__name__) is cls else cls
    extra: dict[str, Any] = {
        "training": {path: m.training for path, m in module.named_modules()},
        "frozen": [n for n, p in module.named_parameters() if not p.requires_grad],
    }
    if hasattr(module, "unroll"):
        extra["unroll"] = bool(module.unroll)
    return rebuild, (name, init_kwargs(module), module.state_dict(), extra)


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _resolve(name: str | type) -> tuple[type[nn.Module], type[nn.Module]]:
    """``(class to build, seqnorm class whose constructor builds it)``."""
    known = registry.by_name()
    if isinstance(name, str):
        if name not in known:
            raise ValueError(f"rebuild: unknown seqnorm class {name!r}; known: {sorted(known)}")
        return known[name], known[name]
    if isinstance(name, type):
        for base in name.__mro__:
            if known.get(base.__name__) is base:
                return name, base
    raise TypeError(f"rebuild: expected a seqnorm class name or subclass, got {name!r}")


def rebuild(
    name: str | type,
    kwargs: dict[str, Any],
    state: Mapping[str, Tensor],
    extra: dict[str, Any],
) -> nn.Module:
    """Build a seqnorm module from its class, constructor arguments and state (unpickling).

    Accepts data only (see the module's docs); the global RNG is left as it was.

    Args:
        name: the name of a seqnorm class (``"SpectralGRU"``...), or a subclass of one.
        kwargs: constructor arguments (no device or dtype: those of ``state``).
        state: the module's ``state_dict``.
        extra: ``training`` (a flag per submodule path), ``unroll``, ``frozen`` (names of
            parameters with ``requires_grad=False``).

    Raises:
        ValueError, TypeError: for anything but the data described.
    """
    cls, base = _resolve(name)
    if not isinstance(kwargs, dict) or not _plain(kwargs):
        raise TypeError(f"rebuild: kwargs must be a dict of plain values, got {kwargs!r}")
    bad = sorted(set(kwargs) - set(base.constructor_args()))
    if bad:
        raise ValueError(f"rebuild: unknown argument(s) {bad} for {base.__name__}")
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        raise TypeError("rebuild: state must be a mapping of names to tensors")
    if not isinstance(extra, dict) or not _plain(extra) or set(extra) - set(EXTRA_KEYS):
        raise TypeError(f"rebuild: extra must be a dict with keys from {EXTRA_KEYS}")
    ref = state.get("weight_ih_l0", state.get("weight_ih"))
    if ref is None:
        raise ValueError("rebuild: state has no weight_ih_l0 or weight_ih")
    with no_global_rng(ref.device):
        module = cls.__new__(cls)
        base.__init__(module, **kwargs, device=ref.device, dtype=ref.dtype)
    module.load_state_dict(state)
    if "unroll" in extra:
        module.unroll = bool(extra["unroll"])
    params = dict(module.named_parameters())
    for n in extra.get("frozen", []):
        params[n].requires_grad_(False)
    for path, m in module.named_modules():
        m.training = bool(extra.get("training", {}).get(path, module.training))
    return module


def deepcopy_module(module: nn.Module, memo: dict[int, Any]) -> nn.Module:
    """The usual deep copy (``__dict__`` and slots), not a trip through :func:`rebuild`."""
    replica = module.__new__(type(module))
    memo[id(module)] = replica
    replica.__dict__ = copy.deepcopy(module.__dict__, memo)
    for slot in copyreg._slotnames(type(module)):  # type: ignore[attr-defined]
        if hasattr(module, slot):
            setattr(replica, slot, copy.deepcopy(getattr(module, slot), memo))
    return replica


torch.serialization.add_safe_globals([rebuild])
