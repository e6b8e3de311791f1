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

from ..constraints import CONV_TYPES, ConvGeometry, conv_operator_norm
from ..layers import RecurrentLayer

__all__ = ["BOUNDED_LAYERS", "GELU_LIPSCHITZ", "REFUSED_LAYERS", "layer_lipschitz", "spatial_dims"]

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
_AVG_POOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_MAX_POOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_ADAPTIVE_AVG = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_ADAPTIVE_MAX = (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
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
    *_AVG_POOL,
    *_MAX_POOL,
    *_ADAPTIVE_AVG,
    *_ADAPTIVE_MAX,
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


def _tuple(v: int | Sequence[int], d: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v),) * d


def spatial_dims(module: nn.Module) -> int:
    """Spatial dimensions a ``...1d/2d/3d`` layer works on (1 for any other)."""
    name = type(module).__name__
    return int(name[-2]) if name[-2:] in ("1d", "2d", "3d") else 1


def _linear(module: nn.Linear) -> float:
    W = module.weight.detach()
    return float(torch.linalg.matrix_norm(W.to(torch.float64), 2))


def _conv(module: nn.Module, size: tuple[int, ...] | None) -> float:
    g = ConvGeometry.of(module)
    W = module.weight.detach()
    return float(conv_operator_norm(W, g, size))


def _pool_1d_norm(
    k: int, s: int, p: int, ceil_mode: bool, include_pad: bool, n: int | None
) -> float:
    """Operator norm of 1-D average pooling (one dimension of a separable pool)."""
    if n is not None:
        eye = torch.eye(n, dtype=torch.float64).unsqueeze(1)  # (n, 1, n): basis inputs
        A = nn.functional.avg_pool1d(eye, k, s, p, ceil_mode, include_pad)[:, 0]  # (n, out)
        return float(torch.linalg.matrix_norm(A, 2))
    if ceil_mode:
        raise ValueError("ceil_mode=True needs input_shape")
    # Zero-padded convolution with kernel 1/k; without the padding in the count, every
    # weight is at most 1/(k - p) (entrywise larger nonnegative operator, larger norm).
    weight = torch.full((1, 1, k), 1.0 / (k if include_pad or p == 0 else k - p))
    geom = ConvGeometry(1, (s,), ((p, p),), (1,), 1, "zeros")
    return float(conv_operator_norm(weight.double(), geom))


def _avg_pool(module: nn.Module, size: tuple[int, ...] | None) -> float:
    d = spatial_dims(module)
    if getattr(module, "divisor_override", None):
        raise ValueError("divisor_override is not supported")
    k, s = _tuple(module.kernel_size, d), _tuple(module.stride or module.kernel_size, d)
    p = _tuple(module.padding, d)
    out = 1.0
    for j in range(d):
        n = None if size is None else size[j]
        out *= _pool_1d_norm(k[j], s[j], p[j], module.ceil_mode, module.count_include_pad, n)
    return out


def _adaptive_avg(module: nn.Module, size: tuple[int, ...] | None) -> float:
    if size is None:
        raise ValueError("adaptive pooling needs input_shape")
    d = spatial_dims(module)
    targets = _tuple(module.output_size, d)
    out = 1.0
    for n, o in zip(size, targets, strict=True):
        eye = torch.eye(n, dtype=torch.float64).unsqueeze(1)  # (n, 1, n)
        A = nn.functional.adaptive_avg_pool1d(eye, n if o is None else o)[:, 0]  # (n, out)
        out *= float(torch.linalg.matrix_norm(A, 2))
    return out


def _max_cover(k: int, s: int, dil: int) -> int:
    """Most windows (kernel ``k``, stride ``s``, dilation ``dil``) sharing one position."""
    return max(sum(1 for j in range(k) if (dil * j - r) % s == 0) for r in range(s))


def _max_pool(module: nn.Module) -> float:
    if module.return_indices:
        raise ValueError("return_indices=True returns a tuple, not a tensor")
    d = spatial_dims(module)
    k, s = _tuple(module.kernel_size, d), _tuple(module.stride or module.kernel_size, d)
    dil = _tuple(module.dilation, d)
    return math.sqrt(math.prod(_max_cover(k[j], s[j], dil[j]) for j in range(d)))


def _adaptive_max(module: nn.Module, size: tuple[int, ...] | None) -> float:
    if size is None:
        raise ValueError("adaptive pooling needs input_shape")
    if module.return_indices:
        raise ValueError("return_indices=True returns a tuple, not a tensor")
    d = spatial_dims(module)
    cover = 1
    for n, o in zip(size, _tuple(module.output_size, d), strict=True):
        o = n if o is None else o
        counts = [0] * n
        for i in range(o):  # torch's windows: [floor(i n / o), ceil((i + 1) n / o))
            for t in range((i * n) // o, -((-(i + 1) * n) // o)):
                counts[t] += 1
        cover *= max(counts)
    return math.sqrt(cover)


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
    if True:
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
        if isinstance(module, _AVG_POOL):
            return _avg_pool(module, size)
        if isinstance(module, _ADAPTIVE_AVG):
            return _adaptive_avg(module, size)
        if isinstance(module, _MAX_POOL):
            return _max_pool(module)
        if isinstance(module, _ADAPTIVE_MAX):
            return _adaptive_max(module, size)
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
