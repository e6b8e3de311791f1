"""Matplotlib figures of the probes, shared by the callbacks and the experiment scripts.

Gradient norms below float range (zero, flushed to zero or subnormal:
:func:`seqnorm.probes.below_range`) have no place on a log scale; heatmaps draw them in
:data:`BELOW_RANGE_COLOR` (outside the colour scale, which spans the measurable norms) and
curves mark them at :func:`seqnorm.probes.log10_floor`, never as NaN or -inf.

Figures are built with the object-oriented API on an Agg canvas (``Figure`` +
``FigureCanvasAgg``), never through ``pyplot``: nothing here changes the global backend or
leaves figures open in pyplot's registry, so the functions are safe in a training process,
a headless server or a notebook. Every function returns a :class:`~matplotlib.figure.Figure`;
:func:`save` writes it, :func:`to_rgb_array` renders it for an image logger.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from .probes import below_range, log10_floor, log10_norms

__all__ = [
    "BELOW_RANGE_COLOR",
    "eigenvalue_figure",
    "grad_norm_curve",
    "grad_norm_heatmap",
    "heatmap_limits",
    "save",
    "spectrum_figure",
    "to_rgb_array",
]

#: Most training-step rows a heatmap draws (evenly subsampled beyond that).
MAX_HEATMAP_ROWS = 400

#: The heatmap colour of norms below float range (zero, flushed or subnormal): a grey that
#: viridis, the colour scale of the measurable norms, never takes.
BELOW_RANGE_COLOR = "lightgrey"

ArrayLike = Tensor | np.ndarray


def _below_range_label(norms: Tensor) -> str:
    """``below float32 range (< 1.2e-38)``: what a floored norm means, for a legend."""
    dt = torch.float64 if norms.dtype == torch.float64 else torch.float32  # measured in
    return f"below {str(dt).removeprefix('torch.')} range (< {torch.finfo(dt).tiny:.2g})"


def _figure(
    nrows: int, ncols: int, width: float, height: float, colorbar: bool = False
) -> tuple[Figure, np.ndarray]:
    # Fixed margins (in inches, so they hold at any size) instead of a layout engine, which
    # doubles the drawing time; drawing is what a monitor callback pays for.
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)  # attach an Agg canvas: draws and saves without pyplot
    right = (1.1 if colorbar else 0.3) / width
    fig.subplots_adjust(left=0.8 / width, right=1 - right, bottom=0.55 / height,
                        top=1 - 0.35 / height, hspace=0.75 * nrows / height,
                        wspace=0.7 * ncols / width)  # fmt: skip
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _edges(centers: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centers: half-way between neighbours, the outer edges on the
    first and last center (so the axis spans exactly the recorded steps); +-0.5 for one."""
    c = centers.astype(float)
    if len(c) == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    return np.concatenate([[c[0]], (c[1:] + c[:-1]) / 2, [c[-1]]])


def _integer_ticks(*axes: Axis) -> None:
    """Ticks at whole numbers only (training and time steps are counts)."""
    for axis in axes:
        axis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def _as_rows(norms: ArrayLike, what: str) -> Tensor:
    t = torch.as_tensor(np.asarray(norms) if not isinstance(norms, Tensor) else norms)
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2 or t.shape[-1] < 1 or not t.is_floating_point():
        raise ValueError(f"{what} must be float (T,) or (rows, T), got shape {tuple(t.shape)}")
    return t.detach().cpu()


def _labels(labels: Sequence[str] | None, n: int) -> list[str]:
    if labels is None:
        return [f"l{k}" for k in range(n)]
    if len(labels) != n:
        raise ValueError(f"labels must have one name per row ({n}), got {len(labels)}")
    return list(labels)


def _history_grid(
    history: Sequence[tuple[int, ArrayLike]],
) -> tuple[np.ndarray, Tensor, np.ndarray, np.ndarray]:
    """``(steps, norms, log10 norms, below range)`` of a heatmap history, checked and
    thinned; the last three ``(steps, rows, T)``."""
    if not history:
        raise ValueError("history must hold at least one (step, norms) pair, got none")
    latest = {int(s): n for s, n in history}  # a step seen twice (a resumed run): the last
    steps = np.array(sorted(latest))
    curves = [_as_rows(latest[s], "norms in history") for s in steps]
    shapes = sorted({tuple(c.shape) for c in curves})
    if len(shapes) != 1:
        raise ValueError(f"all norms in history must have the same shape, got {shapes}")
    if len(steps) > MAX_HEATMAP_ROWS:
        keep = np.unique(np.linspace(0, len(steps) - 1, MAX_HEATMAP_ROWS).round().astype(int))
        steps, curves = steps[keep], [curves[i] for i in keep]
    norms = torch.stack(curves)  # (steps, rows, T)
    return steps, norms, log10_norms(norms).numpy(), below_range(norms).numpy()


def heatmap_limits(*histories: Sequence[tuple[int, ArrayLike]]) -> tuple[float, float] | None:
    """One colour scale for several heatmaps: the range of ``log10 ||dL/dh[t]||`` over the
    measurable norms of all (finite, not below float range: those are drawn apart).

    Pass the result as ``vmin, vmax`` to every :func:`grad_norm_heatmap` drawn side by side,
    so that one colour means one gradient norm in all of them.

    Args:
        histories: the histories of the heatmaps (as :func:`grad_norm_heatmap` takes them).

    Returns:
        ``(vmin, vmax)``, or ``None`` when no norm is measurable.

    >>> a, b = [(0, torch.full((5,), 10.0))], [(0, torch.full((5,), 1e-3))]
    >>> heatmap_limits(a, b)
    (-3.0, 1.0)
    """
    if not histories:
        raise ValueError("heatmap_limits needs at least one history, got none")
    grids = [_history_grid(h) for h in histories]
    finite = np.concatenate([z[np.isfinite(z) & ~below] for _, _, z, below in grids])
    return (float(finite.min()), float(finite.max())) if finite.size else None


def grad_norm_heatmap(
    history: Sequence[tuple[int, ArrayLike]],
    labels: Sequence[str] | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Figure:
    """Heatmap of ``log10 ||dL/dh[t]||``: time step ``t`` across, training step up.

    The training-step axis spans exactly the recorded steps (whole numbers only), so a run
    probed twice draws two bands between its two steps. Norms below float range (zero,
    flushed or subnormal: :func:`seqnorm.probes.below_range`) are drawn in
    :data:`BELOW_RANGE_COLOR`, the colour bar's lower extension, which its label names;
    measurable norms below ``vmin`` take the scale's lowest colour.

    Args:
        history: ``(training step, norms)`` pairs, norms ``(T,)`` or ``(rows, T)`` as
            :func:`seqnorm.probes.hidden_grad_norms` returns them, all the same shape; rows
            are drawn in step order (the last pair wins for a repeated step).
        labels: a name per row (default ``l0, l1, ...``); one panel per row.
        vmin: the ``log10`` norm at the bottom of the colour scale (default: this
            history's smallest measurable value); give heatmaps shown together the same
            ``vmin`` and ``vmax`` (:func:`heatmap_limits`).
        vmax: the ``log10`` norm at the top of the colour scale (default: the largest).

    >>> fig = grad_norm_heatmap([(0, torch.ones(20)), (100, torch.rand(20))])
    >>> len(fig.axes)  # one panel and its colour bar
    2
    >>> [float(y) for y in fig.axes[0].get_ylim()]  # the recorded steps, no margin
    [0.0, 100.0]
    """
    steps, norms, z, below = _history_grid(history)  # z, below: (steps, rows, T)
    rows, T = z.shape[1:]
    names = _labels(labels, rows)
    own = heatmap_limits(history)
    if own is None:  # nothing measurable: every cell is below range (or NaN)
        own = (log10_floor(norms.dtype), log10_floor(norms.dtype) + 1.0)
    vmin = own[0] if vmin is None else float(vmin)
    vmax = own[1] if vmax is None else float(vmax)
    if not vmin < vmax:
        if vmin > vmax:
            raise ValueError(f"vmin must be below vmax, got vmin={vmin}, vmax={vmax}")
        vmin, vmax = vmin - 0.5, vmax + 0.5  # one value everywhere: centre it on the scale
    # Below range: under the scale (its own colour); measurable: on it, clipped at the bottom.
    z = np.where(below, vmin - 1.0, np.maximum(z, vmin))  # NaN stays NaN (not drawn)
    cmap = colormaps["viridis"].with_extremes(under=BELOW_RANGE_COLOR)
    fig, axes = _figure(rows, 1, 7.0, 1.0 + 2.4 * rows, colorbar=True)
    t_edges, step_edges = _edges(np.arange(T)), _edges(steps)
    for k, ax in enumerate(axes[:, 0]):
        mesh = ax.pcolormesh(t_edges, step_edges, z[:, k], shading="flat", cmap=cmap,
                             vmin=vmin, vmax=vmax, rasterized=True)  # fmt: skip
        ax.set_ylabel("training step")
        ax.set_title(f"{names[k]}: log10 ||dL/dh[t]||", fontsize="medium")
        _integer_ticks(ax.xaxis, ax.yaxis)
        if k == rows - 1:
            ax.set_xlabel("time step t")
    label = "log10 ||dL/dh[t]||"
    if below.any():
        label += f"\ngrey (bottom): {_below_range_label(norms)}"
    fig.colorbar(mesh, ax=axes[:, 0].tolist(), label=label, fraction=0.04,
                 extend="min" if below.any() else "neither")  # fmt: skip
    return fig


def grad_norm_curve(
    norms: ArrayLike,
    step: int | None = None,
    labels: Sequence[str] | None = None,
) -> Figure:
    """``log10 ||dL/dh[t]||`` against time step ``t``, one line per row (layer).

    Steps whose norm is below float range (zero, flushed or subnormal:
    :func:`seqnorm.probes.below_range`) are not joined to the line: they are marked, in
    the row's colour, at :func:`seqnorm.probes.log10_floor`, with a legend entry that says
    so.

    Args:
        norms: ``(T,)`` or ``(rows, T)``.
        step: training step, shown in the title.
        labels: a name per row (default ``l0, l1, ...``).

    >>> grad_norm_curve(torch.rand(2, 30), step=5).axes[0].get_title()
    'gradient norm per time step (training step 5)'
    """
    rows = _as_rows(norms, "norms")
    z = log10_norms(rows).numpy()  # (rows, T)
    below = below_range(rows).numpy()  # (rows, T)
    names = _labels(labels, z.shape[0])
    fig, axes = _figure(1, 1, 6.0, 3.5)
    ax = axes[0, 0]
    t = np.arange(z.shape[1])
    note = _below_range_label(rows)
    for k in range(z.shape[0]):
        (line,) = ax.plot(t, np.where(below[k], np.nan, z[k]), label=names[k], lw=1.5)
        if below[k].any():  # at the floor, not joined to the measured part
            ax.plot(t[below[k]], z[k][below[k]], ls="none", marker="v", ms=3,
                    color=line.get_color(), label=f"{names[k]}: {note}")  # fmt: skip
    ax.set_xlabel("time step t")
    _integer_ticks(ax.xaxis)
    ax.set_ylabel("log10 ||dL/dh[t]||")
    title = "gradient norm per time step"
    ax.set_title(title if step is None else f"{title} (training step {step})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def spectrum_figure(
    history: Sequence[tuple[int, ArrayLike]],
    gate_names: Sequence[str] | None = None,
) -> Figure:
    """Singular-value spectrum of every gate block, one line per recorded training step.

    One panel per (stacked layer, gate); in each, ``sigma_i`` against its index ``i``
    (descending), coloured from early (dark) to late (yellow) training steps.

    Args:
        history: ``(training step, singular values (num_layers, gates, H))`` pairs, as
            ``weight_spectrum(layer)["singular_values"]``.
        gate_names: a name per gate (default ``g0, g1, ...``).

    >>> fig = spectrum_figure([(0, torch.rand(1, 3, 8)), (10, torch.rand(1, 3, 8))])
    >>> len(fig.axes)  # three gate panels and the colour bar
    4
    """
    if not history:
        raise ValueError("history must hold at least one (step, singular values), got none")
    steps = [int(s) for s, _ in history]
    svs = [torch.as_tensor(np.asarray(s) if not isinstance(s, Tensor) else s) for _, s in history]
    shapes = {tuple(s.shape) for s in svs}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(
            f"singular values must all have one shape (num_layers, gates, H), got {sorted(shapes)}"
        )
    L, G, H = next(iter(shapes))
    gates = list(gate_names) if gate_names is not None else [f"g{g}" for g in range(G)]
    if len(gates) != G:
        raise ValueError(f"gate_names must have {G} names, got {len(gates)}")
    fig, axes = _figure(L, G, 2.8 * G + 1.2, 2.6 * L + 0.4, colorbar=True)
    lo, hi = min(steps), max(steps)
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    norm = Normalize(lo, hi) if hi > lo else Normalize(lo - 0.5, lo + 0.5)
    cmap = colormaps["viridis"]
    idx = np.arange(1, H + 1)
    for step, s in zip(steps, svs, strict=True):
        s = s.detach().cpu().double().numpy()
        for k in range(L):
            for g in range(G):
                axes[k, g].plot(idx, s[k, g], color=cmap(norm(step)), lw=1.0)
    for k in range(L):
        for g in range(G):
            ax = axes[k, g]
            ax.set_title(f"l{k}/{gates[g]}", fontsize="medium")
            ax.axhline(1.0, color="grey", lw=0.8, ls="--")
            ax.grid(alpha=0.3)
            _integer_ticks(ax.xaxis)
            if k == L - 1:
                ax.set_xlabel("index i")
            if g == 0:
                ax.set_ylabel("sigma_i")
    bar = fig.colorbar(
        ScalarMappable(norm, cmap), ax=axes.ravel().tolist(), label="training step", fraction=0.03
    )
    if hi > lo:
        _integer_ticks(bar.ax.yaxis)
    else:  # one recorded step: one tick, at it
        bar.set_ticks([lo])
    return fig


def eigenvalue_figure(
    history: Sequence[tuple[int, ArrayLike, ArrayLike]],
    unit_names: Sequence[str] | None = None,
) -> Figure:
    """Eigenvalues ``lambda`` of diagonal recurrences (the LRU's), at every recorded step.

    Two panels per unit: ``lambda`` in the complex plane beside the unit circle, and
    ``|lambda|`` against the phase ``arg lambda`` (the moduli close to 1 spread out), each
    point coloured from early (dark) to late (yellow) training steps.

    Args:
        history: ``(training step, moduli (units, P), phases (units, P))`` triples, as
            ``weight_spectrum(layer)["singular_values"][:, 0]`` and ``["phases"][:, 0]``.
        unit_names: a name per unit (default ``l0, l1, ...``).

    >>> fig = eigenvalue_figure([(0, torch.rand(2, 8), torch.rand(2, 8)),
    ...                          (5, torch.rand(2, 8), torch.rand(2, 8))])
    >>> len(fig.axes)  # two panels per unit and the colour bar
    5
    """
    if not history:
        raise ValueError("history must hold at least one (step, moduli, phases), got none")
    steps = [int(s) for s, _, _ in history]
    mods = [torch.as_tensor(np.asarray(m)).double() for _, m, _ in history]
    phases = [torch.as_tensor(np.asarray(p)).double() for _, _, p in history]
    shapes = {tuple(t.shape) for t in (*mods, *phases)}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(
            f"moduli and phases must all have one shape (units, P), got {sorted(shapes)}"
        )
    U = next(iter(shapes))[0]
    names = list(unit_names) if unit_names is not None else [f"l{k}" for k in range(U)]
    if len(names) != U:
        raise ValueError(f"unit_names must have {U} names, got {len(names)}")
    fig, axes = _figure(U, 2, 9.0, 3.4 * U + 0.4, colorbar=True)
    fig.subplots_adjust(wspace=0.45)  # room for the right panel's axis label
    lo, hi = min(steps), max(steps)
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    norm = Normalize(lo, hi) if hi > lo else Normalize(lo - 0.5, lo + 0.5)
    cmap = colormaps["viridis"]
    circle = np.linspace(0, 2 * np.pi, 361)
    for k in range(U):
        plane, polar = axes[k, 0], axes[k, 1]
        plane.plot(np.cos(circle), np.sin(circle), color="grey", lw=0.8, ls="--")
        polar.axhline(1.0, color="grey", lw=0.8, ls="--")
        for step, m, p in zip(steps, mods, phases, strict=True):
            m_k, p_k = m[k].numpy(), p[k].numpy()
            color = [cmap(norm(step))]
            plane.scatter(m_k * np.cos(p_k), m_k * np.sin(p_k), s=6, c=color, lw=0)
            polar.scatter(p_k, m_k, s=6, c=color, lw=0)
        plane.set_aspect("equal")
        plane.set_title(f"{names[k]}: lambda", fontsize="medium")
        plane.set_xlabel("Re")
        plane.set_ylabel("Im")
        polar.set_title(f"{names[k]}: |lambda| by phase", fontsize="medium")
        polar.set_xlim(0, 2 * np.pi)
        polar.set_xlabel("arg lambda (rad)")
        polar.set_ylabel("|lambda|")
        for ax in (plane, polar):
            ax.grid(alpha=0.3)
    bar = fig.colorbar(
        ScalarMappable(norm, cmap), ax=axes.ravel().tolist(), label="training step", fraction=0.03
    )
    if hi > lo:
        _integer_ticks(bar.ax.yaxis)
    else:
        bar.set_ticks([lo])
    return fig


def save(fig: Figure, path: str | PathLike[str], dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix; parent folders are created).

    Args:
        fig: the figure.
        path: destination, e.g. ``runs/x/gradient_flow/heatmap.png``.
        dpi: resolution of raster formats.

    Returns:
        The path written.
    """
    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def to_rgb_array(fig: Figure, dpi: int = 100) -> np.ndarray:
    """Render ``fig`` to an ``(height, width, 3)`` ``uint8`` array (for image loggers).

    Args:
        fig: the figure.
        dpi: resolution.
    """
    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
