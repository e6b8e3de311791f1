"""Where a grid run's files are: the checkout that ran it, or the committed archive of the small
files of every finished run (``experiments/results/runs/<run_id>/``)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

__all__ = ["ARCHIVED", "Roots", "archive_runs", "checkout_dir", "locate", "probe_files"]


Roots = Sequence[Path]  # the checkouts that ran the grid's budgets, looked in in turn


ARCHIVED = ("probes.npz", "verdict.json", "result.json", "clock.json")  # with the CSV logs


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
