"""Turn the reproduction grid's ``runs.csv`` into ``RESULTS.md``, its figures and the README table.

    .venv/bin/python experiments/report.py                  # experiments/results/, README.md
    .venv/bin/python experiments/report.py --root ../wt_grid \\
        --runs ../wt_grid/experiments/results/runs.csv      # a grid run in a worktree
    .venv/bin/python experiments/report.py --check          # the grid's acceptance check

Writes, under ``--out-dir``: ``RESULTS.md`` (provenance, the headline table that also goes
into the README between its markers, one table per task with mean ± std over seeds, the
input-projection comparison, the copy T=1000 curves, ``notes.md`` verbatim),
``curves_<task>.png`` (training loss / memoryless baseline, mean over seeds) and
``gradflow_<task>.png`` (log10 ||dL/dh_t|| at the end of training, from ``probes.npz``).
Run directories in ``runs.csv`` are relative to ``--root`` (the checkout that ran the grid).
The copy T=1000 curves are the CSVLogger files copied into ``results/copy1000/`` (pass
``--copy1000-from DIR`` to refresh them from ``DIR/{exprnn,lstm}/csv/version_0``).
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reproduce import BUDGETS, ROOT, expand, load_budget, read_metrics  # noqa: E402

RESULTS = ROOT / "experiments" / "results"
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
BEAT = 0.95  # "below the baseline": final val loss < 0.95 x baseline (a finite split scatters)
COPY1000 = {"exprnn": "expRNN recipe: modReLU RNN, orthogonal, H=190", "lstm": "LSTM, H=94"}


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
def task_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per variant of one task: mean ± std over its finished seeds."""
    label, scale = metric_name(runs.metric.iloc[0])
    rows = []
    for _, g in runs.groupby("variant", sort=False):
        rows.append(
            {
                "variant": g.label.iloc[0],
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


def headline(df: pd.DataFrame) -> pd.DataFrame:
    """Variants x tasks: the final test metric and steps to criterion, side by side."""
    out = pd.DataFrame({"variant": df.drop_duplicates("variant").label.tolist()})
    for task, runs in df.groupby("task", sort=False):
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


# -- figures ---------------------------------------------------------------------------------
def _pyplot():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(task: str, runs: pd.DataFrame, root: Path, out: Path) -> Path:
    """Training loss / memoryless baseline per variant (mean over seeds, smoothed), log scale."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.set_prop_cycle(color=plt.cm.tab20.colors)  # > 10 rows: one colour each
    for _, g in runs.groupby("variant", sort=False):
        curves = []
        for _, r in g.iterrows():
            m = read_metrics(root / r.run_dir)
            if "train/loss_step" in m:
                curves.append(m.set_index("step")["train/loss_step"].dropna() / r.baseline)
        if curves:
            mean = pd.concat(curves, axis=1).mean(axis=1).rolling(5, min_periods=1).mean()
            ax.plot(mean.index + 1, mean.values, label=f"{g.label.iloc[0]} ({len(curves)})")
    ax.axhline(1.0, color="k", ls="--", lw=1, label="memoryless baseline")
    ax.set(yscale="log", xlabel="training step", ylabel="train loss / baseline", title=task)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    path = out / f"curves_{task}.png"
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


def plot_gradflow(task: str, runs: pd.DataFrame, root: Path, out: Path) -> Path | None:
    """log10 ||dL/dh_t|| after training, one line per variant (layer 0, mean over seeds)."""
    from seqnorm.plots import grad_norm_curve

    rows, labels = [], []
    for _, g in runs.groupby("variant", sort=False):
        ends = [np.load(f)["end"][0] for f in (root / g.run_dir).map(lambda p: p / "probes.npz")
                if f.exists() and "end" in np.load(f)]  # fmt: skip
        if ends:
            rows.append(seed_mean_norms(ends))  # the probe stores log10
            labels.append(g.label.iloc[0])
    if not rows:
        return None
    fig = grad_norm_curve(np.stack(rows), labels=labels)
    fig.axes[0].set_title(f"{task}: gradient norm per time step after training")
    path = out / f"gradflow_{task}.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
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
    return [pd.DataFrame(rows).to_markdown(index=False), "", figure]


# -- the acceptance check and the document ---------------------------------------------------
def check(df: pd.DataFrame) -> list[tuple[str, bool]]:
    """The grid's acceptance check on runs.csv (one clean commit, relative run directories,
    the copy task learned at T=100 and T>=1000): (condition, holds)."""
    copy = df[(df.task.str.startswith("copy")) & (df.status == "ok")]
    long = copy[copy["T"] >= 1000]
    return [
        ("one commit, clean", df.git_commit.nunique() == 1 and bool(df.git_clean.all())),
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


def render(df: pd.DataFrame, root: Path, out: Path, log: Path) -> str:
    import torch

    ok = df[df.status == "ok"]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    budget = df.budget.iloc[0]
    notes = BUDGETS / f"{budget}.yaml"
    todo = missing(df, notes) if notes.exists() else []
    commits = ", ".join(f"`{c[:12]}`" for c in df.git_commit.unique())
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.machine())  # fmt: skip
    lines = [
        "# seqnorm: constraints on the long-range benchmarks",
        "",
        f"Generated by `experiments/report.py` on {now} from `runs.csv`: {len(ok)} runs finished"
        + f", {len(df) - len(ok)} failed, {len(todo)} (task, row) cells still lack seeds.",
        "",
        "```bash",
        "git worktree add ../wt_grid <commit> && cd ../wt_grid    # one clean commit",
        f"PYTHONPATH=$PWD python experiments/reproduce.py --budget {budget} --workers 2",
        "cd - && python experiments/report.py --root ../wt_grid "
        "--runs ../wt_grid/experiments/results/runs.csv",
        "```",
        "",
        f"- Commit: {commits}; clean checkout: {'yes' if df.git_clean.all() else 'NO'} "
        "(recorded by each run's own worker).",
        f"- Machine: {cpu}, {os.cpu_count()} cores shared with other work; Python "
        f"{platform.python_version()}, torch {torch.__version__}; one thread per run.",
        f"- Time: {ok.wall_time_s.sum() / 60:.0f} min of run time in total; grid wall-clock "
        f"{elapsed(log)} with 2 workers.",
        "",
        "\n".join(f"> {ln[2:]}" for ln in notes.read_text().split("# Keys:")[0].splitlines())
        if notes.exists()
        else "",
        "",
        "## Headline",
        "",
        "Final test metric, mean ± std over seeds (seeds in brackets), and steps until the "
        "criterion was first met (copy: batch loss < 10% of the memoryless baseline; adding: "
        "batch MSE < 0.01), median over the seeds that reached it.",
        "",
        headline(ok).to_markdown(index=False),
        "",
    ]
    if todo:
        lines += ["Not run yet (the grid is resumable at the same commit):", "", *todo, ""]
    if (RESULTS / "notes.md").exists():
        lines += ["## Reading", "", (RESULTS / "notes.md").read_text().strip(), ""]
    for task, runs in ok.groupby("task", sort=False):
        r = runs.iloc[0]
        lines += [f"## {task}", "",
                  f"T={r['T']:.0f}, hidden {r.hidden:.0f}, batch {r.batch:.0f}, {r.steps:.0f} "
                  f"steps, memoryless baseline {r.baseline:.4g}. Each row's overrides: `runs.csv`.",
                  "",
                  task_table(runs).to_markdown(index=False), ""]  # fmt: skip
        proj = projection_table(runs)
        if proj is not None:
            lines += ["Input projection (learned `Linear(input_dim, H)` before the layer) "
                      "against the raw input, same rows otherwise (test MSE, steps to MSE < 0.01):",
                      "", proj.to_markdown(index=False), ""]  # fmt: skip
        lines.append(f"![{task} curves]({plot_curves(task, runs, root, out).name})")
        flow = plot_gradflow(task, runs, root, out)
        lines += [f"![{task} gradient flow]({flow.name})" if flow else "", ""]
    lines += ["## Copy at T=1000", "", *copy1000(out), ""]
    lines += ["## Acceptance check: a reproducible grid that learns the copy task", ""]
    lines += [f"- [{'x' if held else ' '}] {what}" for what, held in check(df)]
    return "\n".join(lines) + "\n"


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=RESULTS / "runs.csv")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout that ran the grid")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--copy1000-from", type=Path, help="refresh results/copy1000/ from DIR")
    parser.add_argument("--check", action="store_true", help="only the acceptance check")
    ns = parser.parse_args(argv)
    df = pd.read_csv(ns.runs).drop_duplicates("run_id", keep="last")
    if (BUDGETS / f"{df.budget.iloc[0]}.yaml").exists():  # rows and tasks in the budget's order
        budget = load_budget(df.budget.iloc[0])
        rank = {k: i for i, k in enumerate([*budget["tasks"], *budget["variants"]])}
        df = df.sort_values(["task", "variant", "seed"], key=lambda c: c.map(rank).fillna(c))
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
    log = ns.runs.parent / "reproduce.log"
    (ns.out_dir / "RESULTS.md").write_text(render(df, ns.root, ns.out_dir, log))
    print(f"report: wrote {ns.out_dir / 'RESULTS.md'} ({len(df)} runs)")
    if ns.readme.exists() and update_readme(
        ns.readme, headline(df[df.status == "ok"]).to_markdown(index=False)
    ):
        print(f"report: updated the results table in {ns.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
