"""Operator norm of a convolution at one input size, by power iteration.

:func:`conv_power_norm` runs the power iteration through ``conv`` and its adjoint
``conv_transpose``: a lower bound that converges to the true operator norm, for measuring
how tight the certified upper bounds of :mod:`seqnorm.constraints.conv.operator_norm` are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ...linalg import compute_dtype
from .geometry import ConvGeometry, check_weight, spatial_shape

__all__ = ["conv_power_norm"]


def _conv_fn(geometry: ConvGeometry) -> Callable[..., Tensor]:
    return (None, nn.functional.conv1d, nn.functional.conv2d, nn.functional.conv3d)[geometry.dims]


def _padded(x: Tensor, geometry: ConvGeometry) -> Tensor:
    pad = [p for lr in reversed(geometry.padding) for p in lr]
    if geometry.padding_mode == "zeros":
        return nn.functional.pad(x, pad)
    return nn.functional.pad(x, pad, mode=geometry.padding_mode)


@torch.no_grad()
def conv_power_norm(
    weight: Tensor,
    geometry: ConvGeometry,
    input_shape: Sequence[int] | int,
    n_iterations: int = 200,
    seed: int = 0,
) -> Tensor:
    """Operator norm at one input size by power iteration (a lower bound, converging).

    Runs ``x <- A^T A x`` with ``A`` the convolution (``conv``, padding included) and
    ``A^T`` its adjoint (by autograd through ``A``, which is exactly ``conv_transpose``
    with the matching output size, for every padding mode). Returns ``||A x||`` for the
    final unit ``x``.

    Args:
        weight: the kernel.
        geometry: its geometry.
        input_shape: the input's spatial sizes (optionally preceded by channels, batch).
        n_iterations: power iterations.
        seed: seed of the start vector (a local generator; the global RNG is untouched).
    """
    check_weight(weight, geometry)
    channels = weight.shape[1] * geometry.groups
    size = spatial_shape(input_shape, geometry.dims, channels)
    conv = _conv_fn(geometry)
    W = weight.detach().to(compute_dtype(weight.dtype))

    def A(x: Tensor) -> Tensor:
        return conv(_padded(x, geometry), W, None, geometry.stride, 0, geometry.dilation,
                    geometry.groups)  # fmt: skip

    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(1, channels, *size, generator=gen).to(device=W.device, dtype=W.dtype)
    x = x / x.norm()
    for _ in range(n_iterations):
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            y = A(xr)
            (g,) = torch.autograd.grad(y, xr, y.detach())  # A^T A x
        x = g / g.norm().clamp_min(torch.finfo(g.dtype).tiny)
    return A(x).norm().to(weight.dtype)
