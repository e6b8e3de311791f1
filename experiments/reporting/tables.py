"""The tables of the report: per task, headline, input projection, per epoch; the acceptance
check. Pure pandas over ``runs.csv`` rows."""

from __future__ import annotations

import json
import math

import pandas as pd

__all__ = [
    "BEAT", "PER_ROW", "at_epoch", "check", "criterion_cell", "epoch_groups", "epoch_headline",
    "epoch_table", "headline", "hidden", "is_epoch_task", "markdown", "metric_name", "parse_curve",
    "pm", "projection_table", "task_table",
]  # fmt: skip


BEAT = 0.95  # "below the baseline": final val loss < 0.95 x baseline (a finite split scatters)


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
