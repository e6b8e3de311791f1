"""One number per gradient-norm curve: log scale, decay rate, first/last ratio, summary."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..linalg import compute_dtype

__all__ = [
    "MAX_FIT_POINTS",
    "below_range",
    "decay_rate",
    "grad_ratio",
    "log10_floor",
    "log10_norms",
    "summarize",
]

#: Most time steps the robust slope fit of :func:`decay_rate` uses (evenly subsampled).
MAX_FIT_POINTS = 128


def log10_floor(dtype: torch.dtype = torch.float32) -> float:
    """The value :func:`log10_norms` gives norms of ``dtype`` that are below float range.

    It is ``log10`` of the smallest positive normal number of the dtype the norms are
    measured in: -37.93 for float32 (and for float16/bfloat16 norms, measured in float32),
    -307.65 for float64. Below it a number is subnormal or zero, and with subnormals flushed
    to zero (flush-to-zero / denormals-are-zero) it is zero, so it is the smallest norm a
    run can report whether or not it flushes.

    >>> round(log10_floor(torch.float32), 2), round(log10_floor(torch.float64), 2)
    (-37.93, -307.65)
    """
    dt = compute_dtype(dtype)
    return float(torch.tensor(torch.finfo(dt).tiny, dtype=dt).log10())


def below_range(norms: Tensor) -> Tensor:
    """Where a norm is below float range: zero, flushed or subnormal (``<= finfo.tiny`` of
    the dtype it is measured in), i.e. where :func:`log10_norms` gives :func:`log10_floor`.

    Such a norm says only that the gradient is smaller than the dtype can hold; the curve
    summaries leave it out. NaN is not below range.

    >>> below_range(torch.tensor([0.0, 1e-40, 1e-3, float("nan")])).tolist()
    [True, True, False, False]
    """
    if not isinstance(norms, Tensor) or not norms.is_floating_point():
        raise TypeError(f"norms must be a floating-point tensor, got {norms!r:.80}")
    x = norms.to(compute_dtype(norms.dtype))
    return x <= torch.finfo(x.dtype).tiny


def log10_norms(norms: Tensor) -> Tensor:
    """``log10`` of norms floored at the smallest positive normal number of their dtype.

    Norms below float range (:func:`below_range`: zero, flushed or underflowed) become
    :func:`log10_floor` (about -38 for float32, -308 for float64) and ``inf`` becomes
    ``log10(finfo.max)``, so the result is finite. A NaN norm (a diverged model) stays NaN
    on purpose.

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


def _measurable(norms: Tensor) -> Tensor:
    """Steps a fit can use: neither below float range nor NaN."""
    return ~below_range(norms) & ~norms.isnan()


def decay_rate(norms: Tensor) -> Tensor:
    """Change of ``log10 ||dL/dh[t]||`` per 100 steps, going backward in time (T-1 to 0).

    Sign convention: the gradient flows backward in time, so the rate is measured that way.
    Negative means vanishing (each 100 steps further back from the end, the norm shrinks by
    ``10**rate``); positive means exploding; 0 is a flat curve. For a linear RNN
    ``h[t] = a h[t-1]`` with the loss at the end, ``||dL/dh[t]|| ∝ a**(T-1-t)`` and the rate
    is ``100 * log10(a)``.

    The fit is over the measurable steps only: a norm below float range
    (:func:`below_range`: zero, flushed or subnormal) says only that the gradient is smaller
    than the dtype can hold, and a slope drawn to the floor would be made up (a gradient
    that vanishes below float range over most of a long sequence would read as flat). It
    is Theil-Sen: the median of the slopes between all pairs of the measurable steps (at
    most :data:`MAX_FIT_POINTS` of them, evenly spaced among them), so a few outliers (a
    spike at the steps that carry a target) do not move it.

    Args:
        norms: ``(T,)`` or ``(rows, T)``, ``T >= 2``.

    Returns:
        ``()`` or ``(rows,)``; NaN for a row with fewer than two measurable steps (all
        below float range, or NaN), where there is no rate to give.

    >>> float(decay_rate(0.5 ** torch.arange(100.0, 0.0, -1)))  # vanishing backward
    -30.10...
    >>> float(decay_rate(torch.tensor([0.0, 0.0, 1.0])))  # one measurable step: no rate
    nan
    """
    _check_curve(norms)
    T = norms.shape[-1]
    y = log10_norms(norms).reshape(-1, T)  # (rows, T)
    ok = _measurable(norms).reshape(-1, T)  # (rows, T)
    rates = y.new_full((y.shape[0],), float("nan"))  # (rows,)
    for k in range(y.shape[0]):
        idx = ok[k].nonzero().flatten()  # (n,) measurable steps
        if len(idx) < 2:
            continue
        if len(idx) > MAX_FIT_POINTS:
            pick = torch.linspace(0, len(idx) - 1, MAX_FIT_POINTS, device=idx.device)
            idx = idx[pick.round().long()]  # (MAX_FIT_POINTS,), distinct: spacing > 1
        t, v = idx.to(y.dtype), y[k, idx]  # (n,), (n,)
        i, j = torch.triu_indices(len(idx), len(idx), 1, device=y.device)
        slopes = (v[j] - v[i]) / (t[j] - t[i])  # (pairs,): per step, forward in t
        rates[k] = 0.0 - 100.0 * slopes.quantile(0.5)  # 0 - x: a flat curve gives 0, not -0
    return rates.reshape(norms.shape[:-1])


def grad_ratio(norms: Tensor) -> Tensor:
    """``||dL/dh[0]|| / ||dL/dh[T-1]||``, finite where defined: norms floored as
    :func:`log10_norms`.

    Below 1: the first step gets less gradient than the last (vanishing). When
    ``||dL/dh[0]||`` is below float range the ratio is taken from the floor, so it is an
    upper bound (the true ratio is at most this); when ``||dL/dh[T-1]||`` is below float
    range (or NaN) there is nothing to divide by and the ratio is NaN.

    Args:
        norms: ``(T,)`` or ``(rows, T)``.

    Returns:
        ``()`` or ``(rows,)``, float64, in ``[finfo(float64).tiny, finfo(float64).max]`` or
        NaN.

    >>> float(grad_ratio(torch.tensor([1e-3, 1.0, 10.0])))
    0.0001...
    >>> float(grad_ratio(torch.tensor([1.0, 0.0])))  # the last step is below float range
    nan
    """
    _check_curve(norms)
    y = log10_norms(norms).double()
    r = torch.pow(10.0, y[..., 0] - y[..., -1])
    fi = torch.finfo(torch.float64)
    r = r.clamp(min=fi.tiny, max=fi.max)
    return r.masked_fill(~_measurable(norms[..., -1]), float("nan"))


def summarize(norms: Tensor) -> dict[str, float | None]:
    """The curve in a few numbers: ``decay_rate``, ``grad_ratio``, ``fit_steps`` and
    ``below_range_steps``.

    ``fit_steps`` counts the time steps :func:`decay_rate` is fitted over (the measurable
    ones), ``below_range_steps`` those below float range (:func:`below_range`: zero,
    flushed or subnormal norms). ``decay_rate`` and ``grad_ratio`` are ``None`` where they
    are not defined (NaN from :func:`decay_rate` / :func:`grad_ratio`: fewer than two
    measurable steps, or the last step below float range); no value is NaN or infinite.

    The headline keys describe the last row (the top stacked layer of the last seqnorm
    layer, the one nearest the loss). With several rows, ``<key>/l{k}`` is added for every
    key and row ``k``.

    Args:
        norms: ``(T,)`` or ``(rows, T)`` from :func:`hidden_grad_norms`.

    >>> s = summarize(torch.ones(2, 10))
    >>> s["decay_rate"], s["grad_ratio"], s["fit_steps"], s["below_range_steps"]
    (0.0, 1.0, 10, 0)
    >>> sorted(s)[:3]
    ['below_range_steps', 'below_range_steps/l0', 'below_range_steps/l1']
    >>> s = summarize(torch.tensor([0.0, 0.0, 1e-3]))  # one measurable step: no rate
    >>> s["decay_rate"], s["fit_steps"], s["below_range_steps"]
    (None, 1, 2)
    """
    _check_curve(norms)
    rows = norms.reshape(-1, norms.shape[-1])  # (rows, T)

    def defined(values: Tensor) -> list[float | None]:
        return [None if math.isnan(v) else v for v in values.tolist()]

    columns = {
        "decay_rate": defined(decay_rate(rows)),
        "grad_ratio": defined(grad_ratio(rows)),
        "fit_steps": _measurable(rows).sum(-1).tolist(),
        "below_range_steps": below_range(rows).sum(-1).tolist(),
    }
    out: dict[str, float | None] = {key: values[-1] for key, values in columns.items()}
    if len(rows) > 1:
        for k in range(len(rows)):
            out.update({f"{key}/l{k}": values[k] for key, values in columns.items()})
    return out
