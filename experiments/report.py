"""Turn the reproduction grid's ``runs.csv`` into ``RESULTS.md``, its figures and the README table.

    .venv/bin/python experiments/report.py                  # experiments/results/, README.md
    .venv/bin/python experiments/report.py --root ../wt_grid \\
        --runs ../wt_grid/experiments/results/runs.csv      # a grid run in a worktree
    .venv/bin/python experiments/report.py --check          # the grid's acceptance check

Writes, under ``--out-dir``: ``RESULTS.md`` (provenance, the headline table that also goes
into the README between its markers, one table per task with mean ± std over seeds, the
input-projection comparison, the copy T=1000 curves, ``notes.md`` verbatim),
``curves_<task>.png`` (training loss / memoryless baseline, mean over seeds),
``gradflow_<task>.png`` (log10 ||dL/dh_t|| at the end of training, from ``probes.npz``) and
``gradmap_<task>.png`` (the same at initialisation and at the end, every row, one colour
scale). Epoch-based tasks (MNIST: the test set evaluated at every epoch) get, instead of the
loss curves, ``epochs_<task>.png``: validation accuracy per epoch, every row, beside the
per-epoch numbers that LEM and coRNN published (:data:`LITERATURE`), and a table with the
test accuracy at the best validation epoch and the best test accuracy over epochs.
Run directories in ``runs.csv`` are relative to the checkout that ran the grid: pass it as
``--root`` (several times when budgets ran in different worktrees; a run's directory is looked
for under each in turn). The small files of every finished run found there (CSV logs,
``probes.npz``, verdict; no checkpoints) are copied into ``<out-dir>/runs/<run_id>/``, which is
committed, so that the figures can be drawn again after the worktree is gone. The loss-curve
and gradient-flow figures of step-based tasks are drawn per budget (the first budget of a task
writes ``<figure>_<task>.png``, a later one ``<figure>_<task>_<budget>.png``: the first grids'
run directories were gone before the archive existed); an epoch-based task's gradient-flow map
has every row of every budget on one colour scale. A figure whose runs have no files anywhere
is left as it was drawn.
The copy T=1000 curves are the CSVLogger files copied into ``results/copy1000/`` (pass
``--copy1000-from DIR`` to refresh them from ``DIR/{exprnn,lstm}/csv/version_0``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reproduce import BUDGETS, ROOT, expand, load_budget, read_metrics  # noqa: E402

RESULTS = ROOT / "experiments" / "results"
Roots = Sequence[Path]  # the checkouts that ran the grid's budgets, looked in in turn
ARCHIVED = ("probes.npz", "verdict.json", "result.json", "clock.json")  # with the CSV logs
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
BEAT = 0.95  # "below the baseline": final val loss < 0.95 x baseline (a finite split scatters)
COPY1000 = {"exprnn": "expRNN recipe: modReLU RNN, orthogonal, H=190", "lstm": "LSTM, H=94"}
#: Published per-epoch validation accuracy (%) of other models, by task name: {model: {epoch:
#: accuracy}}. Read off the per-epoch logs the authors committed ("eval accuracy" lines, one
#: per epoch, on their own 57k/3k split, with Adam, their hidden sizes and their permutation):
#: LEM, Rusch et al. 2022, github.com/tk-rusch/LEM src/psMNIST/result/psMNIST_log.txt (commit
#: 6226186); coRNN, Rusch & Mishra 2021, github.com/tk-rusch/coRNN
#: psMNIST/result/psMNIST_log.txt (3295813) and sMNIST/result/sMNIST_log.txt (7febe11).
#: Epochs 1, 5, 10 and 20 only (the points the grid's budget quotes); LEM's repository
#: has no sMNIST log.
LITERATURE = {
    "psMNIST": {
        "LEM (published log)": {1: 63.9, 5: 86.5, 10: 91.63, 20: 92.97},
        "coRNN (published log)": {1: 10.27, 5: 49.03, 10: 87.67, 20: 91.77},
    },
    "sMNIST": {
        "coRNN (published log)": {1: 52.23, 5: 85.53, 10: 94.37, 20: 97.77},
    },
}


def pm(values: pd.Series, scale: float = 1.0) -> str:
    """``mean ± std`` (3 significant digits) of the finite values, or the one value."""
    v = values.dropna().astype(float) * scale
    if v.empty:
        return "-"
    return f"{v.mean():.3g}" if len(v) == 1 else f"{v.mean():.3g} ± {v.std():.2g}"


def criterion_cell(steps: pd.Series) -> str:
    """Median steps to criterion over the seeds that reached it, and how many did."""
    hit = steps.dropna()
    where = f"{hit.median():.0f}" if len(hit) else "never"
    return f"{where} ({len(hit)}/{len(steps)})"


def metric_name(metric: str) -> tuple[str, float]:
    return {"mse": ("test MSE", 1.0), "symbol_acc": ("test symbol acc %", 100.0)}.get(
        metric, (f"test {metric} %", 100.0)
    )


# -- tables ----------------------------------------------------------------------------------
def markdown(table: pd.DataFrame) -> str:
    """``table`` as a Markdown table; a ``|`` in a cell (``|lambda|``) escaped, not a column."""
    text = table.map(lambda v: v.replace("|", "\\|") if isinstance(v, str) else v)
    return text.to_markdown(index=False)


def task_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per variant of one task: mean ± std over its finished seeds."""
    label, scale = metric_name(runs.metric.iloc[0])
    rows = []
    for _, g in runs.groupby("variant", sort=False):
        rows.append(
            {
                "variant": g.label.iloc[0],
                **({"hidden": hidden(g)} if hidden(runs) == PER_ROW else {}),
                "seeds": len(g),
                f"{label} (final)": pm(g.test_metric_final, scale),
                f"{label} (at best val)": pm(g.test_metric_at_best_val, scale),
                "final val loss / baseline": pm(g.val_loss_final / g.baseline),
                "below baseline (seeds)": f"{(g.val_loss_final < BEAT * g.baseline).sum()}/{len(g)}",  # noqa: E501
                "steps to criterion (reached)": criterion_cell(g.steps_to_criterion),
                "decay init": pm(g.decay_rate_init),
                "decay end": pm(g.decay_rate_end),
                "grad ratio end": pm(g.grad_ratio_end),
                "fit min": pm(g.fit_time_s / 60),
            }
        )
    return pd.DataFrame(rows)


PER_ROW = "per row (the table's column)"


def hidden(runs: pd.DataFrame) -> str:
    """The runs' hidden size, :data:`PER_ROW` where they differ, "-" where not recorded."""
    sizes = runs.hidden.dropna().unique() if "hidden" in runs else []
    if len(sizes) == 0:
        return "-"
    return f"{sizes[0]:.0f}" if len(sizes) == 1 else PER_ROW


def headline(df: pd.DataFrame) -> pd.DataFrame:
    """Variants x tasks: the final test metric and steps to criterion, side by side; for an
    epoch-based task the test metric at the best validation epoch, epochs and wall minutes."""
    out = pd.DataFrame({"variant": df.drop_duplicates("variant").label.tolist()})
    for task, runs in df.groupby("task", sort=False):
        if is_epoch_task(runs):
            table = epoch_headline(runs).set_index("variant")
            table.columns = [f"{task}: {c}" for c in table.columns]
            out = out.join(table, on="variant")
            continue
        table = task_table(runs).set_index("variant")
        label = metric_name(runs.metric.iloc[0])[0]
        seeds = table["seeds"].astype(str)
        cols = {
            f"{task}: {label}": table[f"{label} (final)"] + " (" + seeds + ")",
            f"{task}: steps to criterion": table["steps to criterion (reached)"],
        }
        out = out.join(pd.DataFrame(cols), on="variant")
    return out.fillna("not run")


def projection_table(runs: pd.DataFrame) -> pd.DataFrame | None:
    """Each ``<variant>_proj`` beside ``<variant>``: does the input encoding decide?"""
    cells = runs.groupby("variant", sort=False).agg(
        label=("label", "first"),
        mse=("test_metric_final", pm),
        crit=("steps_to_criterion", criterion_cell),
    )
    pairs = [(v, f"{v}_proj") for v in cells.index if f"{v}_proj" in cells.index]
    if not pairs:
        return None
    cell = lambda v: f"{cells.mse[v]}; criterion {cells.crit[v]}"  # noqa: E731
    rows = [
        {"row": cells.label[a], "raw input": cell(a), "input projection": cell(b)} for a, b in pairs
    ]
    return pd.DataFrame(rows)


# -- epoch-based tasks (MNIST) ---------------------------------------------------------------
def parse_curve(value: object) -> dict[str, list]:
    """A run's ``curve`` (JSON in runs.csv), or empty lists (a row written before it existed)."""
    if not isinstance(value, str) or not value:
        return {"epoch": [], "step": [], "val": [], "test": []}
    return json.loads(value)


def is_epoch_task(runs: pd.DataFrame) -> bool:
    """Whether every run of a task evaluated the test set at its validations (EpochTest)."""
    if "curve" not in runs or runs.empty:
        return False
    return all(any(t is not None for t in parse_curve(c)["test"]) for c in runs.curve)


def at_epoch(curve: dict[str, list], epochs: int, higher: bool = True) -> dict[str, float] | None:
    """A run's numbers over its first ``epochs`` epochs, or ``None`` if it ran fewer.

    ``val_final``: the last validation; ``test_at_best_val``: the test value at the best
    validation (the first best, the one ModelCheckpoint keeps); ``test_best``: the best test
    value over those epochs (expRNN's protocol); ``best_epoch``.
    """
    keep = [i for i, e in enumerate(curve["epoch"]) if e is not None and e <= epochs]
    if not keep or curve["epoch"][keep[-1]] != epochs:
        return None
    val, test = [curve["val"][i] for i in keep], [curve["test"][i] for i in keep]
    pick = max if higher else min
    best = val.index(pick(val))
    tests = [t for t in test if t is not None]
    return {"val_final": val[-1], "test_at_best_val": test[best],
            "test_best": pick(tests) if tests else math.nan,
            "best_epoch": curve["epoch"][keep[best]]}  # fmt: skip


def epoch_groups(runs: pd.DataFrame) -> list[tuple[str, int, pd.DataFrame, pd.DataFrame]]:
    """``(variant, epochs, views, ended)`` per row of an epoch-based task's table: for each
    number of epochs E some run of the variant ran, every run of it that reached E, read over
    its first E epochs (``views``: :func:`at_epoch` per run), and the runs that ended at E."""
    out = []
    higher = runs.metric.iloc[0] in ("acc", "symbol_acc")
    for variant, g in runs.groupby("variant", sort=False):
        curves = g.curve.map(parse_curve)
        for E in sorted({int(e) for e in g.epochs.dropna()}):
            views = [(i, at_epoch(c, E, higher)) for i, c in curves.items()]
            views = pd.DataFrame([{**v, "index": i} for i, v in views if v]).set_index("index")
            out.append((variant, E, views.join(g[["seed", "label"]]), g[g.epochs == E]))
    return out


def epoch_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per variant and number of epochs: test metric at the best validation epoch and
    the best over epochs (mean ± std over seeds; a longer run counts with its first epochs)."""
    label, scale = metric_name(runs.metric.iloc[0])
    rows = []
    for _, E, views, ended in epoch_groups(runs):
        cut = len(views) - len(ended)
        rows.append(
            {
                "variant": views.label.iloc[0],
                "epochs": E,
                "seeds": f"{len(views)}" + (f" ({cut} from a longer run)" if cut else ""),
                f"{label} at best val epoch": pm(views.test_at_best_val, scale),
                f"best {label} over epochs": pm(views.test_best, scale),
                "best val epoch": pm(views.best_epoch),
                f"last val {label.removeprefix('test ')}": pm(views.val_final, scale),
                "decay init": pm(ended.decay_rate_init),
                "decay end": pm(ended.decay_rate_end),
                "wall min": pm(ended.wall_time_s / 60),
                "min / epoch": pm(ended.wall_time_s / 60 / ended.epochs),
            }
        )
    return pd.DataFrame(rows)


def epoch_headline(runs: pd.DataFrame) -> pd.DataFrame:
    """Per variant: test metric at the best validation epoch, epochs and wall minutes, one
    entry per number of epochs (``;``-separated)."""
    label, scale = metric_name(runs.metric.iloc[0])
    cells: dict[str, dict[str, list[str]]] = {}
    for _, E, views, ended in epoch_groups(runs):
        c = cells.setdefault(views.label.iloc[0], {"acc": [], "epochs": [], "wall": []})
        c["acc"].append(f"{pm(views.test_at_best_val, scale)} ({len(views)})")
        c["epochs"].append(str(E))
        c["wall"].append(pm(ended.wall_time_s / 60))
    return pd.DataFrame(
        {
            "variant": list(cells),
            f"{label} at best val epoch": ["; ".join(c["acc"]) for c in cells.values()],
            "epochs": ["; ".join(c["epochs"]) for c in cells.values()],
            "wall min": ["; ".join(c["wall"]) for c in cells.values()],
        }  # fmt: skip
    )


# -- figures ---------------------------------------------------------------------------------
def _pyplot():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def checkout_dir(roots: Roots, run: pd.Series) -> Path | None:
    """A run's directory in a checkout that ran the grid (its ``run_dir`` under the first root
    that has it), or ``None``."""
    return next((root / run.run_dir for root in roots if (root / run.run_dir).exists()), None)


def locate(roots: Roots, run: pd.Series) -> Path:
    """A run's files: its :func:`checkout_dir`, else a folder named by its ``run_id`` under a
    root (an archive, :func:`archive_runs`); else (found nowhere) its path under the first
    root."""
    found = checkout_dir(roots, run)
    if found is None:
        found = next((root / str(run.run_id) for root in roots
                      if (root / str(run.run_id)).exists()), None)  # fmt: skip
    return found or roots[0] / run.run_dir


def probe_files(roots: Roots, runs: pd.DataFrame) -> list[Path]:
    """The ``probes.npz`` of each run that has one."""
    files = [locate(roots, r) / "probes.npz" for _, r in runs.iterrows()]
    return [f for f in files if f.exists()]


def archive_runs(df: pd.DataFrame, roots: Roots, dest: Path) -> int:
    """Copy the small files of every finished run found under ``roots`` into
    ``dest/<run_id>/`` (``results/runs/``, committed beside runs.csv): its CSV logs,
    ``probes.npz``, ``verdict.json``, ``result.json`` and ``clock.json``, not its checkpoints.
    The figures can then be drawn again once the worktree that ran the grid is gone
    (:func:`locate` looks there). Returns how many runs were copied."""
    copied = 0
    for _, run in df[df.status == "ok"].iterrows():
        src = checkout_dir(roots, run)
        if src is None:
            continue
        files = [*src.glob("logs/version_*/metrics.csv"),
                 *(src / n for n in ARCHIVED if (src / n).exists())]  # fmt: skip
        for f in files:
            target = dest / str(run.run_id) / f.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
        copied += bool(files)
    return copied


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


# -- the acceptance check and the document ---------------------------------------------------
def check(df: pd.DataFrame) -> list[tuple[str, bool]]:
    """The grid's acceptance check on runs.csv (one clean commit, relative run directories,
    the copy task learned at T=100 and T>=1000): (condition, holds)."""
    copy = df[(df.task.str.startswith("copy")) & (df.status == "ok")]
    long = copy[copy["T"] >= 1000]
    per_budget = df.groupby("budget") if "budget" in df else [(None, df)]
    return [
        ("each budget at one commit, clean",
         all(g.git_commit.nunique() == 1 and bool(g.git_clean.all()) for _, g in per_budget)),
        ("no absolute paths", not df.run_dir.astype(str).str.startswith("/").any()),
        ("a copy run at T=100 reaches the criterion",
         bool(copy[copy["T"] == 100].steps_to_criterion.notna().any())),
        ("a copy run at T>=1000 ends below half the baseline",
         bool((long.val_loss_final < 0.5 * long.baseline).any())),
    ]  # fmt: skip


def elapsed(log: Path) -> str:
    """Wall-clock of the grid from its log: the last 'min elapsed' of each invocation, summed."""
    if not log.exists():
        return "unknown (no reproduce.log)"
    parts = re.split(r".*\d+ runs, \d+ finished, \d+ to run\n", log.read_text())[1:]
    mins = [float(m[-1]) for p in parts if (m := re.findall(r"([\d.]+) min elapsed", p))]
    return f"{sum(mins):.0f} min over {len(parts)} invocation(s)" if mins else "unknown"


def missing(df: pd.DataFrame, budget: Path) -> list[str]:
    """The runs the budget plans that runs.csv lacks, per (task, variant): which seeds."""
    plan = pd.DataFrame(expand(load_budget(str(budget)), Path("runs")))
    plan = plan[~plan.run_id.isin(df.run_id)]
    return [f"- {task}: {g.label.iloc[0]}: seed(s) {', '.join(map(str, g.seed))}"
            for (task, _), g in plan.groupby(["task", "variant"], sort=False)]  # fmt: skip


def quote_notes(path: Path, named: bool) -> str:
    """A budget's header comment (up to ``# Keys:``) as a Markdown quote; ``named``: headed by
    the budget's file name."""
    if not path.exists():
        return ""
    text = path.read_text().split("# Keys:")[0]
    quote = "\n".join(f"> {ln[2:]}" for ln in text.splitlines() if ln.startswith("#"))
    return f"> **{path.name}**\n>\n{quote}" if named else quote


def budget_log(results: Path, budget: str) -> Path:
    """The grid log of a budget: ``reproduce_<budget>.log`` beside runs.csv, else the
    ``reproduce.log`` every budget wrote into before."""
    own = results / f"reproduce_{budget}.log"
    return own if own.exists() else results / "reproduce.log"


def render(df: pd.DataFrame, roots: Roots | Path, out: Path, log: Path | None = None) -> str:
    """RESULTS.md. ``roots``: the checkouts the budgets ran in (:func:`locate`). ``log``: the
    grid log of the first budget (default: :func:`budget_log` beside the default runs.csv);
    later budgets' logs are looked for beside it."""
    import torch

    roots = [*([roots] if isinstance(roots, Path) else roots), out / "runs"]  # + the archive
    ok = df[df.status == "ok"]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    budgets = list(df.budget.unique())
    budget = budgets[0]
    todo = [t for b in budgets if (BUDGETS / f"{b}.yaml").exists()
            for t in missing(df[df.budget == b], BUDGETS / f"{b}.yaml")]  # fmt: skip
    logs = {b: budget_log(log.parent if log else RESULTS, b) for b in budgets}
    if log is not None:
        logs[budget] = log
    commits = ", ".join(f"`{c[:12]}`" for c in df.git_commit.unique())
    machines = {b: ", ".join(g.machine.dropna().unique()) if "machine" in g else ""
                for b, g in df.groupby("budget", sort=False)}  # fmt: skip
    machine = "; ".join(
        f"{b}: {m or 'not recorded in runs.csv'}" if len(budgets) > 1 else m or "not recorded"
        for b, m in machines.items()
    )
    walls: dict[Path, list[str]] = {}
    for b in budgets:  # budgets that wrote into one log share its wall-clock
        walls.setdefault(logs[b], []).append(b)
    lines = [
        "# seqnorm: constraints on the long-range benchmarks",
        "",
        f"Generated by `experiments/report.py` on {now} from `runs.csv`: {len(ok)} runs finished"
        + f", {len(df) - len(ok)} failed, {len(todo)} (task, row) cells still lack seeds.",
        "",
        "```bash",
        "git worktree add ../wt_grid <commit> && cd ../wt_grid    # one clean commit",
        *(
            f"PYTHONPATH=$PWD python experiments/reproduce.py --budget {b} --workers 2"
            for b in budgets
        ),  # fmt: skip
        "cd - && python experiments/report.py --root ../wt_grid "
        "--runs ../wt_grid/experiments/results/runs.csv",
        "```",
        "",
        f"- Commit: {commits}; clean checkout: {'yes' if df.git_clean.all() else 'NO'} "
        "(recorded by each run's own worker)"
        + (
            ""
            if len(budgets) == 1
            else "; by budget: "
            + ", ".join(
                f"{b} `{g.git_commit.iloc[0][:12]}`" for b, g in df.groupby("budget", sort=False)
            )
        )
        + ".",
        f"- Machine (recorded by each run): {machine}; shared with other work; one thread "
        f"per run. This report: Python {platform.python_version()}, torch {torch.__version__}.",
        f"- Time: {ok.wall_time_s.sum() / 60:.0f} min of run time in total; grid wall-clock "
        + "; ".join(f"{', '.join(bs)}: {elapsed(log)}" for log, bs in walls.items())
        + " with 2 workers.",
        "",
        "\n\n".join(quote_notes(BUDGETS / f"{b}.yaml", len(budgets) > 1) for b in budgets),
        "",
        "## Headline",
        "",
        "Final test metric, mean ± std over seeds (seeds in brackets), and steps until the "
        "criterion was first met (copy: batch loss < 10% of the memoryless baseline; adding: "
        "batch MSE < 0.01), median over the seeds that reached it. Epoch-based tasks (MNIST): "
        "the test accuracy at the best validation epoch (seeds in brackets), the epochs and "
        "the wall minutes per run, one entry per length of run.",
        "",
        markdown(headline(ok)),
        "",
    ]
    if todo:
        lines += ["Not run yet (the grid is resumable at the same commit):", "", *todo, ""]
    if (RESULTS / "notes.md").exists():
        lines += ["## Reading", "", (RESULTS / "notes.md").read_text().strip(), ""]
    for task, runs in ok.groupby("task", sort=False):
        r = runs.iloc[0]
        if is_epoch_task(runs):
            lines += epoch_section(task, runs, roots, out)
            continue
        lines += [f"## {task}", "",
                  f"T={r['T']:.0f}, hidden {hidden(runs)}, batch {r.batch:.0f}, {r.steps:.0f} "
                  f"steps, memoryless baseline {r.baseline:.4g}. Each row's overrides: `runs.csv`.",
                  "",
                  markdown(task_table(runs)), ""]  # fmt: skip
        proj = projection_table(runs)
        if proj is not None:
            lines += ["Input projection (learned `Linear(input_dim, H)` before the layer) "
                      "against the raw input, same rows otherwise (test MSE, steps to MSE < 0.01):",
                      "", markdown(proj), ""]  # fmt: skip
        first = runs.budget.iloc[0]
        for budget, b_runs in runs.groupby("budget", sort=False):
            which = "" if budget == first else f" ({budget} budget)"
            title = f"{task} ({budget} budget)"  # figures of one task, several budgets
            name = figure_name("curves", task, budget, first)
            curves = plot_curves(title, b_runs, roots, out / name) or kept(out / name)
            lines.append(f"![{task} curves{which}]({curves.name})" if curves else "")
            name = figure_name("gradflow", task, budget, first)
            flow = plot_gradflow(title, b_runs, roots, out / name) or kept(out / name)
            lines += [f"![{task} gradient flow{which}]({flow.name})" if flow else "", ""]
    lines += ["## Copy at T=1000", "", *copy1000(out), ""]
    lines += ["## Acceptance check: a reproducible grid that learns the copy task", ""]
    lines += [f"- [{'x' if held else ' '}] {what}" for what, held in check(df)]
    return "\n".join(lines) + "\n"


def kept(path: Path) -> Path | None:
    """A figure drawn earlier, left as it is when its runs' files are not under ``--root``."""
    return path if path.exists() else None


def epoch_section(task: str, runs: pd.DataFrame, roots: Roots, out: Path) -> list[str]:
    """The RESULTS.md section of an epoch-based task: its table and figures."""
    r = runs.iloc[0]
    name = r.task_name if isinstance(r.get("task_name"), str) else task
    lit = LITERATURE.get(name, {})
    lines = [
        f"## {task}",
        "",
        f"{name}: T={r['T']:.0f}, batch {r.batch:.0f}; the test set evaluated after every "
        "epoch's validation. Test accuracy at the best validation epoch (the checkpoint this "
        "protocol would keep) and the best test accuracy over the epochs (expRNN's protocol: "
        "it trains on all 60k images without a validation split and reports the best test "
        "epoch). A longer run counts in a shorter row with its first epochs (same seed, same "
        "data order: what a run of that length would have done); decay and wall time are "
        "from the runs that ended there. Each row's overrides: `runs.csv`.",
        "",
        markdown(epoch_table(runs)),
        "",
        f"![{task}: validation per epoch]({plot_epoch_curves(task, runs, out).name})",
        "",
    ]
    if lit:
        lines += [
            "The grey dashed points are the per-epoch validation accuracy in the logs "
            f"{' and '.join(m.split(' (')[0] for m in lit)} committed (epochs 1, 5, 10, 20): "
            "their own 57k/3k split (ours: 55k/5k), Adam with their learning rates and "
            "schedules, their hidden sizes, their own permutation; not the same protocol, "
            "the same task.",
            "",
        ]
    name = f"gradmap_{task}.png"  # every row, every budget: one colour scale
    flow = plot_gradflow_map(task, runs, roots, out / name) or kept(out / name)
    return [*lines, f"![{task} gradient flow]({flow.name})" if flow else "", ""]


def update_readme(readme: Path, table: str) -> bool:
    """Put ``table`` between the README's results markers; False when it has none."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return False
    head, rest = text.split(README_START, 1)
    note = "<!-- generated by experiments/report.py from runs.csv; do not edit by hand -->"
    readme.write_text(
        f"{head}{README_START}\n{note}\n\n{table}\n{README_END}{rest.split(README_END, 1)[1]}"
    )
    return True


def in_budget_order(df: pd.DataFrame) -> pd.DataFrame:
    """Tasks and rows in the order their budgets list them (budgets in the order runs.csv
    first names them; names no budget file lists come last), seeds ascending."""
    rank: dict[str, int] = {}
    for b in df.budget.unique():
        if (BUDGETS / f"{b}.yaml").exists():
            spec = load_budget(b)
            for name in [*spec["tasks"], *spec["variants"]]:
                rank.setdefault(name, len(rank))

    def key(column: pd.Series) -> pd.Series:
        return column if column.name == "seed" else column.map(rank).fillna(len(rank))

    return df.sort_values(["task", "variant", "seed"], key=key, kind="stable")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=RESULTS / "runs.csv")
    parser.add_argument(
        "--root",
        type=Path,
        action="append",
        help="a checkout that ran (part of) the grid; repeatable (default: .)",
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--copy1000-from", type=Path, help="refresh results/copy1000/ from DIR")
    parser.add_argument("--check", action="store_true", help="only the acceptance check")
    ns = parser.parse_args(argv)
    df = pd.read_csv(ns.runs).drop_duplicates("run_id", keep="last")
    df = in_budget_order(df)
    if ns.check:
        results = check(df)
        for what, held in results:
            print(f"{'ok  ' if held else 'FAIL'} {what}")
        return int(not all(held for _, held in results))
    ns.out_dir.mkdir(parents=True, exist_ok=True)
    if ns.copy1000_from:
        (ns.out_dir / "copy1000").mkdir(exist_ok=True)
        for name in COPY1000:
            src = ns.copy1000_from / name / "csv" / "version_0" / "metrics.csv"
            if src.exists():
                shutil.copy(src, ns.out_dir / "copy1000" / f"{name}.csv")
    log = budget_log(ns.runs.parent, df.budget.iloc[0])
    roots = ns.root or [ROOT]
    copied = archive_runs(df, roots, ns.out_dir / "runs")
    print(f"report: the small files of {copied} runs copied into {ns.out_dir / 'runs'}")
    (ns.out_dir / "RESULTS.md").write_text(render(df, roots, ns.out_dir, log))
    print(f"report: wrote {ns.out_dir / 'RESULTS.md'} ({len(df)} runs)")
    if ns.readme.exists() and update_readme(ns.readme, markdown(headline(df[df.status == "ok"]))):
        print(f"report: updated the results table in {ns.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
