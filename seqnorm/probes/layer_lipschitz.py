"""The Lipschitz constant of one layer (L2 norms in and out), exact or a certified bound.

==============================  ==========================================================
``Linear``                      ``||W||_2`` (exact SVD of the weight the layer uses)
``Conv1d/2d/3d``                operator norm, certified bound of
                                :func:`~seqnorm.constraints.conv_operator_norm`
                                (at every input size, or at the given one)
ReLU, ReLU6, Tanh, Hardtanh,    1
Softplus, Softsign, CELU,
LogSigmoid, Tanhshrink,
Softshrink, Identity, Flatten,
Unflatten, Dropout (eval)
LeakyReLU, ELU, PReLU           ``max(1, |slope|)``, ``max(1, |alpha|)``
Sigmoid / Hardsigmoid           1/4 / 1/6
Softmax                         1/2 (its Jacobian ``diag(p) - p p^T`` has norm <= 1/2)
GELU                            ``Phi(sqrt 2) + sqrt 2 phi(sqrt 2) = 1.1289..`` (exact form;
                                the tanh form, SiLU, Mish, SELU, Hardswish: max |f'|,
                                computed)
Dropout (training)              ``1 / (1 - p)`` (for any fixed mask)
AvgPool                         its operator norm (a per-dimension Toeplitz bound; exact
                                per-dimension matrices at a given input size)
MaxPool                         ``sqrt(c)``, ``c`` the most windows that share one input
                                element (1 when windows do not overlap): exact, since a
                                spike at a shared maximum moves ``c`` outputs
                                (pools: :mod:`seqnorm.probes.pool_lipschitz`)
BatchNorm (eval, running stats) ``max |gamma| / sqrt(running_var + eps)``
==============================  ==========================================================

Anything else raises ``ValueError`` with the reason: BatchNorm in training mode (or without
running statistics), LayerNorm/GroupNorm (not Lipschitz), attention, recurrent layers,
discontinuous activations, unknown modules.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..constraints.conv import CONV_TYPES, ConvGeometry, conv_operator_norm
from ..layers import RecurrentLayer
from .pool_lipschitz import POOL_LAYERS, pool_lipschitz

__all__ = ["BOUNDED_LAYERS", "GELU_LIPSCHITZ", "REFUSED_LAYERS", "layer_lipschitz"]

_SQRT2 = math.sqrt(2.0)
#: Lipschitz constant of the exact GELU ``x Phi(x)``: ``f' = Phi + x phi`` peaks at ``sqrt 2``.
GELU_LIPSCHITZ = 0.5 * (1 + math.erf(1.0)) + _SQRT2 * math.exp(-1.0) / math.sqrt(2 * math.pi)


@functools.cache
def _max_abs_derivative(name: str) -> float:
    """``max |f'|`` of a smooth scalar activation, to ~1e-12, in float64.

    A grid over ``[-20, 20]`` (outside, every function here has ``|f'|`` tending
    monotonically to 0 or 1) locates the peak; golden-section search refines it.
    """
    fn: Callable[[Tensor], Tensor] = {
        "gelu_tanh": lambda x: nn.functional.gelu(x, approximate="tanh"),
        "silu": nn.functional.silu,
        "mish": nn.functional.mish,
        "selu": nn.functional.selu,
        "hardswish": nn.functional.hardswish,
    }[name]

    def deriv(x: Tensor) -> Tensor:
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(fn(x).sum(), x)
        return g.abs()

    x = torch.linspace(-20, 20, 400_001, dtype=torch.float64)
    d = deriv(x)
    i = int(d.argmax())
    lo, hi = float(x[max(i - 1, 0)]), float(x[min(i + 1, len(x) - 1)])
    best = float(d[i])
    r = (math.sqrt(5) - 1) / 2
    for _ in range(100):
        a, b = hi - r * (hi - lo), lo + r * (hi - lo)
        fa, fb = (float(v) for v in deriv(torch.tensor([a, b], dtype=torch.float64)))
        best = max(best, fa, fb)
        if fa >= fb:
            hi = b
        else:
            lo = a
    return best


#: Activations with a constant factor: type -> Lipschitz constant.
_CONSTANT: dict[type[nn.Module], float] = {
    nn.ReLU: 1.0,
    nn.ReLU6: 1.0,
    nn.Tanh: 1.0,
    nn.Hardtanh: 1.0,
    nn.Softplus: 1.0,
    nn.Softsign: 1.0,
    nn.CELU: 1.0,
    nn.LogSigmoid: 1.0,
    nn.Tanhshrink: 1.0,
    nn.Softshrink: 1.0,
    nn.Identity: 1.0,
    nn.Flatten: 1.0,
    nn.Unflatten: 1.0,
    nn.Sigmoid: 0.25,
    nn.Hardsigmoid: 1.0 / 6.0,
    nn.Softmax: 0.5,
}

#: Smooth activations whose constant is ``max |f'|``, computed once.
_COMPUTED: dict[type[nn.Module], str] = {
    nn.SiLU: "silu",
    nn.Mish: "mish",
    nn.SELU: "selu",
    nn.Hardswish: "hardswish",
}

_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_BATCH_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

#: Layers with a constant here (some have children: a constrained layer's parametrizations).
BOUNDED_LAYERS = (
    nn.Linear,
    *CONV_TYPES,
    *_CONSTANT,
    *_COMPUTED,
    nn.GELU,
    nn.LeakyReLU,
    nn.ELU,
    nn.PReLU,
    *_DROPOUT,
    *POOL_LAYERS,
    *_BATCH_NORM,
)
#: Layers that are refused even when they have children (a recurrent layer's
#: parametrizations, attention's projections).
REFUSED_LAYERS = (
    RecurrentLayer,
    nn.RNNBase,
    nn.RNNCellBase,
    nn.MultiheadAttention,
    nn.Transformer,
    nn.TransformerEncoder,
    nn.TransformerDecoder,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
)


def _linear(module: nn.Linear) -> float:
    W = module.weight.detach()
    return float(torch.linalg.matrix_norm(W.to(torch.float64), 2))


def _conv(module: nn.Module, size: tuple[int, ...] | None) -> float:
    g = ConvGeometry.of(module)
    W = module.weight.detach()
    return float(conv_operator_norm(W, g, size))


def _batch_norm(module: nn.Module) -> float:
    if module.training:
        raise ValueError("in training mode it normalises by batch statistics (not Lipschitz); "
                         "call net.eval()")  # fmt: skip
    if module.running_var is None:
        raise ValueError("without running statistics it normalises by batch statistics")
    scale = (module.running_var.detach().double() + module.eps).rsqrt()
    if module.weight is not None:
        scale = scale * module.weight.detach().double().abs()
    return float(scale.max())


def layer_lipschitz(module: nn.Module, input_size: Sequence[int] | None = None) -> float:
    """The L2 Lipschitz constant of one layer, exact or a certified upper bound.

    Args:
        module: a layer of the table in the module docs.
        input_size: the spatial size of its input (convolutions: the bound at that size;
            ceil-mode and adaptive pools need it); ``None``: valid at every size.

    Raises:
        ValueError: the reason the layer cannot be bounded.

    >>> layer_lipschitz(nn.Sigmoid()), layer_lipschitz(nn.MaxPool2d(3, stride=2))
    (0.25, 2.0)
    """
    size = None if input_size is None else tuple(input_size)
    if isinstance(module, nn.Linear):
        return _linear(module)
    if isinstance(module, CONV_TYPES):
        return _conv(module, size)
    if type(module) in _CONSTANT:
        return _CONSTANT[type(module)]
    if type(module) in _COMPUTED:
        return _max_abs_derivative(_COMPUTED[type(module)])
    if isinstance(module, nn.GELU):
        if module.approximate == "tanh":
            return _max_abs_derivative("gelu_tanh")
        return GELU_LIPSCHITZ
    if isinstance(module, nn.LeakyReLU):
        return max(1.0, abs(module.negative_slope))
    if isinstance(module, nn.ELU):
        return max(1.0, abs(module.alpha))
    if isinstance(module, nn.PReLU):
        return max(1.0, float(module.weight.detach().abs().max()))
    if isinstance(module, _DROPOUT):
        return 1.0 / (1.0 - module.p) if module.training and module.p < 1 else 1.0
    if isinstance(module, POOL_LAYERS):
        return pool_lipschitz(module, size)
    if isinstance(module, _BATCH_NORM):
        return _batch_norm(module)
    if isinstance(module, RecurrentLayer):
        raise ValueError(
            "a recurrent layer is not a feed-forward layer (its per-step bound is "
            "weight_spectrum()['lipschitz_bound'])"
        )
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)) or isinstance(
        module, (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
    ):
        raise ValueError("normalising by the input's own statistics is not Lipschitz")
    if isinstance(module, (nn.Hardshrink, nn.Threshold)):
        raise ValueError("it is discontinuous")
    raise ValueError("no Lipschitz constant is known for this module type")
