"""Operator norm of a convolution: certified upper bounds from the kernel's Fourier symbol.

A convolution ``y = conv(x)`` (any of ``Conv1d/2d/3d``, with stride, dilation, groups and
padding) is a linear map; its *operator norm* is the most it stretches an input,
``max ||conv(x)|| / ||x||``. It is not the largest singular value of the kernel reshaped to
a ``(c_out, c_in * k**d)`` matrix (what ``torch.nn.utils.spectral_norm`` normalises): that
number can be several times smaller or larger. Both are computed here:

* :func:`conv_operator_norm` -- an upper bound on the operator norm, from the *symbol*
  ``K(w) = sum_k K[k] exp(-i k.w)`` (a ``c_out x c_in`` matrix per frequency ``w``):

  - ``input_shape=None``: ``sup_w ||K(w)||_2`` over all frequencies, which bounds the
    operator norm **for every input size**. The supremum is certified, not estimated: a
    coarse grid (FFT) is refined only in the cells that can hold it, and the largest value
    found is multiplied by ``1 / cos(h * sum_j n_j) <= 1 + slack`` (``h``: half-width of the
    finest cells, ``n_j``: half the kernel's extent in dimension ``j``), from the van der
    Corput-Schaake inequality applied one dimension at a time (details in ``_plan``).
  - ``input_shape=(..., N_1, .., N_d)``: ``max_w ||K(w)||_2`` over the frequencies of the
    circular convolution on a grid just large enough to contain the padded input (zero
    padding), or on the input's own grid (circular padding). For circular padding with
    ``stride`` dividing the input size, this *is* the operator norm; for zero padding it is
    an upper bound, tighter than the size-free one.

  Stride, dilation, groups and padding are reduced to a stride-1 kernel first
  (:mod:`seqnorm.constraints.conv.geometry`).

* :func:`reshaped_kernel_norm` -- the largest singular value of the reshaped kernel.

* :func:`~seqnorm.constraints.conv.power.conv_power_norm` (in its own module) -- the
  operator norm at one input size by power iteration through ``conv`` and
  ``conv_transpose``: a lower bound that converges to the true value, for measuring how
  tight the bounds are.

Cost: the largest singular value of a ``c_out x c_in s**d`` complex matrix at every
frequency evaluated, about ``(22 sum_j n_j)**d / 2`` of them (slack 1%) when the spectrum is
flat across frequencies, as it is for random kernels; fewer when it peaks. With
``input_shape`` the count is the padded input's size (``N**d / 2``). A larger ``slack``
buys speed with tightness. An unchanged kernel is not
searched again by the constraints (see :mod:`seqnorm.constraints.conv.caps`).

Guarantees by padding mode: see :mod:`seqnorm.constraints.conv.geometry`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ...linalg import compute_dtype, top_singular_vectors
from ..top_sigma import top_sigma
from .geometry import ConvGeometry, check_weight, fold, spatial_shape, stride_one_kernel

__all__ = [
    "conv_operator_norm",
    "reshaped_kernel_norm",
    "search_plan",
    "symbol_peak",
]


def _top_sigma(A: Tensor) -> Tensor:
    """Largest singular value of each matrix ``(..., co, ci)``, from the smaller Gram."""
    G = A @ A.mH if A.shape[-2] <= A.shape[-1] else A.mH @ A  # (..., r, r)
    return torch.linalg.eigvalsh(G)[..., -1].clamp_min(0).sqrt()


#: Angle ``pi * sum_j n_j / M`` of the coarse grid of the size-free search.
COARSE_ANGLE = 0.5
#: Frequencies evaluated per batch by the refinement (bounds its memory).
CHUNK = 4096


def search_plan(half_widths: Sequence[float], slack: float) -> tuple[int, int, float]:
    """Coarse grid ``M``, refinement ``r`` and final angle ``theta`` of the size-free search.

    The search's maximum times ``1 / cos(theta) <= 1 + slack`` bounds the supremum.
    """
    total = float(sum(half_widths))
    if total == 0:
        return 1, 1, 0.0
    M = math.ceil(math.pi * total / COARSE_ANGLE)
    r = math.ceil(math.pi * total / (M * math.acos(1.0 / (1.0 + slack))))
    return M, r, math.pi * total / (M * r)


def _grid_values(K: Tensor, grid: Sequence[int]) -> tuple[Tensor, Tensor]:
    """``||K(w)||_2`` of every group at every frequency of the grid (FFT; the half
    ``w_d in [0, pi]`` of the last dimension: real kernels have ``K(-w) = conj K(w)``).

    Returns:
        values ``(g, F)`` and the frequencies ``(F, d)``.
    """
    d = len(grid)
    Kd = fold(K, grid)
    S = torch.fft.rfftn(Kd, s=tuple(grid), dim=tuple(range(-d, 0)))  # (g, co, ci, F..)
    A = S.movedim(1, -1).movedim(1, -1)  # (g, F.., co, ci)
    values = _top_sigma(A.reshape(S.shape[0], -1, S.shape[1], S.shape[2]))  # (g, F)
    ticks = [torch.arange(f, dtype=torch.float64) * (2 * math.pi / n)
             for f, n in zip(S.shape[3:], grid, strict=True)]  # fmt: skip
    return values, torch.cartesian_prod(*ticks).reshape(-1, d)


def _symbols(K: Tensor, omega: Tensor) -> Tensor:
    """``K(w)`` of every group at the frequencies ``omega`` ``(P, d)``: ``(g, P, co, ci)``."""
    taps = torch.cartesian_prod(*[torch.arange(q, dtype=torch.float64) for q in K.shape[3:]])
    taps = taps.reshape(-1, omega.shape[1])  # (T, d), row-major like K's taps
    phase = torch.exp(-1j * (omega @ taps.T)).to(K.device)  # (P, T) complex128
    Kt = K.reshape(*K.shape[:3], -1)  # (g, co, ci, T)
    return torch.einsum("gabt,pt->gpab", Kt.to(phase.dtype), phase).to(_complex(K.dtype))


def _complex(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def _peak(K: Tensor, grid: Sequence[int], refine: int, angle: float) -> tuple[int, tuple]:
    """Group and frequency of the largest ``||K(w)||_2`` evaluated (no gradient).

    ``refine == 1``: every point of ``grid``. Otherwise the size-free search: the coarse
    ``grid`` first; the cells (half-width ``pi / M``) whose centre reaches
    ``max * cos(angle)`` may hold the supremum (see :func:`_plan`), and only they are
    evaluated again on a ``refine``-times finer grid.
    """
    values, omega = _grid_values(K, grid)  # (g, F), (F, d)
    best_g, best_f = divmod(int(values.argmax()), values.shape[1])
    if refine == 1:
        return best_g, tuple(float(w) for w in omega[best_f])
    top = values.amax(0).cpu()  # (F,)
    best = float(top[best_f])
    peak = (best_g, tuple(float(w) for w in omega[best_f]))
    centres = omega[top >= best * math.cos(angle) * (1 - 1e-6)]  # (C, d)
    active = [n > 1 for n in grid]
    steps = [
        (torch.arange(refine, dtype=torch.float64) * 2 + 1 - refine) * (math.pi / (n * refine))
        if a else torch.zeros(1, dtype=torch.float64)
        for n, a in zip(grid, active, strict=True)
    ]  # fmt: skip
    offsets = torch.cartesian_prod(*steps).reshape(-1, len(grid))  # (r^d, d)
    children = (centres[:, None, :] + offsets[None]).reshape(-1, len(grid))
    for chunk in children.split(CHUNK):
        vals = _top_sigma(_symbols(K, chunk))  # (g, P)
        g, i = divmod(int(vals.argmax()), vals.shape[1])
        if float(vals[g, i]) > best:
            best, peak = float(vals[g, i]), (g, tuple(float(w) for w in chunk[i]))
    return peak


def _symbol_at(K: Tensor, omega: Sequence[float], group: int) -> Tensor:
    """``K(w)`` ``(co, ci)`` of one group at frequency ``omega``, differentiable in ``K``."""
    d = len(omega)
    dt = compute_dtype(K.dtype)
    Kg = K[group].to(dt)  # (co, ci, q..)
    phase = Kg.new_zeros(Kg.shape[2:])  # (q..)
    for j, w in enumerate(omega):
        k = torch.arange(Kg.shape[2 + j], dtype=torch.float64, device=K.device)
        shape = [1] * d
        shape[j] = -1
        phase = phase + (w * k).to(dt).reshape(shape)
    dims = tuple(range(2, 2 + d))
    re = (Kg * torch.cos(phase)).sum(dims)  # (co, ci)
    im = -(Kg * torch.sin(phase)).sum(dims)
    return torch.complex(re, im)


def _plan(
    weight: Tensor, geometry: ConvGeometry, input_shape: Sequence[int] | int | None, slack: float
) -> tuple[Tensor, tuple[int, ...], int, float, float]:
    """The analysis kernel, its grid, the refinement, the final angle, the certified factor.

    At ``input_shape`` the grid is the circular one (exact, factor 1). Size-free, why the
    factor certifies the supremum ``S``, attained at ``w*``: with ``u, v`` the top singular
    pair there, ``q(w) = Re(u^H K_c(w) v)`` (``K_c``: the symbol centred on the kernel, same
    norms) is a real trigonometric polynomial of degree ``n_j`` (half the kernel's extent)
    in each ``w_j`` with ``|q| <= S``. By the van der Corput-Schaake inequality its angle
    ``arccos(q / S)`` moves at rate at most ``n_j`` along ``w_j``, so at the centre ``c`` of
    the cell holding ``w*`` (half-width ``h`` in each dimension)
    ``||K(c)|| >= q(c) >= S cos(h sum_j n_j)``. The search evaluates the centre of every
    cell that can hold ``w*``, so its maximum ``G`` gives ``S <= G / cos(h_final sum n_j)``.
    """
    check_weight(weight, geometry)
    if not (isinstance(slack, (int, float)) and 0 < slack < 1):
        raise ValueError(f"slack must be in the open interval (0, 1), got {slack!r}")
    channels = weight.shape[1] * geometry.groups
    size = None if input_shape is None else spatial_shape(input_shape, geometry.dims, channels)
    K, grid = stride_one_kernel(weight, geometry, size)
    if grid is not None:
        return K, grid, 1, 0.0, 1.0
    half = [(q - 1) / 2 for q in K.shape[3:]]
    M, r, angle = search_plan(half, slack)
    grid = tuple(M if h > 0 else 1 for h in half)
    coarse = math.pi * sum(half) / M
    return K, grid, r, coarse, 1.0 / math.cos(angle)


@torch.no_grad()
def symbol_peak(
    weight: Tensor,
    geometry: ConvGeometry,
    input_shape: Sequence[int] | int | None = None,
    slack: float = 0.01,
) -> tuple[int, tuple[float, ...]]:
    """Where :func:`conv_operator_norm` is attained: ``(group, frequency per dimension)``.

    The expensive part (the largest singular value at many frequencies); no gradient.
    Pass the result as ``peak=`` to re-evaluate the bound cheaply for the *same* kernel.
    """
    K, grid, refine, coarse, _ = _plan(weight, geometry, input_shape, slack)
    return _peak(K.detach().to(compute_dtype(K.dtype)), grid, refine, coarse)


def conv_operator_norm(
    weight: Tensor,
    geometry: ConvGeometry,
    input_shape: Sequence[int] | int | None = None,
    slack: float = 0.01,
    peak: tuple[int, tuple[float, ...]] | None = None,
) -> Tensor:
    """Certified upper bound on the operator norm of the convolution, differentiable.

    Args:
        weight: the kernel ``(c_out, c_in / groups, k_1..k_d)``.
        geometry: stride, padding, dilation, groups, padding mode (:meth:`ConvGeometry.of`).
        input_shape: ``None`` for a bound valid at every input size, else the input's
            shape (spatial sizes, optionally preceded by channels and batch) for the
            tighter bound at that size.
        slack: size-free bound only: the grid is fine enough that the certified bound
            exceeds ``sup_w ||K(w)||_2`` by at most this factor.
        peak: :func:`symbol_peak` of this very kernel (skips the search); ``None``
            searches. A peak from another kernel gives a value that may be too small.

    Returns:
        A 0-dim tensor in ``weight``'s dtype (float32 or higher internally). Its gradient
        is that of ``u^H K(w*) v`` at the maximising frequency ``w*``.

    Raises:
        ValueError: bad ``weight``/``input_shape``/``slack``, or a padding mode without a
            bound (see the module docs).

    ``y[n] = x[n] + x[n + 1]`` doubles a constant input (``sup_w |1 + e^{-iw}| = 2``); on a
    finite input without padding it stretches a little less:

    >>> w, g = torch.ones(1, 1, 2), ConvGeometry.of(torch.nn.Conv1d(1, 1, 2))
    >>> 2.0 <= float(conv_operator_norm(w, g)) <= 2.0 * 1.01  # every input size
    True
    >>> float(conv_operator_norm(w, g, input_shape=8))  # length 8: exact circulant bound
    2.0
    >>> from seqnorm.constraints.conv.power import conv_power_norm
    >>> round(float(conv_power_norm(w, g, input_shape=8)), 4)  # the true norm, 2 cos(pi/16)
    1.9616
    """
    K, *_, factor = _plan(weight, geometry, input_shape, slack)
    if weight.device.type == "meta":
        return weight.new_ones(())
    group, omega = symbol_peak(weight, geometry, input_shape, slack) if peak is None else peak
    A = _symbol_at(K, omega, group)  # (co, ci) complex
    with torch.no_grad():
        U, _, Vh = torch.linalg.svd(A.detach())
        u, v = U[:, 0], Vh[0].conj()
    sigma = torch.real(u.conj() @ A @ v)  # the top singular value, gradient Re(u v^H)
    return (sigma * factor).to(weight.dtype)


def reshaped_kernel_norm(weight: Tensor) -> Tensor:
    """Largest singular value of ``weight`` reshaped to ``(c_out, c_in / groups * k**d)``.

    This is what ``torch.nn.utils.spectral_norm`` divides a convolution's kernel by. It is
    **not** the convolution's operator norm (for a 3x3 kernel on a large input the operator
    norm can be up to 3 times larger; with stride it can be smaller). Differentiable twice:
    ``u^T W v`` with the exact top singular pair
    (:func:`~seqnorm.constraints.top_sigma.top_sigma`).
    """
    W = weight.reshape(1, weight.shape[0], -1)  # (1, c_out, rest)
    dt = compute_dtype(W.dtype)
    gen = torch.Generator(device="cpu").manual_seed(0)
    u0 = torch.randn(1, W.shape[1], generator=gen).to(device=W.device, dtype=dt)
    v0 = torch.randn(1, W.shape[2], generator=gen).to(device=W.device, dtype=dt)
    u, v = top_singular_vectors(W.detach(), u0, v0)
    return top_sigma(W.to(dt), u, v)[0].to(weight.dtype)  # exact to the second derivative
