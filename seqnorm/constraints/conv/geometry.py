"""A convolution reduced to what its operator norm depends on: geometry and a stride-1 kernel.

:class:`ConvGeometry` holds everything but the weight that fixes a ``Conv1d/2d/3d``'s linear
map. :func:`stride_one_kernel` rewrites the kernel so that the convolution's norm is that of
a stride-1 convolution, whose Fourier symbol :mod:`seqnorm.constraints.conv.operator_norm` bounds:

* a stride is exact through the polyphase identity: a stride-``s`` convolution is a stride-1
  convolution of the ``s**d`` interleaved sub-grids of the input (``c_in * s**d`` channels)
  with a kernel ``ceil(extent / s)`` taps wide;
* dilation inserts zeros in the kernel (size-free at stride 1 it changes nothing: the
  symbol's values are the same, at other frequencies);
* groups give a block-diagonal operator: one kernel per group, the norm is the largest;
* zero padding makes the map a piece of a larger circular convolution (the padded input on
  a grid where no padding wraps into it), so that circular convolution's norm bounds it;
  circular padding is the circular convolution on the input's own grid.

What is guaranteed, by padding mode:

======================  =====================================================================
``zeros``               the bound holds (any stride, dilation, groups, ``"same"``/``"valid"``)
``circular``            the bound holds when ``left + right padding <= dilation * (k - 1)``
                        in every dimension (otherwise rows repeat and the norm can grow: a
                        ``ValueError``). With ``stride > 1`` and no ``input_shape`` (or a
                        size the stride does not divide) the stride-1 symbol is used: still
                        a bound, but loose (the constraints refuse it; the Lipschitz probe
                        uses it).
``reflect/replicate``   the padding itself stretches the input (a boundary value is copied),
                        so the symbol alone bounds nothing: ``ValueError``.
======================  =====================================================================
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

__all__ = [
    "BOUNDED_PADDING",
    "CONV_TYPES",
    "ConvGeometry",
    "check_weight",
    "fold",
    "spatial_dims",
    "spatial_shape",
    "stride_one_kernel",
]

#: The convolutions whose operator norm is computed here.
CONV_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

#: Padding modes with a certified bound (see the module docs).
BOUNDED_PADDING = ("zeros", "circular")


@dataclass(frozen=True)
class ConvGeometry:
    """Everything but the weight that fixes a convolution's linear map.

    Attributes:
        dims: spatial dimensions ``d`` (1, 2 or 3).
        stride: per dimension.
        padding: ``(left, right)`` per dimension (``"same"`` can be asymmetric).
        dilation: per dimension.
        groups: channel groups.
        padding_mode: ``"zeros"``, ``"circular"``, ``"reflect"`` or ``"replicate"``.
    """

    dims: int
    stride: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    groups: int
    padding_mode: str

    @classmethod
    def of(cls, conv: nn.Module) -> ConvGeometry:
        """The geometry of a ``Conv1d``, ``Conv2d`` or ``Conv3d``.

        Raises:
            TypeError: if ``conv`` is not one of those (transposed and lazy ones included).
        """
        if not isinstance(conv, CONV_TYPES) or isinstance(conv, nn.modules.lazy.LazyModuleMixin):
            raise TypeError(
                f"conv must be a torch.nn.Conv1d, Conv2d or Conv3d (initialised), "
                f"got {type(conv).__name__}"
            )
        d = len(conv.kernel_size)
        if conv.padding == "valid":
            padding = ((0, 0),) * d
        elif conv.padding == "same":
            total = [dl * (k - 1) for dl, k in zip(conv.dilation, conv.kernel_size, strict=True)]
            padding = tuple((t // 2, t - t // 2) for t in total)  # torch pads the extra right
        else:
            padding = tuple((int(p), int(p)) for p in conv.padding)
        return cls(
            dims=d,
            stride=tuple(int(s) for s in conv.stride),
            padding=padding,
            dilation=tuple(int(dl) for dl in conv.dilation),
            groups=int(conv.groups),
            padding_mode=str(conv.padding_mode),
        )

    def output_size(self, size: Sequence[int], kernel: Sequence[int]) -> tuple[int, ...]:
        """Spatial output size for spatial input ``size`` and kernel extent ``kernel``."""
        return tuple(
            (n + pl + pr - dl * (k - 1) - 1) // s + 1
            for n, (pl, pr), dl, k, s in zip(
                size, self.padding, self.dilation, kernel, self.stride, strict=True
            )
        )


def spatial_dims(module: nn.Module) -> int:
    """Spatial dimensions a ``...1d/2d/3d`` layer (convolution, pool) works on; 1 for any other.

    >>> spatial_dims(nn.Conv2d(1, 1, 3)), spatial_dims(nn.Linear(2, 2))
    (2, 1)
    """
    name = type(module).__name__
    return int(name[-2]) if name[-2:] in ("1d", "2d", "3d") else 1


def spatial_shape(input_shape: Sequence[int] | int, dims: int, channels: int) -> tuple[int, ...]:
    """The spatial part of ``input_shape``: ``(N_1..N_d)``, ``(C, N..)`` or ``(B, C, N..)``.

    An int means the same size in every spatial dimension.

    Raises:
        ValueError: if the shape has another length, a non-positive size, or a channel
            count other than ``channels``.
    """
    if isinstance(input_shape, int) and not isinstance(input_shape, bool):
        input_shape = (input_shape,) * dims
    shape = tuple(input_shape)
    ok = all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)
    if not ok or len(shape) not in (dims, dims + 1, dims + 2):
        raise ValueError(
            f"input_shape must be {dims} spatial sizes, optionally preceded by channels and "
            f"batch (positive ints), got {input_shape!r}"
        )
    if len(shape) > dims and shape[-dims - 1] != channels:
        raise ValueError(
            f"input_shape has {shape[-dims - 1]} channels, the convolution takes {channels}"
        )
    return shape[-dims:]


def check_weight(weight: Tensor, geometry: ConvGeometry) -> None:
    """Raise ``ValueError`` unless ``weight`` is a kernel of a convolution of ``geometry``."""
    if not isinstance(weight, Tensor) or weight.dim() != geometry.dims + 2:
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(
            f"weight must be (c_out, c_in / groups, k_1..k_{geometry.dims}), got {shape}"
        )
    if weight.shape[0] % geometry.groups:
        raise ValueError(
            f"groups={geometry.groups} must divide the {weight.shape[0]} output channels"
        )


def _dilated(K: Tensor, dilation: Sequence[int]) -> Tensor:
    """``K`` (..., k_1..k_d) with ``dilation - 1`` zeros between taps in each dimension."""
    d = len(dilation)
    if all(dl == 1 for dl in dilation):
        return K
    lead = K.shape[:-d]
    size = [dl * (k - 1) + 1 for dl, k in zip(dilation, K.shape[-d:], strict=True)]
    out = K.new_zeros(*lead, *size)
    out[(..., *[slice(None, None, dl) for dl in dilation])] = K
    return out


def _polyphase(K: Tensor, stride: Sequence[int]) -> Tensor:
    """Stride-``s`` kernel ``(g, co, ci, k..)`` as a stride-1 one ``(g, co, ci*prod(s), q..)``.

    ``q_j = ceil(k_j / s_j)``; input channel ``(c, r_1..r_d)`` is the sub-grid of channel
    ``c`` at offsets ``r`` (row-major), whose taps are ``K[..., s*q + r]``.
    """
    d = len(stride)
    if all(s == 1 for s in stride):
        return K
    g, co, ci = K.shape[:3]
    q = [-(-k // s) for k, s in zip(K.shape[3:], stride, strict=True)]
    pad = []
    for k, s, qj in reversed(list(zip(K.shape[3:], stride, q, strict=True))):
        pad += [0, s * qj - k]
    K = nn.functional.pad(K, pad)  # (g, co, ci, s*q..)
    shape = [g, co, ci]
    for qj, s in zip(q, stride, strict=True):
        shape += [qj, s]
    K = K.reshape(shape)  # (g, co, ci, q_1, s_1, .., q_d, s_d)
    perm = [0, 1, 2, *[4 + 2 * j for j in range(d)], *[3 + 2 * j for j in range(d)]]
    return K.permute(perm).reshape(g, co, ci * math.prod(stride), *q)


def fold(K: Tensor, grid: Sequence[int]) -> Tensor:
    """Sum the taps of ``K`` (..., q..) congruent modulo ``grid`` (circular wrap-around)."""
    d = len(grid)
    for j, (q, n) in enumerate(zip(K.shape[-d:], grid, strict=True)):
        if q > n:
            dim = K.dim() - d + j
            m = -(-q // n)
            pad = [0, 0] * (d - 1 - j) + [0, m * n - q]
            K = nn.functional.pad(K, pad)
            K = K.unflatten(dim, (m, n)).sum(dim)
    return K


def stride_one_kernel(
    weight: Tensor, geometry: ConvGeometry, size: tuple[int, ...] | None
) -> tuple[Tensor, tuple[int, ...] | None]:
    """The stride-1 kernel ``(g, co, ci', q..)`` whose symbol is bounded, and its grid.

    Args:
        weight: the kernel ``(c_out, c_in / groups, k..)``.
        geometry: the convolution's geometry.
        size: the input's spatial size; ``None`` for the size-free bound.

    Returns:
        The kernel (one per group) and the circular grid of the size-specific bound
        (``None`` size-free: the grid is then the search's business).

    Raises:
        ValueError: a padding mode or size without a bound.
    """
    g = geometry.groups
    K = weight.reshape(g, weight.shape[0] // g, *weight.shape[1:])  # (g, co, ci, k..)
    mode = geometry.padding_mode
    if mode not in BOUNDED_PADDING:
        raise ValueError(
            f"padding_mode={mode!r} has no operator-norm bound here: the padding copies "
            f"boundary values, so it stretches the input itself; use 'zeros' or 'circular'"
        )
    kernel = tuple(weight.shape[2:])
    if mode == "circular":
        for (pl, pr), dl, k in zip(geometry.padding, geometry.dilation, kernel, strict=True):
            if pl + pr > dl * (k - 1):
                raise ValueError(
                    f"circular padding {pl + pr} exceeds dilation*(kernel-1)={dl * (k - 1)}: "
                    f"outputs repeat and the operator norm is not bounded by the symbol"
                )
        strided = any(s > 1 for s in geometry.stride)
        if size is None:
            # Rows of the stride-1 circular convolution: the stride-1 symbol bounds them all.
            return K, None
        if strided and any(n % s for n, s in zip(size, geometry.stride, strict=True)):
            return _dilated(K, geometry.dilation), size
        K = _polyphase(_dilated(K, geometry.dilation), geometry.stride)
        return K, tuple(n // s for n, s in zip(size, geometry.stride, strict=True))
    # zeros
    if size is None:
        if all(s == 1 for s in geometry.stride):
            return K, None  # dilation does not change sup_w ||K(w)||
        return _polyphase(_dilated(K, geometry.dilation), geometry.stride), None
    out = geometry.output_size(size, kernel)
    if any(o < 1 for o in out):
        raise ValueError(f"input_shape {size} is smaller than the kernel's reach: no output")
    grid = []
    for n, (pl, pr), s, o in zip(size, geometry.padding, geometry.stride, out, strict=True):
        need = max(n + max(pl, pr), s * o)  # no padded index wraps into the input
        grid.append(-(-need // s))
    return _polyphase(_dilated(K, geometry.dilation), geometry.stride), tuple(grid)
