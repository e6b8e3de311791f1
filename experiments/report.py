"""Turn the reproduction grid's ``runs.csv`` into ``RESULTS.md`` and figures.

    .venv/bin/python experiments/report.py                       # experiments/results/
    .venv/bin/python experiments/report.py --runs path/runs.csv --out-dir path/

Writes, under ``--out-dir``:

* ``RESULTS.md``: how to regenerate, the budget, the machine; per task a table of
  mean +- std over seeds per (layer, constraint); the published figures beside ours, each
  with its protocol; per task, which constraints beat the memoryless baseline and how fast.
* ``curves_<task>.png``: training loss (mean over seeds, log scale) with the memoryless
  baseline, and the validation metric, per constraint.
* ``gradflow_<task>.png``: log10 ||dL/dh_t|| vs t per constraint, at initialisation and after
  training (mean over seeds, from each run's ``probes.npz``).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import math
import platform
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reproduce import BUDGETS, ROOT, read_metrics, series  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CONSTRAINT_ORDER = ["none", "spectral", "scaled", "bound", "band", "orthogonal"]
TASK_ORDER = ["copy", "adding", "smnist", "psmnist"]
#: A run "beats" the memoryless baseline when its final validation loss is below this
#: fraction of it (the baseline is an expectation; a finite split scatters by ~1-2%).
BEAT = 0.95

#: Published numbers (test accuracy %, or loss), each with the protocol that produced it.
PUBLISHED = [
    ("sMNIST", "expRNN", "N=512", "98.7", "best test accuracy over 70 epochs"),
    ("psMNIST", "expRNN", "N=512", "96.6", "best test accuracy over 70 epochs"),
    ("sMNIST", "scoRNN", "N=512", "98.2", "best test accuracy over epochs"),
    ("psMNIST", "scoRNN", "N=512", "96.5", "best test accuracy over epochs"),
    ("sMNIST", "LSTM (in expRNN's table)", "N=128", "81.9", "best test accuracy over epochs"),
    ("psMNIST", "LSTM (in expRNN's table)", "N=128", "79.5", "best test accuracy over epochs"),
    ("sMNIST", "coRNN", "N=256", "99.3", "test accuracy at the best validation accuracy"),
    (
        "psMNIST",
        "coRNN",
        "N=256",
        "97.3",
        "test at best validation; permutation from torch seed 12008 (ours: numpy "
        "RandomState(92916), as expRNN/scoRNN)",
    ),
    ("sMNIST", "LEM", "N=128", "99.5", "test accuracy at the best validation accuracy"),
    ("psMNIST", "LEM", "N=128", "96.6", "test accuracy at the best validation accuracy"),
    ("copy T=1000", "memoryless baseline", "-", "0.0204", "cross-entropy 10 ln 8 / (T+20)"),
    ("copy T=2000", "memoryless baseline", "-", "0.0103", "cross-entropy 10 ln 8 / (T+20)"),
]


# -- reading ------------------------------------------------------------------------------
def load_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of runs.csv (the last row of each run_id wins), numbers parsed."""
    with open(path, newline="") as f:
        raw = list(csv.DictReader(f))
    by_id: dict[str, dict[str, Any]] = {}
    for r in raw:
        by_id[r["run_id"]] = {k: _num(v) for k, v in r.items()}
    return list(by_id.values())


def resummarize(rows: list[dict[str, Any]]) -> int:
    """Recompute each run's decay rate and grad ratio from its saved curves (``probes.npz``)
    with the current :func:`seqnorm.probes.summarize`, so every row is summarised by the
    same code whatever version of the library wrote it. Returns how many rows changed.
    """
    import torch

    from seqnorm.probes import summarize

    changed = 0
    for r in rows:
        path = Path(r["run_dir"]) / "probes.npz" if r.get("run_dir") else None
        if path is None or not path.exists():
            continue
        with np.load(path) as z:
            curves = {w: z[w][-1] for w in ("init", "end") if w in z}  # top layer, (T,)
        for when, curve in curves.items():
            # The curves are log10 of float32 norms, floored at float32's tiny.
            norms = torch.from_numpy(10.0 ** curve.astype(np.float64)).float()
            summary = summarize(norms)
            r[f"decay_rate_{when}"] = summary["decay_rate"]
            r[f"grad_ratio_{when}"] = summary["grad_ratio"]
        changed += bool(curves)
    return changed


def _num(val: str) -> Any:
    if val is None or val == "":
        return None
    try:
        f = float(val)
    except ValueError:
        return val
    return int(f) if f.is_integer() and "." not in val and "e" not in val.lower() else f


def _order(values: list[str], preferred: list[str]) -> list[str]:
    return sorted(set(values), key=lambda v: (preferred.index(v) if v in preferred else 99, v))


def groups(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        out[(r["task"], r["layer"], r["constraint"])].append(r)
    return out


# -- numbers ------------------------------------------------------------------------------
def mean_std(values: list[Any]) -> tuple[float, float, int]:
    vals = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not vals:
        return math.nan, math.nan, 0
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return statistics.fmean(vals), sd, len(vals)


def fmt(values: list[Any], digits: int = 3, scale: float = 1.0) -> str:
    m, s, n = mean_std(values)
    if n == 0:
        return "-"
    if n == 1:
        return f"{m * scale:.{digits}g}"
    return f"{m * scale:.{digits}g} ± {s * scale:.{digits - 1 if digits > 1 else 1}g}"


def crit_cell(runs: list[dict[str, Any]]) -> str:
    reached = [r["steps_to_criterion"] for r in runs if r.get("steps_to_criterion") is not None]
    if not runs[0].get("criterion"):
        return "-"
    if not reached:
        return f"never (0/{len(runs)})"
    return f"{fmt(reached, 3)} ({len(reached)}/{len(runs)})"


def metric_label(metric: str) -> str:
    return {"acc": "acc %", "symbol_acc": "symbol acc %", "mse": "MSE"}.get(metric, metric)


def metric_scale(metric: str) -> float:
    return 100.0 if metric in ("acc", "symbol_acc") else 1.0


# -- figures ------------------------------------------------------------------------------
def _colors(constraints: list[str]) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {c: cmap(CONSTRAINT_ORDER.index(c) if c in CONSTRAINT_ORDER else i)
            for i, c in enumerate(constraints)}  # fmt: skip


def _styles(layers: list[str]) -> dict[str, str]:
    """One line style per layer (colour is the constraint): solid, dashed, dotted."""
    return {layer: ("-", "--", ":", "-.")[i % 4] for i, layer in enumerate(sorted(set(layers)))}


def _mean_curve(curves: list[list[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean over runs on the steps all runs logged."""
    common = set.intersection(*(set(s for s, _ in c) for c in curves)) if curves else set()
    steps = np.array(sorted(common))
    vals = np.array([[dict(c)[s] for s in steps] for c in curves])
    return steps, vals.mean(axis=0) if len(steps) else np.array([])


def _smooth(y: np.ndarray, k: int = 5) -> np.ndarray:
    if len(y) < k:
        return y
    pad = np.pad(y, (k // 2, k - 1 - k // 2), mode="edge")
    return np.convolve(pad, np.ones(k) / k, mode="valid")


def _pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (imported only when plotting)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(task: str, grouped: dict, out: Path) -> Path | None:
    keys = [k for k in grouped if k[0] == task]
    if not keys:
        return None
    plt = _pyplot()
    constraints = _order([k[2] for k in keys], CONSTRAINT_ORDER)
    colors, styles = _colors(constraints), _styles([k[1] for k in keys])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    baseline, metric = None, None
    for key in sorted(keys, key=lambda k: (k[1], constraints.index(k[2]))):
        runs = grouped[key]
        metric = runs[0]["metric"]
        baseline = runs[0].get("baseline")
        logs = [read_metrics(Path(r["run_dir"])) for r in runs]
        label = f"{key[1]} {key[2]} (n={len(runs)})"
        train = [series(m, "train/loss_step") for m in logs]
        train = [c for c in train if c]
        if train:
            s, y = _mean_curve(train)
            ax1.plot(s, _smooth(y), color=colors[key[2]], ls=styles[key[1]], label=label, lw=1.3)
        val = [series(m, f"val/{metric}") for m in logs]
        val = [c for c in val if c]
        if val:
            s, y = _mean_curve(val)
            ax2.plot(s + 1, y * metric_scale(metric), marker="o", ls=styles[key[1]],
                     color=colors[key[2]], label=label)  # fmt: skip
    if isinstance(baseline, (int, float)):
        ax1.axhline(baseline, color="k", ls="--", lw=1, label=f"memoryless baseline {baseline:.3g}")
        if metric == "mse":
            ax2.axhline(baseline, color="k", ls="--", lw=1, label="memoryless baseline")
    ax1.set_yscale("log")
    ax1.set_xlabel("training step")
    ax1.set_ylabel("train loss (mean over seeds, 5-point smoothing)")
    ax2.set_xlabel("training step")
    ax2.set_ylabel(f"validation {metric_label(metric or '')}")
    if metric == "mse":
        ax2.set_yscale("log")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.suptitle(f"{task}: learning curves")
    fig.tight_layout()
    path = out / f"curves_{task}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_gradflow(task: str, grouped: dict, out: Path) -> Path | None:
    keys = [k for k in grouped if k[0] == task]
    if not keys:
        return None
    plt = _pyplot()
    constraints = _order([k[2] for k in keys], CONSTRAINT_ORDER)
    colors, styles = _colors(constraints), _styles([k[1] for k in keys])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    drawn = False
    for key in sorted(keys, key=lambda k: (k[1], constraints.index(k[2]))):
        for ax, when in zip(axes, ("init", "end"), strict=True):
            curves = []
            for r in grouped[key]:
                path = Path(r["run_dir"]) / "probes.npz"
                if path.exists():
                    with np.load(path) as z:
                        if when in z:
                            curves.append(z[when][-1])  # top layer, (T,)
            if curves:
                y = np.mean(curves, axis=0)
                ax.plot(np.arange(len(y)), y, color=colors[key[2]], ls=styles[key[1]], lw=1.3,
                        label=f"{key[1]} {key[2]} (n={len(curves)})")  # fmt: skip
                drawn = True
    if not drawn:
        plt.close(fig)
        return None
    for ax, title in zip(axes, ("at initialisation", "after training"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("time step t")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("log10 ||dL/dh_t|| (fixed validation batch)")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"{task}: gradient flow")
    fig.tight_layout()
    path = out / f"gradflow_{task}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- the document -------------------------------------------------------------------------
def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    import torch

    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, torch {torch.__version__}; "
        "one thread per run (OMP_NUM_THREADS=1)"
    )


def grid_elapsed(log: Path) -> str | None:
    """Wall-clock of the grid from reproduce.log: the last 'min elapsed' of every
    invocation (a resumed grid has several), summed."""
    if not log.exists():
        return None
    total, runs, last = 0.0, 0, None
    for line in log.read_text().splitlines():
        if re.search(r"\d+ runs, \d+ finished, \d+ to run", line):
            total, runs, last = total + (last or 0.0), runs + 1, None
        m = re.search(r"([\d.]+) min elapsed", line)
        if m:
            last = float(m.group(1))
    total += last or 0.0
    if not runs or not total:
        return None
    how = f" over {runs} invocations (stopped and resumed)" if runs > 1 else ""
    return f"{total:.0f} min{how}"


def _sorted_keys(task: str, grouped: dict) -> list[tuple[str, str, str]]:
    keys = [k for k in grouped if k[0] == task]
    constraints = _order([k[2] for k in keys], CONSTRAINT_ORDER)
    return sorted(keys, key=lambda k: (k[1], constraints.index(k[2])))


def budget_notes(path: Path) -> list[str]:
    """The leading comment block of a budget file (what it is, what was cut and why)."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#") or line.lstrip("# ").startswith("Keys:"):
            break
        lines.append(line.lstrip("# ").rstrip())
    text = " ".join(ln for ln in lines if ln)
    return [f"> {text}"] if text else []


def headline(tasks: list[str], grouped: dict) -> list[str]:
    """One line per (layer, constraint): each task's final test metric and criterion cell."""
    layers_constraints = sorted(
        {(k[1], k[2]) for k in grouped},
        key=lambda lc: (lc[0], CONSTRAINT_ORDER.index(lc[1]) if lc[1] in CONSTRAINT_ORDER else 99),
    )
    head, rule = ["layer", "constraint"], ["---", "---"]
    for task in tasks:
        metric = next(v for k, v in grouped.items() if k[0] == task)[0]["metric"]
        head.append(f"{task}: test {metric_label(metric)}")
        rule.append("---")
        if next(v for k, v in grouped.items() if k[0] == task)[0].get("criterion"):
            head.append(f"{task}: steps to criterion (seeds reached)")
            rule.append("---")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(rule) + "|"]
    for layer, constraint in layers_constraints:
        cells = [layer, constraint]
        for task in tasks:
            runs = [r for r in grouped.get((task, layer, constraint), []) if r["status"] == "ok"]
            any_run = next(v for k, v in grouped.items() if k[0] == task)[0]
            sc = metric_scale(any_run["metric"])
            cells.append(fmt([r["test_metric_final"] for r in runs], 3, sc) if runs else "-")
            if any_run.get("criterion"):
                cells.append(crit_cell(runs) if runs else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def table(task: str, grouped: dict) -> list[str]:
    keys = [k for k in grouped if k[0] == task]
    metric = grouped[keys[0]][0]["metric"]
    ml, sc = metric_label(metric), metric_scale(metric)
    lines = [
        f"| layer | constraint | seeds | test {ml} (final) | test {ml} (at best val) | "
        f"best val {ml} | final val loss | steps to criterion (reached) | decay init | "
        "decay end | grad ratio end | fit min (last attempt) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in _sorted_keys(task, grouped):
        runs = grouped[key]
        ok = [r for r in runs if r["status"] == "ok"]
        failed = len(runs) - len(ok)
        seeds = f"{len(ok)}" + (f" (+{failed} failed)" if failed else "")
        resumed = sum(_resumed(r) for r in ok)
        seeds += f" ({resumed} resumed)" if resumed else ""
        lines.append(
            "| "
            + " | ".join(
                [
                    key[1],
                    key[2],
                    seeds,
                    fmt([r["test_metric_final"] for r in ok], 3, sc),
                    fmt([r["test_metric_at_best_val"] for r in ok], 3, sc),
                    fmt([r["val_metric_best"] for r in ok], 3, sc),
                    fmt([r["val_loss_final"] for r in ok], 3),
                    crit_cell(ok) if ok else "-",
                    fmt([r["decay_rate_init"] for r in ok], 2) + _underflow(ok, "init"),
                    fmt([r["decay_rate_end"] for r in ok], 2) + _underflow(ok, "end"),
                    fmt([r["grad_ratio_end"] for r in ok], 2),
                    fmt([(r["fit_time_s"] or 0) / 60 for r in ok], 2),
                ]
            )
            + " |"
        )
    return lines


def _resumed(row: dict[str, Any]) -> bool:
    """Whether the run was stopped and resumed from a checkpoint (more than one log version)."""
    return len(list((Path(row["run_dir"]) / "logs").glob("version_*"))) > 1


#: log10 of float32's smallest normal number: a probe curve at this floor has underflowed.
FLOOR = float(np.log10(np.finfo(np.float32).tiny))


def _underflow(rows: list[dict[str, Any]], when: str) -> str:
    """A dagger when >= 10% of some run's probe curve (top layer) underflowed float32."""
    for r in rows:
        path = Path(r["run_dir"]) / "probes.npz"
        if path.exists():
            with np.load(path) as z:
                if when in z and (z[when][-1] <= FLOOR + 0.01).mean() >= 0.1:
                    return " †"
    return ""


def findings(task: str, grouped: dict) -> list[str]:
    """Plain statements read off the numbers: baseline beaten, criterion, vs. unconstrained."""
    keys = _sorted_keys(task, grouped)
    out = []
    first = grouped[keys[0]][0]
    metric, baseline = first["metric"], first.get("baseline")
    sc = metric_scale(metric)
    if isinstance(baseline, (int, float)):
        beats = [
            f"{k[1]} {k[2]}"
            for k in keys
            if grouped[k]
            and all(
                isinstance(r["val_loss_final"], (int, float))
                and r["val_loss_final"] < BEAT * baseline
                for r in grouped[k]
            )
        ]
        out.append(
            f"- **Beat the memoryless baseline** (final val loss < {BEAT:g} x baseline, every "
            f"seed): {', '.join(beats) or 'none of the constraints, unconstrained included'}."
        )
    if first.get("criterion"):
        fast = []
        for k in keys:
            reached = [r["steps_to_criterion"] for r in grouped[k] if r["steps_to_criterion"]]
            if reached:
                fast.append(f"{k[1]} {k[2]} ({fmt(reached, 3)}, {len(reached)}/{len(grouped[k])})")
        out.append(
            f"- **Reached the criterion** ({first['criterion']}): "
            f"{', '.join(fast) or 'none, in ' + str(first['steps']) + ' steps'}."
        )
    if metric == "acc":
        out.append("- Chance is 10%; always answering the most frequent class gives about 11%.")
    for key in keys:
        ok = [r for r in grouped[key] if r["status"] == "ok"]
        if not ok:
            out.append(f"- {key[1]} {key[2]}: no finished run.")
            continue
        m_loss, _, n = mean_std([r["val_loss_final"] for r in ok])
        parts = []
        if isinstance(baseline, (int, float)):
            beat = [
                r["val_loss_final"]
                for r in ok
                if isinstance(r["val_loss_final"], (int, float))
                and r["val_loss_final"] < BEAT * baseline
            ]
            rel = m_loss / baseline if baseline else math.nan
            parts.append(
                f"final val loss {m_loss:.4g} = {rel:.3f} x the memoryless baseline "
                f"({baseline:.3g}); clearly below it (< {BEAT:g} x) in {len(beat)}/{len(ok)} seeds"
            )
        if first.get("criterion"):
            reached = [r["steps_to_criterion"] for r in ok if r["steps_to_criterion"] is not None]
            if reached:
                parts.append(
                    f"criterion ({first['criterion']}) reached in {len(reached)}/{len(ok)} "
                    f"seeds, at step {fmt(reached, 3)}"
                )
            else:
                parts.append(
                    f"criterion ({first['criterion']}) never reached in {ok[0]['steps']} steps"
                )
        if metric in ("acc", "symbol_acc"):
            parts.append(
                f"test {metric_label(metric)} {fmt([r['test_metric_final'] for r in ok], 3, sc)}"
            )
        out.append(f"- {key[1]} {key[2]}: " + "; ".join(parts) + ".")
    # against the unconstrained layer of the same type
    for layer in sorted({k[1] for k in keys}):
        ref = grouped.get((task, layer, "none"))
        if not ref:
            continue
        better = max if metric in ("acc", "symbol_acc") else min
        ref_m = mean_std([r["test_metric_final"] for r in ref])[0]
        winners, losers = [], []
        for key in keys:
            if key[1] != layer or key[2] == "none":
                continue
            m = mean_std([r["test_metric_final"] for r in grouped[key]])[0]
            if math.isnan(m) or math.isnan(ref_m):
                continue
            (winners if better(m, ref_m) == m and m != ref_m else losers).append(
                f"{key[2]} ({m * sc:.3g})"
            )
        out.append(
            f"- Against unconstrained {layer} (test {metric_label(metric)} "
            f"{ref_m * sc:.3g}): better on the mean: {', '.join(winners) or 'none'}; "
            f"not better: {', '.join(losers) or 'none'}."
        )
    return out


def ours(task: str, grouped: dict) -> str:
    """Our best (over constraints) MNIST test accuracy at the best-validation checkpoint."""
    best = None
    for key, runs in grouped.items():
        if key[0] != task:
            continue
        m, s, n = mean_std([r["test_metric_at_best_val"] for r in runs if r["status"] == "ok"])
        if n and (best is None or m > best[0]):
            best = (m, s, n, key, runs[0])
    if best is None:
        return "not run"
    m, s, n, key, r = best
    return (
        f"{m * 100:.1f}% ({key[1]} {key[2]}, H={r['hidden']}, {r['steps']} steps; test at best val)"
    )


def render(rows: list[dict[str, Any]], out: Path, runs_csv: Path, log: Path | None) -> str:
    grouped = groups(rows)
    tasks = _order([r["task"] for r in rows], TASK_ORDER)
    missing = [t for t in TASK_ORDER if t not in tasks]
    budgets = sorted({str(r["budget"]) for r in rows})
    commits = sorted({str(r["git_commit"]) for r in rows})
    total_work = sum((r["wall_time_s"] or 0) for r in rows) / 60
    elapsed = grid_elapsed(log) if log else None
    budget_files = [BUDGETS / f"{b}.yaml" for b in budgets if (BUDGETS / f"{b}.yaml").exists()]
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    n_failed = sum(r["status"] != "ok" for r in rows)
    probe_n = sorted({str(r.get("probe_batch") or 32) for r in rows})
    md = [
        "# seqnorm: constraints on the long-range benchmarks",
        "",
        f"Generated by `experiments/report.py` on {date} from `{_rel(runs_csv)}` "
        f"({len(rows)} runs, {n_failed} failed).",
        "",
        "## How to regenerate",
        "",
        "```bash",
        *[
            f".venv/bin/python experiments/reproduce.py --budget {b} --workers 2   "
            "# resumable: skips runs already in runs.csv"
            for b in budgets
        ],
        ".venv/bin/python experiments/report.py        # this file and the figures",
        "```",
        "",
        f"- Budget: {', '.join(f'`{_rel(p)}`' for p in budget_files) or ', '.join(budgets)}"
        " (every run is `seqnorm fit --config configs/<task>.yaml` plus that file's "
        "overrides, through `seqnorm.cli.main`; each run's exact command is in "
        "`runs/reproduce/<run_id>/cmd.txt`).",
        f"- Machine: {machine()}.",
        f"- Date: {date}. Commit(s): {', '.join(f'`{c}`' for c in commits)}"
        " (`+dirty`: seqnorm/ or configs/ had uncommitted changes).",
        f"- Time: {total_work:.0f} min of single-thread work in total"
        + (f"; {elapsed} wall-clock with 2 workers." if elapsed else "."),
        "",
    ]
    for path in budget_files:
        md += [f"Notes from `{_rel(path)}`:", "", *budget_notes(path), ""]
    if missing:
        md += [
            f"**Not in this runs.csv: {', '.join(missing)}** — no numbers for "
            f"{'it' if len(missing) == 1 else 'them'} below.",
            "",
        ]
    md += [
        "## Headline",
        "",
        "Test metric at the end of training (mean ± std over seeds) and training steps until "
        "the criterion was first met (copy: batch loss < 10% of the memoryless baseline; "
        "adding: batch MSE < 0.01).",
        "",
        *headline(tasks, grouped),
        "",
        "Columns of the per-task tables: *test (final)* is the test set at the last step; "
        "*test (at best val)* at the checkpoint with the best validation loss (copy, adding) "
        "or accuracy (MNIST); *best val* the best validation value over the run; *steps to "
        "criterion* the first logged training step (every 10th is logged) whose batch value "
        "is below the criterion, with how many seeds reached it; *decay* the change of "
        "log10 ||dL/dh_t|| per 100 steps going back in time (negative: vanishing; a robust "
        f"slope fit, `seqnorm.probes.summarize`) on {'/'.join(probe_n)} fixed validation "
        "samples, at initialisation and at the end (recomputed by this report from each run's "
        "saved curves, `probes.npz`, with the current `seqnorm.probes.summarize`; runs.csv "
        "holds the values of the library that ran); *grad ratio* ||dL/dh_0|| / "
        "||dL/dh_T-1|| at the end. Mean ± std over seeds. † on >= 10% of the steps of at least "
        "one run the curve sits at the probe's floor, log10 = -37.9 (float32's smallest "
        "normal number): the float32 gradient itself underflowed there (the probe takes the "
        "norm in float64, so only a gradient below float32's range reads as the floor). The "
        "decay rate is then fitted on the measurable part of the curve only, and a grad "
        "ratio at the floor (~1e-38) is an upper bound: the true ratio is smaller. "
        "*resumed*: stopped and resumed from its last checkpoint (exact resume); its fit time "
        "counts the last attempt only.",
        "",
    ]
    for task in tasks:
        keys = [k for k in grouped if k[0] == task]
        r0 = grouped[keys[0]][0]
        desc = (
            f"T={r0['T']} (input length {r0['seq_len']}), hidden {r0['hidden']}, batch "
            f"{r0['batch']}, lr {r0['lr']}, {r0['steps']} steps ({r0['epochs']} epoch(s))"
        )
        if isinstance(r0.get("baseline"), (int, float)):
            desc += f", memoryless baseline {r0['baseline']:.4g}"
        md += [f"## {task}", "", desc + ".", "", *table(task, grouped), ""]
        for name, fig in (
            ("learning curves", plot_curves(task, grouped, out)),
            ("gradient flow", plot_gradflow(task, grouped, out)),
        ):
            if fig is not None:
                md.append(f"![{task} {name}]({fig.name})")
        md += ["", "What the numbers say:", "", *findings(task, grouped), ""]
    md += [
        "## Published figures, for reference",
        "",
        "These come from the papers' full protocols (70 epochs of 55k-60k images at N=128-512; "
        "copy at T=1000/2000 for 10^4+ steps). A budget such as `cpu` (each task's section above "
        "gives its T, size and steps) is **not comparable** in budget: it shows how the "
        "constraints behave early in training, not what they reach. Only `--budget paper` "
        "follows the published settings; its numbers are not "
        "in this file unless its rows are in runs.csv.",
        "",
        "| task | model | size | published | protocol | seqnorm, this runs.csv |",
        "|---|---|---|---|---|---|",
    ]
    for t, m, n, v, proto in PUBLISHED:
        task = {"sMNIST": "smnist", "psMNIST": "psmnist"}.get(t)
        here = ours(task, grouped) if task else "-"
        md.append(f"| {t} | {m} | {n} | {v} | {proto} | {here} |")
    md += [
        "",
        "Our MNIST test accuracy at the best-validation checkpoint follows the coRNN/LEM "
        "protocol; the expRNN/scoRNN protocol (best test accuracy over epochs) would need a "
        "test pass every epoch and is not computed. The copy baselines above are for "
        "T=1000/2000; the T of each copy run here is in its section.",
        "",
    ]
    return "\n".join(md)


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=RESULTS / "runs.csv", help="runs.csv")
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="RESULTS.md + figures")
    parser.add_argument("--log", type=Path, default=None, help="reproduce.log (for wall time)")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md",
                        help="README whose results table (between the results markers) is "
                        "regenerated; skipped when it has no markers")  # fmt: skip
    ns = parser.parse_args(argv)
    if not ns.runs.exists():
        parser.error(f"--runs: {ns.runs} does not exist; run experiments/reproduce.py first")
    rows = load_rows(ns.runs)
    if not rows:
        parser.error(f"--runs: {ns.runs} has no rows")
    resummarize(rows)
    ns.out_dir.mkdir(parents=True, exist_ok=True)
    log = ns.log or ns.runs.with_name("reproduce.log")
    text = render(rows, ns.out_dir, ns.runs, log)
    (ns.out_dir / "RESULTS.md").write_text(text + "\n", encoding="utf-8")
    print(f"report: wrote {ns.out_dir / 'RESULTS.md'} ({len(rows)} runs)")
    if ns.readme is not None and ns.readme.exists():
        if update_readme(ns.readme, rows):
            print(f"report: updated the results table in {ns.readme}")
    return 0


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def update_readme(readme: Path, rows: list[dict[str, Any]]) -> bool:
    """Replace the text between the results markers of ``readme`` with the headline table.

    Returns whether the file had the markers (and so was updated).
    """
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        return False
    grouped = groups(rows)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    budgets = ", ".join(sorted({r["budget"] for r in rows}))
    block = [
        README_START,
        f"<!-- generated by experiments/report.py from runs.csv ({len(rows)} runs, budget: "
        f"{budgets}); do not edit by hand -->",
        "",
        *headline(tasks, grouped),
        README_END,
    ]
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    readme.write_text(head + "\n".join(block) + tail, encoding="utf-8")
    return True


if __name__ == "__main__":
    sys.exit(main())
