"""The report's figures: loss curves, gradient flow after training, the gradient-flow map at
initialisation and after training, validation per epoch beside the literature, copy T=1000."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from reproduce import read_metrics

from .archive import Roots, locate, probe_files
from .literature import LITERATURE
from .tables import is_epoch_task, markdown, metric_name, parse_curve

__all__ = [
    "COPY1000", "copy1000", "figure_name", "kept", "plot_curves", "plot_epoch_curves",
    "plot_gradflow", "plot_gradflow_map", "seed_mean_norms",
]  # fmt: skip


COPY1000 = {"exprnn": "expRNN recipe: modReLU RNN, orthogonal, H=190", "lstm": "LSTM, H=94"}


def _pyplot():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_name(kind: str, task: str, budget: str, first: str) -> str:
    """``<kind>_<task>.png`` for the task's first budget, ``<kind>_<task>_<budget>.png`` after."""
    return f"{kind}_{task}.png" if budget == first else f"{kind}_{task}_{budget}.png"


def plot_curves(title: str, runs: pd.DataFrame, roots: Roots, path: Path) -> Path | None:
    """Training loss / memoryless baseline per variant (mean over seeds, smoothed), log scale."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.set_prop_cycle(color=plt.cm.tab20.colors)  # > 10 rows: one colour each
    for _, g in runs.groupby("variant", sort=False):
        curves = []
        for _, r in g.iterrows():
            m = read_metrics(locate(roots, r))
            if "train/loss_step" in m:
                curves.append(m.set_index("step")["train/loss_step"].dropna() / r.baseline)
        if curves:
            mean = pd.concat(curves, axis=1).mean(axis=1).rolling(5, min_periods=1).mean()
            ax.plot(mean.index + 1, mean.values, label=f"{g.label.iloc[0]} ({len(curves)})")
    if not ax.lines:  # no run's files under root (a grid run elsewhere): draw nothing
        plt.close(fig)
        return None
    ax.axhline(1.0, color="k", ls="--", lw=1, label="memoryless baseline")
    ax.set(yscale="log", xlabel="training step", ylabel="train loss / baseline", title=title)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def seed_mean_norms(log10_curves: list[np.ndarray]) -> np.ndarray:
    """The mean over seeds of ``probes.npz`` curves (``log10_norms``), as norms again.

    A step below float range (at ``log10_floor``) in every seed stays below it (0, which
    ``grad_norm_curve`` marks at the floor); elsewhere a seed at the floor counts with the
    floor, so the mean there is an upper bound. Going back through ``10 **`` alone would
    land a hair above the floor and draw it as a measured norm.
    """
    import torch

    from seqnorm.probes import log10_floor

    z = np.stack(log10_curves)  # (seeds, T)
    dtype = torch.float64 if z.dtype == np.float64 else torch.float32
    below = (z <= log10_floor(dtype)).all(axis=0)  # (T,)
    norms = np.where(below, 0.0, 10.0 ** z.astype(np.float64).mean(axis=0))  # (T,)
    return norms.astype(z.dtype)


def plot_gradflow(title: str, runs: pd.DataFrame, roots: Roots, path: Path) -> Path | None:
    """log10 ||dL/dh_t|| after training, one line per variant (layer 0, mean over seeds)."""
    from seqnorm.plots import grad_norm_curve

    rows, labels = [], []
    for _, g in runs.groupby("variant", sort=False):
        ends = [np.load(f)["end"][0] for f in probe_files(roots, g) if "end" in np.load(f)]
        if ends:
            rows.append(seed_mean_norms(ends))  # the probe stores log10
            labels.append(g.label.iloc[0])
    if not rows:
        return None
    fig = grad_norm_curve(np.stack(rows), labels=labels)
    fig.axes[0].set_title(f"{title}: gradient norm per time step after training")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_epoch_curves(task: str, runs: pd.DataFrame, out: Path) -> Path:
    """Validation metric per epoch, every variant (mean over the seeds that reached the
    epoch), beside the published per-epoch numbers of :data:`LITERATURE` for the task."""
    plt = _pyplot()
    label, scale = metric_name(runs.metric.iloc[0])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.set_prop_cycle(color=plt.cm.tab10.colors)
    for _, g in runs.groupby("variant", sort=False):
        per_epoch: dict[int, list[float]] = {}
        for c in g.curve.map(parse_curve):
            for e, v in zip(c["epoch"], c["val"], strict=True):
                if e is not None:
                    per_epoch.setdefault(e, []).append(v * scale)
        epochs = sorted(per_epoch)
        ax.plot(epochs, [np.mean(per_epoch[e]) for e in epochs], marker="o", ms=3,
                label=f"{g.label.iloc[0]} ({len(g)})")  # fmt: skip
    name = runs.task_name.iloc[0] if "task_name" in runs else task
    for model, points in LITERATURE.get(name, {}).items():
        ax.plot(list(points), list(points.values()), ls="--", marker="s", ms=5, color="0.4"
                if "LEM" in model else "0.7", label=model)  # fmt: skip
    ax.set(xlabel="epoch", ylabel=f"validation {label.removeprefix('test ')}",
           title=f"{name}: validation per epoch (seeds in brackets)")  # fmt: skip
    ax.set_ylim(0, 100 if scale == 100 else None)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    path = out / f"epochs_{task}.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_gradflow_map(task: str, runs: pd.DataFrame, roots: Roots, path: Path) -> Path | None:
    """log10 ||dL/dh_t|| at initialisation and at the end, one band each per row (layer 0,
    mean over the seeds that ended at the same epoch or step), one colour scale; norms below
    float range in grey."""
    import torch

    from seqnorm.plots import BELOW_RANGE_COLOR
    from seqnorm.probes import below_range

    bands, names = [], []
    key = "epochs" if is_epoch_task(runs) else "steps"
    groups = [(n, g) for _, v in runs.groupby("variant", sort=False) for n, g in v.groupby(key)]
    for n, g in groups:  # rows in budget order, each by its length of run
        probes = [np.load(f) for f in probe_files(roots, g)]
        probes = [p for p in probes if "init" in p and "end" in p]
        if not probes:
            continue
        for when in ("init", "end"):
            bands.append(seed_mean_norms([p[when][0] for p in probes]))  # the probe stores log10
            unit = "epochs" if key == "epochs" else "steps"
            names.append(
                f"{g.label.iloc[0]}: " + ("init" if when == "init" else f"after {n:.0f} {unit}")
            )
    if not bands:
        return None
    norms = torch.from_numpy(np.stack(bands))  # (rows, T)
    below = below_range(norms).numpy()
    z = np.log10(np.where(below, 1.0, norms.numpy().astype(np.float64)))
    vmin, vmax = z[~below].min(initial=0.0), z[~below].max(initial=1.0)
    plt = _pyplot()
    cmap = plt.get_cmap("viridis").with_extremes(under=BELOW_RANGE_COLOR)
    fig, ax = plt.subplots(figsize=(9, 0.9 + 0.32 * len(bands)))
    mesh = ax.pcolormesh(np.where(below, vmin - 1, z), cmap=cmap, vmin=vmin, vmax=vmax,
                         rasterized=True)  # fmt: skip
    ax.set_yticks(np.arange(len(names)) + 0.5, names, fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="time step t", title=f"{task}: log10 ||dL/dh_t|| at init and after training")
    fig.colorbar(mesh, ax=ax, label="log10 ||dL/dh_t|| (grey: below float range)",
                 extend="min" if below.any() else "neither")  # fmt: skip
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def copy1000(out: Path) -> list[str]:
    """The T=1000 copy curves against the baseline 10 ln 8 / 1020: a figure and a table."""
    files = {
        k: out / "copy1000" / f"{k}.csv"
        for k in COPY1000
        if (out / "copy1000" / f"{k}.csv").exists()
    }
    if not files:
        return ["No T=1000 curves in `results/copy1000/` yet."]
    base = 10 * math.log(8) / 1020
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    rows = []
    for name, path in files.items():
        loss = pd.read_csv(path).set_index("step")["train/loss_step"].dropna()
        smooth = loss.rolling(5, min_periods=1).mean()
        ax.plot(loss.index + 1, loss.values, label=COPY1000[name])
        first = {f: smooth.index[smooth < f * base] for f in (1.0, 0.5)}
        first = {f: int(i[0]) + 1 if len(i) else "-" for f, i in first.items()}
        rows.append({"run": COPY1000[name], "iterations logged": int(loss.index[-1]) + 1,
                     "loss (mean of last 5 logs)": f"{loss.tail(5).mean():.4f}",
                     "/ baseline": f"{loss.tail(5).mean() / base:.3f}",
                     "first below baseline": first[1.0], "below half": first[0.5]})  # fmt: skip
    ax.axhline(base, color="k", ls="--", lw=1, label="baseline 10 ln 8 / 1020")
    ax.set(
        yscale="log", xlabel="iteration", ylabel="train loss (cross-entropy)", title="copy T=1000"
    )
    ax.legend()
    ax.grid(alpha=0.3)
    fig.savefig(out / "copy1000_long_runs.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    figure = "![copy T=1000, the long runs](copy1000_long_runs.png)"
    return [markdown(pd.DataFrame(rows)), "", figure]


def kept(path: Path) -> Path | None:
    """A figure drawn earlier, left as it is when its runs' files are not under ``--root``."""
    return path if path.exists() else None
