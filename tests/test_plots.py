"""Figures: whole-number step axes, short runs drawn within their steps, one colour scale
for heatmaps shown side by side."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.collections import QuadMesh

from seqnorm import plots


def _visible_ticks(axis, lo: float, hi: float) -> list[float]:
    fig = axis.axes.figure
    fig.canvas.draw()
    return [t for t in axis.get_ticklocs() if lo - 1e-9 <= t <= hi + 1e-9]


def _mesh(fig) -> QuadMesh:
    (mesh,) = [c for c in fig.axes[0].collections if isinstance(c, QuadMesh)]
    return mesh


@pytest.mark.parametrize(
    "steps, ylim",
    [([0, 30], (0, 30)), ([0, 1], (0, 1)), ([7], (6.5, 7.5)), ([0, 100, 200, 250], (0, 250))],
)
def test_heatmap_step_axis_spans_the_steps_in_whole_numbers(steps, ylim):
    fig = plots.grad_norm_heatmap([(s, torch.rand(12) + 0.1) for s in steps])
    ax = fig.axes[0]
    assert tuple(float(y) for y in ax.get_ylim()) == ylim  # no -15..45 for two probes
    yticks = _visible_ticks(ax.yaxis, *ylim)
    xticks = _visible_ticks(ax.xaxis, *ax.get_xlim())
    assert yticks and all(float(t).is_integer() for t in yticks), yticks
    assert xticks and all(float(t).is_integer() for t in xticks), xticks
    if len(steps) == 1:
        assert yticks == [7]


def test_heatmaps_share_one_colour_scale():
    quiet = [(0, torch.full((6,), 1e-4)), (10, torch.full((6,), 1e-3))]
    loud = [(0, torch.full((6,), 1.0)), (10, torch.full((6,), 100.0))]
    limits = plots.heatmap_limits(quiet, loud)
    assert limits == pytest.approx((-4.0, 2.0))
    figs = [plots.grad_norm_heatmap(h, vmin=limits[0], vmax=limits[1]) for h in (quiet, loud)]
    clims = [_mesh(f).get_clim() for f in figs]
    assert clims[0] == clims[1] == pytest.approx(limits)
    # each on its own scale by default: the same colour would mean different norms
    own = [_mesh(plots.grad_norm_heatmap(h)).get_clim() for h in (quiet, loud)]
    assert own[0] == pytest.approx((-4.0, -3.0)) and own[1] == pytest.approx((0.0, 2.0))


def test_heatmap_limit_errors():
    with pytest.raises(ValueError, match="vmin must be below vmax, got vmin=2.0, vmax=1.0"):
        plots.grad_norm_heatmap([(0, torch.rand(5))], vmin=2.0, vmax=1.0)
    with pytest.raises(ValueError, match="heatmap_limits needs at least one history"):
        plots.heatmap_limits()
    assert plots.heatmap_limits([(0, torch.full((4,), float("nan")))]) is None  # none finite


@pytest.mark.parametrize("steps", [[0, 1], [0, 3], [5]])
def test_spectrum_colour_bar_counts_steps_in_whole_numbers(steps):
    fig = plots.spectrum_figure([(s, torch.rand(1, 3, 4)) for s in steps])
    bar = fig.axes[-1]
    lo, hi = bar.get_ylim()
    ticks = _visible_ticks(bar.yaxis, lo, hi)
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    if len(steps) == 1:
        assert ticks == [5]


def test_curve_time_axis_whole_numbers():
    fig = plots.grad_norm_curve(np.random.rand(3) + 0.1, step=4)
    ax = fig.axes[0]
    ticks = _visible_ticks(ax.xaxis, *ax.get_xlim())
    assert ticks and all(float(t).is_integer() for t in ticks), ticks


# ------------------------------------------------------------- gradients below float range


def _with_zeros() -> list:
    """Two probes of a curve whose early steps flushed to exactly zero."""
    return [
        (0, torch.tensor([0.0, 0.0, 1e-3, 1e-2, 1e-1])),
        (10, torch.tensor([0.0, 1e-4, 1e-3, 1e-2, 1e-1])),
    ]


def test_heatmap_draws_flushed_steps_in_their_own_colour():
    from matplotlib.colors import to_rgba

    history = _with_zeros()
    # the colour scale spans the measurable norms only, not the floor at -37.9
    assert plots.heatmap_limits(history) == pytest.approx((-4.0, -1.0))
    fig = plots.grad_norm_heatmap(history)
    mesh = _mesh(fig)
    assert mesh.get_clim() == pytest.approx((-4.0, -1.0))
    rgba = mesh.to_rgba(np.asarray(mesh.get_array()).reshape(2, 5))  # (steps, T, 4)
    grey = to_rgba(plots.BELOW_RANGE_COLOR)
    zero = np.array([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=bool)
    assert (rgba[zero] == grey).all()
    assert not (rgba[~zero] == grey).all(axis=-1).any()  # no measurable norm looks flushed
    assert tuple(mesh.cmap.get_under()) == grey
    bar = fig.axes[-1]
    assert "below float32 range" in bar.get_ylabel()  # the colour bar says what grey means
    img = plots.to_rgb_array(fig)
    assert (img == np.round(np.array(grey[:3]) * 255)).all(-1).sum() > 1000  # drawn


def test_heatmap_of_only_flushed_norms_draws_all_cells_below_range():
    fig = plots.grad_norm_heatmap([(0, torch.zeros(6)), (5, torch.zeros(6))])
    mesh = _mesh(fig)
    lo, _ = mesh.get_clim()
    assert np.isfinite(mesh.get_clim()).all()
    assert (np.asarray(mesh.get_array()) < lo).all()
    assert plots.heatmap_limits([(0, torch.zeros(6))]) is None


def test_curve_marks_flushed_steps_at_the_floor():
    from seqnorm.probes import log10_floor

    norms = torch.tensor([[0.0, 0.0, 1e-3, 1e-2, 1e-1], [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]])
    fig = plots.grad_norm_curve(norms, labels=["a", "b"])
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    floor = log10_floor(torch.float32)
    y = np.asarray(lines["a"].get_ydata(), dtype=float)
    assert np.isnan(y[:2]).all() and np.allclose(y[2:], [-3, -2, -1])  # no line to the floor
    (marks,) = [ln for ln in ax.get_lines() if "below float32 range" in ln.get_label()]
    assert list(marks.get_xdata()) == [0, 1] and np.allclose(marks.get_ydata(), floor)
    assert marks.get_marker() not in (None, "None", "")
    assert np.isfinite(ax.get_ylim()).all() and ax.get_ylim()[0] < floor
    # a curve without flushed steps gets no marker entry
    plain = plots.grad_norm_curve(norms[1:])
    assert not [ln for ln in plain.axes[0].get_lines() if "below" in ln.get_label()]
