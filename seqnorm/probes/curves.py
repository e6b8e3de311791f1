"""One number per gradient-norm curve: log scale, decay rate, first/last ratio, summary."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..linalg import compute_dtype

__all__ = ["MAX_FIT_POINTS", "decay_rate", "grad_ratio", "log10_norms", "summarize"]

#: Most time steps the robust slope fit of :func:`decay_rate` uses (evenly subsampled).
MAX_FIT_POINTS = 128


def log10_norms(norms: Tensor) -> Tensor:
    """``log10`` of norms floored at the smallest positive normal number of their dtype.

    Zero and underflowed norms become ``log10(finfo.tiny)`` (about -38 for float32, -308 for
    float64) and ``inf`` becomes ``log10(finfo.max)``, so the result is finite. A NaN norm
    (a diverged model) stays NaN on purpose.

    >>> log10_norms(torch.tensor([100.0, 0.0])).round()
    tensor([  2., -38.])
    """
    if not isinstance(norms, Tensor) or not norms.is_floating_point():
        raise TypeError(f"norms must be a floating-point tensor, got {norms!r:.80}")
    x = norms.to(compute_dtype(norms.dtype))
    fi = torch.finfo(x.dtype)
    return x.clamp(min=fi.tiny, max=fi.max).log10()


def _check_curve(norms: Tensor) -> None:
    if not isinstance(norms, Tensor) or norms.dim() not in (1, 2):
        shape = tuple(norms.shape) if isinstance(norms, Tensor) else type(norms).__name__
        raise ValueError(f"norms must be a tensor (T,) or (rows, T), got {shape}")
    if norms.shape[-1] < 2:
        raise ValueError(f"norms must have at least 2 time steps, got shape {tuple(norms.shape)}")


def decay_rate(norms: Tensor) -> Tensor:
    """Change of ``log10 ||dL/dh[t]||`` per 100 steps, going backward in time (T-1 to 0).

    Sign convention: the gradient flows backward in time, so the rate is measured that way.
    Negative means vanishing (each 100 steps further back from the end, the norm shrinks by
    ``10**rate``); positive means exploding; 0 is a flat curve. For a linear RNN
    ``h[t] = a h[t-1]`` with the loss at the end, ``||dL/dh[t]|| ∝ a**(T-1-t)`` and the rate
    is ``100 * log10(a)``.

    The fit is Theil-Sen: the median of the slopes between all pairs of (at most
    :data:`MAX_FIT_POINTS`, evenly spaced) time steps of :func:`log10_norms`, so a few
    outliers (a spike at the steps that carry a target) do not move it. Points at the floor
    of :func:`log10_norms` (zero or underflowed norms) carry no slope information and are
    left out while at least two measurable points remain; otherwise (an all-zero curve)
    every point counts, so the result is always finite. Without this, a gradient that
    vanishes below the dtype's range over most of a long sequence would read as flat.

    Args:
        norms: ``(T,)`` or ``(rows, T)``, ``T >= 2``.

    Returns:
        ``()`` or ``(rows,)``.

    >>> float(decay_rate(0.5 ** torch.arange(100.0, 0.0, -1)))  # vanishing backward
    -30.10...
    """
    _check_curve(norms)
    y = log10_norms(norms)  # (..., T)
    floor = math.log10(torch.finfo(y.dtype).tiny)
    T = y.shape[-1]
    idx = torch.linspace(0, T - 1, min(T, MAX_FIT_POINTS), device=y.device).round().long()
    idx = idx.unique()  # (n,)
    t = idx.to(y.dtype)
    y = y[..., idx]  # (..., n)
    i, j = torch.triu_indices(len(idx), len(idx), 1, device=y.device)
    slopes = (y[..., j] - y[..., i]) / (t[j] - t[i])  # (..., pairs): per step, forward in t
    valid = y > floor + 1e-6  # (..., n): measurable points
    usable = valid[..., i] & valid[..., j]  # (..., pairs)
    fit = slopes.masked_fill(~usable, float("nan")).nanquantile(0.5, dim=-1)  # (...)
    fit = torch.where(valid.sum(-1) >= 2, fit, slopes.quantile(0.5, dim=-1))
    return 0.0 - 100.0 * fit  # 0 - x: a flat curve gives 0, not -0


def grad_ratio(norms: Tensor) -> Tensor:
    """``||dL/dh[0]|| / ||dL/dh[T-1]||``, finite: norms floored as :func:`log10_norms`.

    Below 1: the first step gets less gradient than the last (vanishing).

    Args:
        norms: ``(T,)`` or ``(rows, T)``.

    Returns:
        ``()`` or ``(rows,)``, float64, in ``[finfo(float64).tiny, finfo(float64).max]``.

    >>> float(grad_ratio(torch.tensor([1e-3, 1.0, 10.0])))
    0.0001...
    """
    _check_curve(norms)
    y = log10_norms(norms).double()
    r = torch.pow(10.0, y[..., 0] - y[..., -1])
    fi = torch.finfo(torch.float64)
    return r.clamp(min=fi.tiny, max=fi.max)


def summarize(norms: Tensor) -> dict[str, float]:
    """The curve in two numbers: ``decay_rate`` and ``grad_ratio``.

    The headline keys describe the last row (the top stacked layer of the last seqnorm
    layer, the one nearest the loss). With several rows, ``decay_rate/l{k}`` and
    ``grad_ratio/l{k}`` are added for every row ``k``.

    Args:
        norms: ``(T,)`` or ``(rows, T)`` from :func:`hidden_grad_norms`.

    >>> s = summarize(torch.ones(2, 10))
    >>> s["decay_rate"], s["grad_ratio"], sorted(s)[:3]
    (0.0, 1.0, ['decay_rate', 'decay_rate/l0', 'decay_rate/l1'])
    """
    _check_curve(norms)
    rows = norms.reshape(-1, norms.shape[-1])  # (rows, T)
    rates, ratios = decay_rate(rows).tolist(), grad_ratio(rows).tolist()
    out = {"decay_rate": rates[-1], "grad_ratio": ratios[-1]}
    if len(rates) > 1:
        for k, (rate, ratio) in enumerate(zip(rates, ratios, strict=True)):
            out[f"decay_rate/l{k}"], out[f"grad_ratio/l{k}"] = rate, ratio
    return out
