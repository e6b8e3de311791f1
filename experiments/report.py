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
This file is the command and the RESULTS.md document; its pieces are in ``reporting/``: where a
run's files are (``archive``), the tables and the acceptance check (``tables``), the figures
(``figures``) and the published per-epoch numbers (``literature``).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import re
import shutil
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reporting.archive import Roots, archive_runs  # noqa: E402
from reporting.figures import (  # noqa: E402
    COPY1000,
    copy1000,
    figure_name,
    kept,
    plot_curves,
    plot_epoch_curves,
    plot_gradflow,
    plot_gradflow_map,
)
from reporting.literature import LITERATURE  # noqa: E402
from reporting.tables import (  # noqa: E402
    check,
    epoch_table,
    headline,
    hidden,
    is_epoch_task,
    markdown,
    projection_table,
    task_table,
)
from reproduce import BUDGETS, ROOT, expand, load_budget  # noqa: E402

RESULTS = ROOT / "experiments" / "results"
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


# -- tables ----------------------------------------------------------------------------------


# -- epoch-based tasks (MNIST) ---------------------------------------------------------------


# -- figures ---------------------------------------------------------------------------------


# -- the acceptance check and the document ---------------------------------------------------


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
