"""Plain torch in and out: a seqnorm layer or cell from a torch one, and back.

The arguments torch's modules and seqnorm's share are read off one module and given to the
other; the weights are copied by torch's names (``_flat_weights_names``), which both use.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.utils import parametrize

if TYPE_CHECKING:
    from .module import RecurrentModule

__all__ = ["load_from_torch", "torch_twin"]

#: Arguments of torch's layers (``nn.RNN/GRU/LSTM``) and cells, in the order they list them.
LAYER_ARGS = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
              "bidirectional")  # fmt: skip
CELL_ARGS = ("input_size", "hidden_size", "bias")


def _torch_args(module: nn.Module, is_layer: bool) -> dict[str, Any]:
    """The constructor arguments of a torch or seqnorm module, read off its attributes."""
    args = {a: getattr(module, a) for a in (LAYER_ARGS if is_layer else CELL_ARGS)}
    if getattr(module, "proj_size", 0):
        args["proj_size"] = module.proj_size
    if hasattr(module, "nonlinearity"):
        args["nonlinearity"] = module.nonlinearity
    return args


@contextmanager
def _reading(module: nn.Module) -> Iterator[None]:
    """Read the constrained weights once, in eval mode (a training-mode read would advance
    a power-iteration estimate), without recording gradients."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad(), parametrize.cached():
            yield
    finally:
        for m, mode in modes:
            m.training = mode


def torch_twin(module: RecurrentModule) -> nn.Module:
    """The torch module with ``module``'s arguments and its constrained weights copied in."""
    if module.mode == "rnn_modrelu":
        raise ValueError(
            f"{type(module).__name__} with nonlinearity='modrelu' has no torch equivalent "
            f"(torch's RNNs know tanh and relu only)"
        )
    is_layer = hasattr(module, "num_layers")
    ref = module.weight_ih_l0 if is_layer else module.weight_ih
    twin = module.torch_class(**_torch_args(module, is_layer), device=ref.device, dtype=ref.dtype)
    with _reading(module):
        for name in module._flat_weights_names:
            getattr(twin, name).copy_(getattr(module, name))
    return twin.train(module.training)


def load_from_torch(
    cls: type[RecurrentModule], module: nn.Module, **kwargs: Any
) -> RecurrentModule:
    """A ``cls`` with ``module``'s arguments, device, dtype and weights (see ``from_torch``)."""
    if type(module) is not cls.torch_class:
        raise TypeError(
            f"{cls.__name__}.from_torch takes a {cls.torch_class.__module__}."
            f"{cls.torch_class.__name__}, got {type(module).__name__}"
        )
    is_layer = hasattr(module, "num_layers")
    ref = module.weight_ih_l0 if is_layer else module.weight_ih
    out = cls(**_torch_args(module, is_layer), device=ref.device, dtype=ref.dtype, **kwargs)
    with torch.no_grad():
        for name in out._flat_weights_names:
            value = getattr(module, name).detach().clone()
            if not parametrize.is_parametrized(out, name):
                getattr(out, name).copy_(value)
            elif all(hasattr(p, "right_inverse") for p in out.parametrizations[name]):
                setattr(out, name, value)  # through the constraint's right_inverse
            else:  # spectral, scaled, bound: the stored matrix is W itself
                out.parametrizations[name].original.copy_(value)
    return out.train(module.training)
