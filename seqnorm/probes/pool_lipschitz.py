"""The Lipschitz constant of a pooling layer (L2 norms in and out), exact or a certified bound.

* Average pooling (``AvgPool1d/2d/3d``): its operator norm, the product over dimensions of
  one dimension's norm: a Toeplitz bound from
  :func:`~seqnorm.constraints.conv_operator_norm` valid at every input size, or the exact
  norm of the pooling matrix at a given size (ceil mode needs the size).
* Adaptive average pooling: the exact norm of each dimension's pooling matrix (needs the
  input size).
* Max pooling, fixed or adaptive: ``sqrt(c)``, ``c`` the most windows that share one input
  element (1 when windows do not overlap): exact, since a spike at a shared maximum moves
  ``c`` outputs.

:func:`~seqnorm.probes.layer_lipschitz.layer_lipschitz` takes every layer, pools included.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..constraints.conv import ConvGeometry, conv_operator_norm, spatial_dims

__all__ = ["POOL_LAYERS", "pool_lipschitz"]

_AVG_POOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_MAX_POOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_ADAPTIVE_AVG = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_ADAPTIVE_MAX = (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
#: The pooling layers :func:`pool_lipschitz` bounds.
POOL_LAYERS = (*_AVG_POOL, *_MAX_POOL, *_ADAPTIVE_AVG, *_ADAPTIVE_MAX)


def _tuple(v: int | Sequence[int], d: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v),) * d


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


def pool_lipschitz(module: nn.Module, input_size: Sequence[int] | None = None) -> float:
    """The L2 Lipschitz constant of one pooling layer (see the module docs).

    Args:
        module: one of :data:`POOL_LAYERS`.
        input_size: the spatial size of its input (ceil-mode and adaptive pools need it);
            ``None``: valid at every size.

    Raises:
        ValueError: the reason the layer cannot be bounded, or a module that is not a pool.

    >>> pool_lipschitz(nn.MaxPool2d(3, stride=2))  # 2 x 2 windows share an element: sqrt 4
    2.0
    >>> round(pool_lipschitz(nn.AvgPool1d(2)), 4)  # the mean of 2: 1 / sqrt 2
    0.7071
    """
    size = None if input_size is None else tuple(input_size)
    if isinstance(module, _AVG_POOL):
        return _avg_pool(module, size)
    if isinstance(module, _ADAPTIVE_AVG):
        return _adaptive_avg(module, size)
    if isinstance(module, _MAX_POOL):
        return _max_pool(module)
    if isinstance(module, _ADAPTIVE_MAX):
        return _adaptive_max(module, size)
    raise ValueError(f"not a pooling layer: {type(module).__name__}")
