"""Weights in and out of a seqnorm module, through its constraint, without the global RNG.

* :func:`set_weight`: write a plain matrix into a (constrained) weight.
* :func:`load_plain_weights`: what ``load_state_dict`` does with torch's plain keys.
* :func:`torch_twin` / :func:`load_from_torch`: one module's torch twin, and a seqnorm
  module built from a torch one (``to_torch`` / ``from_torch`` of a single module).

The arguments torch's modules and seqnorm's share are the class's ``torch_args``, read off
one module and given to the other; the weights are copied by torch's names
(``_flat_weights_names``, which both use). A constrained ``weight_hh`` is written through its
constraint (``setattr``, i.e. the constraint's ``right_inverse``) and read as the constrained
matrix. Nothing here draws from the global random number generator: modules are built under
:func:`no_global_rng`, so converting (or saving) a model in the middle of a run leaves the
run's later dropout masks and samples as they were. This module reads the modules it is
given and imports no class of seqnorm's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..utils import eval_mode

__all__ = [
    "base_class",
    "load_from_torch",
    "load_plain_weights",
    "no_global_rng",
    "reading",
    "set_weight",
    "torch_twin",
]


def base_class(module: nn.Module) -> type[nn.Module]:
    """``module``'s class, not the one torch's parametrize creates on top of it."""
    cls = type(module)
    while cls.__module__ == parametrize.__name__:
        cls = cls.__bases__[0]
    return cls


def _reference(module: nn.Module) -> Tensor:
    """A weight of ``module`` (torch's or seqnorm's, layer or cell): its device and dtype."""
    return module.weight_ih_l0 if hasattr(module, "num_layers") else module.weight_ih


@contextmanager
def no_global_rng(device: torch.device | None = None) -> Iterator[None]:
    """Restore the global RNG state (CPU, and ``device``'s if it is an accelerator) on exit:
    building a module draws its initial weights, which would shift a run's later draws."""
    devices = [] if device is None or device.type in ("cpu", "meta") else [device.index or 0]
    kind = "cuda" if device is None or device.type in ("cpu", "meta") else device.type
    with torch.random.fork_rng(devices=devices, device_type=kind):
        yield


@contextmanager
def reading(module: nn.Module) -> Iterator[None]:
    """Read the constrained weights once, in eval mode (a training-mode read would update the
    constraint's estimate), without recording gradients."""
    with eval_mode(module), torch.no_grad(), parametrize.cached():
        yield


def _built_like(cls: type[nn.Module], source: nn.Module, names: tuple[str, ...],
                **kwargs: Any) -> nn.Module:  # fmt: skip
    """A ``cls`` given ``source``'s arguments ``names``, device and dtype (and ``kwargs``),
    built under :func:`no_global_rng`."""
    ref = _reference(source)
    args = {a: getattr(source, a) for a in names}
    with no_global_rng(ref.device):
        return cls(**args, device=ref.device, dtype=ref.dtype, **kwargs)


@torch.no_grad()
def set_weight(module: nn.Module, name: str, value: Tensor) -> None:
    """Set ``module.<name>`` to ``value`` (a plain matrix), through its constraint if any.

    The value is first moved to the parameter's device and dtype. A constrained weight is
    set with ``setattr``, which runs the constraint's ``right_inverse``: the module then
    computes with the constrained version of ``value`` (exactly ``value`` where it already
    satisfies the constraint, e.g. a matrix read off a constrained module).
    """
    if not parametrize.is_parametrized(module, name):
        getattr(module, name).copy_(value)
        return
    plist = module.parametrizations[name]
    ref = next(plist.parameters())  # a stored tensor: where and in what dtype the weight lives
    value = value.to(device=ref.device, dtype=ref.dtype)
    setattr(module, name, value)  # every constraint's right_inverse


def torch_twin(module: nn.Module) -> nn.Module:
    """The torch module with ``module``'s arguments and its constrained weights copied in.

    ``module`` is a seqnorm layer or cell; built under :func:`no_global_rng`.

    Raises:
        ValueError: for a cell type torch has no module for (modReLU).
    """
    if not module.spec.has_torch_twin:
        raise ValueError(
            f"{base_class(module).__name__} with nonlinearity='modrelu' has no torch equivalent "
            f"(torch's RNNs know tanh and relu only)"
        )
    twin = _built_like(module.torch_class, module, module.torch_args)
    with reading(module):
        for name in module._flat_weights_names:
            getattr(twin, name).copy_(getattr(module, name))
    return twin.train(module.training)


def load_from_torch(cls: type[nn.Module], module: nn.Module, **kwargs: Any) -> nn.Module:
    """A ``cls`` (a seqnorm class) with ``module``'s arguments, device, dtype, weights and
    training flag (see ``RecurrentModule.from_torch``); the global RNG is left as it was.

    Raises:
        TypeError: if ``module`` is not exactly ``cls.torch_class``.
    """
    if type(module) is not cls.torch_class:
        raise TypeError(
            f"{cls.__name__}.from_torch takes a {cls.torch_class.__module__}."
            f"{cls.torch_class.__name__}, got {type(module).__name__}"
        )
    out = _built_like(cls, module, cls.torch_args, **kwargs)
    for name in out._flat_weights_names:
        set_weight(out, name, getattr(module, name).detach().clone())
    return out.train(module.training)


def load_plain_weights(module: nn.Module, state_dict: dict[str, Any], prefix: str) -> None:
    """Turn torch's plain keys for ``module``'s constrained weights into its own.

    ``state_dict`` is what ``load_state_dict`` hands to ``_load_from_state_dict``. Each
    ``prefix + weight_hh...`` (as torch's module or ``seqnorm.torch_state_dict`` names it) is
    set through the constraint (:func:`set_weight`) and replaced by the constraint's
    stored tensors and buffers, so the rest of ``load_state_dict`` loads them as usual.
    """
    if not parametrize.is_parametrized(module):
        return
    for name in list(module.parametrizations.keys()):
        key = prefix + name
        if key not in state_dict:
            continue
        value = state_dict.pop(key)
        if not isinstance(value, Tensor):
            raise TypeError(f"state_dict[{key!r}] must be a Tensor, got {type(value).__name__}")
        set_weight(module, name, value)
        for k, v in module.parametrizations[name].state_dict().items():
            state_dict.setdefault(f"{prefix}parametrizations.{name}.{k}", v)
