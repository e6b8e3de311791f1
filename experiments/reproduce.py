"""The reproduction grid: (task x variant x seed), each run the ``seqnorm`` CLI's own objects.

A budget (``experiments/budgets/{cpu,paper}.yaml``) names tasks (a config in ``configs/`` plus
overrides) and variants (a row of the results table: layer, constraint, set-up, as overrides
of the CLI). Every run is ``seqnorm fit --config configs/<task>.yaml`` plus the budget's
overrides, built by :class:`seqnorm.cli.SeqnormCLI` in its own worker process with one thread.
Around the fit the worker probes the gradient flow (:mod:`seqnorm.probes`, a fixed batch of
validation samples, at initialisation and at the end) and tests the final weights and the
best-validation checkpoint (``trainer.test(ckpt_path="best")``).

Provenance: the worker records the commit of the checkout it imported ``seqnorm`` from and
whether that checkout was clean; a dirty checkout refuses to start unless ``--allow-dirty``.
Run the grid from a worktree of one commit so that later edits cannot change it::

    git worktree add ../wt_grid <commit> && cd ../wt_grid
    PYTHONPATH=$PWD nohup python experiments/reproduce.py --budget cpu \\
        --workers 2 >> experiments/results/reproduce.log 2>&1 &

On a SLURM cluster, ``--launcher slurm`` submits every unfinished run as one task of a job
array (submitit, the ``cluster`` extra; :class:`Cell`): each task runs the same worker and
appends its row under a lock; a preempted or timed-out task is requeued and resumes from its
``last.ckpt``. ``--launcher submitit-local`` runs that code path here (docs/results.md).

Resumable: a run with a row in ``runs.csv`` is done; kill the grid and start it again, and an
unfinished run resumes from its ``last.ckpt`` (written at every validation: every
``val_check_interval`` steps, or at the end of every epoch for epoch-based rows). Each run
writes ``runs/reproduce/<run_id>/``: ``cmd.txt``, ``train.log``,
``logs/version_*/metrics.csv``, ``checkpoints/``, ``probes.npz`` (``init``/``end``: log10
||dL/dh_t||, shape (layers, T)), ``clock.json`` (its wall and fit seconds summed over the
invocations that worked on it), ``verdict.json`` and ``result.json``. Paths in ``runs.csv``
are relative to the repository.

Epoch-based rows (``trainer.max_epochs``; validation once per epoch) with ``test_every_epoch``
also evaluate the test set after every validation (:class:`seqnorm.callbacks.EpochTest`), so
that a row reports both the test metric at its best validation epoch and the best test
metric over epochs (expRNN's MNIST protocol). ``runs.csv`` keeps every validation of a run in
``curve`` (JSON: ``epoch``, ``step``, ``val`` and ``test`` lists) for the report's figures.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = ROOT / "experiments" / "budgets"
DEFAULT_OUT = ROOT / "experiments" / "results" / "runs.csv"
DEFAULT_RUNS_DIR = ROOT / "runs" / "reproduce"
#: Columns of runs.csv, in order (every row has all of them, so that appending stays aligned).
FIELDS = (
    "run_id status error budget task variant label seed git_commit git_clean T hidden batch lr "
    "baseline steps val_loss_final val_loss_best val_metric_final val_metric_best "
    "test_loss_final test_metric_final test_loss_at_best_val test_metric_at_best_val metric "
    "steps_to_criterion criterion decay_rate_init grad_ratio_init decay_rate_end grad_ratio_end "
    "fit_time_s wall_time_s config overrides monitor run_dir "
    "task_name epochs best_val_epoch test_metric_best_over_epochs curve verdict invocations "
    "machine"
).split()
#: What decides a run's result: a change here makes the checkout dirty.
TRACKED = ["seqnorm", "configs", "experiments/*.py", "experiments/budgets", "pyproject.toml"]


# -- budgets -----------------------------------------------------------------------------------
def load_budget(name: str) -> dict[str, Any]:
    """Read a budget: ``cpu``/``paper`` (from ``experiments/budgets``) or a YAML path."""
    path = Path(name) if Path(name).suffix else BUDGETS / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in BUDGETS.glob("*.yaml"))
        raise SystemExit(f"reproduce: budget {name!r} not found (known: {known}, or a path)")
    budget = yaml.safe_load(path.read_text())
    for key in ("tasks", "variants"):
        if not budget.get(key):
            raise SystemExit(f"reproduce: budget {path} needs a non-empty {key!r}")
    budget.setdefault("name", path.stem)
    return budget


def expand(budget: dict[str, Any], runs_dir: Path) -> list[dict[str, Any]]:
    """The runs of a budget, seed-major (every row gets seed 0 before any gets seed 1)."""
    runs = []
    for task, spec in budget["tasks"].items():
        overrides = {**budget.get("overrides", {}), **spec.get("overrides", {})}
        steps, every = (
            overrides.get("trainer.max_steps"),
            overrides.get("trainer.val_check_interval"),
        )
        if isinstance(steps, int) and isinstance(every, int) and steps % every:
            raise SystemExit(
                f"reproduce: task {task}: trainer.max_steps ({steps}) must be a multiple of "
                f"trainer.val_check_interval ({every}), so that the last validation sees the "
                "final weights"
            )
        for name in spec.get("variants", list(budget["variants"])):
            if name not in budget["variants"]:
                raise SystemExit(f"reproduce: task {task} names unknown variant {name!r}")
            variant = budget["variants"][name]
            extra = (spec.get("variant_overrides") or {}).get(name, {})
            seeds = spec.get("seeds", budget.get("seeds", [0]))
            per_seed = (spec.get("seed_overrides") or {}).get(name, {})
            for seed in (spec.get("seeds_for") or {}).get(name, seeds):
                runs.append(
                    dict(
                        run_id=f"{task}_{name}_s{seed}",
                        budget=budget["name"],
                        task=task,
                        variant=name,
                        label=variant.get("label", name),
                        seed=int(seed),
                        config=(spec.get("variant_configs") or {}).get(name, spec["config"]),
                        overrides={
                            **overrides,
                            **variant.get("overrides", {}),
                            **extra,
                            **per_seed.get(seed, {}),
                        },  # fmt: skip
                        metric=spec.get("metric", "acc"),
                        monitor=spec.get("monitor", "val/loss"),
                        monitor_mode=spec.get("monitor_mode", "min"),
                        criterion=spec.get("criterion"),
                        test_every_epoch=bool(spec.get("test_every_epoch", False)),
                        probe_batch=int(budget.get("probe_batch", 32)),
                        run_dir=str(runs_dir / f"{task}_{name}_s{seed}"),
                    )
                )
    return sorted(runs, key=lambda r: r["seed"])  # stable: task and variant order kept


def apply_filters(runs: list[dict[str, Any]], only: list[str]) -> list[dict[str, Any]]:
    """Keep runs matching every ``key=value[,value...]`` filter."""
    keys = ("task", "variant", "seed", "run_id")
    for item in only:
        key, sep, values = item.partition("=")
        if not sep or key not in keys:
            raise SystemExit(
                f"reproduce: --only expects key=value with key in {keys}; got {item!r}"
            )
        runs = [r for r in runs if str(r[key]) in values.split(",")]
    return runs


def cli_args(run: dict[str, Any]) -> list[str]:
    """The CLI arguments (without ``fit``): the task config, the overrides, and this run's
    files: a CSV logger and two checkpoints per validation (``best`` by the monitor, first, so
    that ``trainer.test(ckpt_path="best")`` finds it; ``last`` for resume); with
    ``test_every_epoch``, an :class:`~seqnorm.callbacks.EpochTest` before them."""
    run_dir = Path(run["run_dir"])
    when = {"every_n_train_steps": 0, "every_n_epochs": 1, "save_on_train_epoch_end": False}
    ckpt = {"dirpath": str(run_dir / "checkpoints"), **when}
    best = {**ckpt, "filename": "best", "monitor": run["monitor"], "mode": run["monitor_mode"]}
    last = {**ckpt, "filename": "latest", "save_last": True}
    callbacks: list[dict[str, Any]] = [
        {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint", "init_args": a}
        for a in (best, last)
    ]
    if run.get("test_every_epoch"):  # logged before the checkpoints of the same validation
        callbacks.insert(0, {"class_path": "seqnorm.callbacks.EpochTest"})
    logger = {
        "class_path": "pytorch_lightning.loggers.CSVLogger",
        "init_args": {"save_dir": str(run_dir), "name": "logs"},
    }
    args = ["--config", str(ROOT / run["config"]), "--seed_everything", str(run["seed"])]
    for key, val in run["overrides"].items():
        args += [f"--{key}", val if isinstance(val, str) else json.dumps(val)]
    args += ["--trainer.default_root_dir", str(run_dir), "--trainer.logger", json.dumps(logger)]
    return args + [
        "--trainer.callbacks",
        json.dumps(callbacks),
        "--trainer.enable_progress_bar",
        "false",
    ]


# -- provenance ----------------------------------------------------------------------------------
def git_state(root: Path = ROOT) -> tuple[str, bool]:
    """``(commit, clean)`` of the checkout at ``root``; clean: no change under :data:`TRACKED`."""
    git = ["git", "-C", str(root)]
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
    status = subprocess.run(
        [*git, "status", "--porcelain", "--", *TRACKED], capture_output=True, text=True
    )
    if head.returncode or status.returncode:
        return "unknown", False
    return head.stdout.strip(), not status.stdout.strip()


# -- the worker (one run, one process, one thread) -------------------------------------------
def read_metrics(run_dir: Path) -> pd.DataFrame:
    """Every CSVLogger row of a run, one row per step (a resumed run's later log wins)."""
    files = sorted(
        (run_dir / "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:])
    )
    if not files:
        return pd.DataFrame(columns=["step"])
    df = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    return df.groupby("step").last().reset_index()  # last non-null value per column and step


def steps_to_criterion(metrics: pd.DataFrame, crit: dict[str, Any] | None) -> int | None:
    """Steps taken until ``crit['metric']`` first falls below ``threshold`` or below
    ``baseline_fraction`` x the logged memoryless baseline (``train/baseline``)."""
    if not crit or crit["metric"] not in metrics:
        return None
    threshold = crit.get("threshold")
    if threshold is None:
        if "train/baseline" not in metrics or metrics["train/baseline"].isna().all():
            return None
        threshold = crit["baseline_fraction"] * metrics["train/baseline"].dropna().iloc[0]
    below = metrics.loc[metrics[crit["metric"]] < threshold, "step"]
    return int(below.iloc[0]) + 1 if len(below) else None  # Lightning logs 0-based steps


def _probe(model, batch):  # noqa: ANN001, ANN202
    """log10 ||dL/dh_t|| (layers, T) on ``batch`` and its summary, in eval mode."""
    import torch

    from seqnorm import probes
    from seqnorm.utils import eval_mode

    with eval_mode(model), torch.enable_grad():
        norms = probes.hidden_grad_norms(model, batch, model.loss)
    summary = probes.summarize(norms)
    return probes.log10_norms(norms).cpu().numpy(), summary


def curve(metrics: pd.DataFrame, metric: str) -> dict[str, list]:
    """Every validation of a run: ``epoch`` (the 1-based epoch it ran in: for validation at
    the end of each epoch, the epochs completed), ``step`` (1-based), ``val``
    (``val/<metric>``) and ``test`` (``test_epoch/<metric>``, ``None`` where the test set was
    not evaluated)."""
    key = f"val/{metric}"
    if key not in metrics:
        return {"epoch": [], "step": [], "val": [], "test": []}
    rows = metrics[metrics[key].notna()]
    test = rows.get(f"test_epoch/{metric}", pd.Series(None, index=rows.index, dtype=float))
    epochs = rows["epoch"] if "epoch" in rows else pd.Series(float("nan"), index=rows.index)
    return {
        "epoch": [None if pd.isna(e) else int(e) + 1 for e in epochs],
        "step": [int(s) + 1 for s in rows["step"]],
        "val": [float(v) for v in rows[key]],
        "test": [None if pd.isna(t) else float(t) for t in test],
    }


def higher_is_better(metric: str) -> bool:
    return metric in ("acc", "symbol_acc")


class Clock:
    """A run's wall and fit seconds summed over every invocation that worked on it.

    Kept in ``clock.json`` in the run directory and rewritten every ``every_s`` seconds by a
    daemon thread, so that a worker killed with its grid leaves its time behind (up to
    ``every_s`` of it lost) and the resumed run adds to it.
    """

    def __init__(self, path: Path, every_s: float = 10.0) -> None:
        self.path = path
        old = json.loads(path.read_text()) if path.exists() else {}
        self._wall0, self._fit0 = float(old.get("wall_s", 0.0)), float(old.get("fit_s", 0.0))
        self.invocations = int(old.get("invocations", 0)) + 1
        self._t0, self._fit_start, self._fit_s = time.time(), None, 0.0
        self._every = every_s
        self._lock = threading.Lock()  # the heartbeat and the final save share one temp file
        threading.Thread(target=self._beat, daemon=True).start()

    def fit_started(self) -> None:
        self._fit_start = time.time()

    def fit_ended(self) -> None:
        if self._fit_start is not None:
            self._fit_s += time.time() - self._fit_start
            self._fit_start = None

    def totals(self) -> dict[str, float]:
        fitting = time.time() - self._fit_start if self._fit_start is not None else 0.0
        return {
            "wall_s": self._wall0 + time.time() - self._t0,
            "fit_s": self._fit0 + self._fit_s + fitting,
            "invocations": self.invocations,
        }

    def save(self) -> dict[str, float]:
        with self._lock:
            totals = self.totals()
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(totals))
            tmp.replace(self.path)
        return totals

    def _beat(self) -> None:
        while True:
            self.save()
            time.sleep(self._every)


def _work(run: dict[str, Any], clock: Clock) -> dict[str, Any]:
    import numpy as np
    import pytorch_lightning as pl
    import torch
    from bench_speed import cpu_features, cpu_model

    import seqnorm
    from seqnorm.cli import SeqnormCLI
    from seqnorm.model import SeqModel

    torch.set_num_threads(1)
    run_dir = Path(run["run_dir"])
    commit, clean = git_state(Path(seqnorm.__file__).resolve().parents[1])
    where = Path(seqnorm.__file__).resolve()
    if not where.is_relative_to(ROOT):
        raise RuntimeError(f"seqnorm imported from {where}, not from this checkout {ROOT}")
    args = cli_args(run)
    (run_dir / "cmd.txt").write_text("seqnorm fit " + " ".join(map(_quote, args)) + "\n")
    cli = SeqnormCLI(SeqModel, pl.LightningDataModule, subclass_mode_data=True,
                     save_config_callback=None, args=args, run=False)  # fmt: skip
    model, dm, trainer, cfg = cli.model, cli.datamodule, cli.trainer, cli.config
    res: dict[str, Any] = dict(git_commit=commit, git_clean=clean, status="ok", error="")
    T = cfg.get("data.init_args.seq_len") or dm.input_len  # copy: the delay; MNIST: 784
    res.update(T=T, hidden=cfg["model.hidden_size"])
    res.update(batch=dm.batch_size, baseline=getattr(dm, "baseline", None))
    res["task_name"] = getattr(dm, "task_name", type(dm).__name__)
    res["machine"] = " ".join(f"{cpu_model()}; {cpu_features()}".split())
    res["lr"] = (cfg.get("model.optimizer.init_args") or {}).get("lr")

    dm.setup("fit")
    batch = next(iter(torch.utils.data.DataLoader(dm.val_dataloader().dataset, run["probe_batch"])))
    curves = {"init": None, "end": None}
    curves["init"], init = _probe(model, batch)
    last = sorted((run_dir / "checkpoints").glob("last*.ckpt"), key=os.path.getmtime)
    clock.fit_started()
    try:
        trainer.fit(model, datamodule=dm, ckpt_path=str(last[-1]) if last else None)
    except Exception as err:  # a NaN loss, a bad config: record it, keep the grid going
        res.update(status="failed", error=f"{type(err).__name__}: {err}"[:300])
    clock.fit_ended()
    res["steps"], res["epochs"] = trainer.global_step, trainer.current_epoch
    max_steps = cfg.get("trainer.max_steps") or -1
    max_epochs = cfg.get("trainer.max_epochs") or -1
    if res["status"] == "ok" and 0 < max_steps != trainer.global_step:
        res.update(status="failed", error=f"stopped at step {trainer.global_step}")
    elif res["status"] == "ok" and max_steps <= 0 < max_epochs != trainer.current_epoch:
        res.update(status="failed", error=f"stopped after epoch {trainer.current_epoch}")
    if res["status"] == "ok":
        cli.after_fit()  # verdict.json, as `seqnorm fit` writes it
        res["verdict"] = cli.verdict_line
        print(cli.verdict_line, flush=True)
    curves["end"], end = _probe(model, batch)
    np.savez(run_dir / "probes.npz", **{k: v for k, v in curves.items() if v is not None})
    res.update(decay_rate_init=init["decay_rate"], grad_ratio_init=init["grad_ratio"],
               decay_rate_end=end["decay_rate"], grad_ratio_end=end["grad_ratio"])  # fmt: skip

    metric, m = run["metric"], read_metrics(run_dir)
    for split in ("val/loss", f"val/{metric}"):
        if split in m and m[split].notna().any():
            vals = m[split].dropna()
            best = vals.max() if higher_is_better(metric) and split != "val/loss" else vals.min()
            key = "val_loss" if split == "val/loss" else "val_metric"
            res.update({f"{key}_final": vals.iloc[-1], f"{key}_best": best})
    res["steps_to_criterion"] = steps_to_criterion(m, run["criterion"])
    res["curve"] = json.dumps(c := curve(m, metric))
    best = max if higher_is_better(metric) else min
    if c["val"] and max_steps <= 0:  # epoch-based rows
        res["best_val_epoch"] = c["epoch"][c["val"].index(best(c["val"]))]
    if tests := [t for t in c["test"] if t is not None]:
        res["test_metric_best_over_epochs"] = best(tests)
    if res["status"] == "ok":
        trainer.logger = None  # the test results go into runs.csv, not into the run's log
        for tag, ckpt in (("final", None), ("at_best_val", "best")):
            out = trainer.test(model, datamodule=dm, ckpt_path=ckpt, verbose=False)[0]
            res.update({f"test_loss_{tag}": out.get("test/loss"),
                        f"test_metric_{tag}": out.get(f"test/{metric}")})  # fmt: skip
    return res


def worker(spec: Path) -> int:
    """Train, probe and test one run; write ``result.json`` beside ``spec``."""
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    # SLURM's preemption signal may reach the whole job: the cell answers it (Cell.checkpoint)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    run = json.loads(spec.read_text())
    clock = Clock(spec.with_name("clock.json"))
    res = _work(run, clock)
    totals = clock.save()  # summed over the invocations (a resumed run continues the count)
    res.update(wall_time_s=totals["wall_s"], fit_time_s=totals["fit_s"],
               invocations=totals["invocations"])  # fmt: skip
    tmp = spec.with_name("result.json.tmp")
    tmp.write_text(json.dumps(res, indent=1, default=float))
    tmp.replace(spec.with_name("result.json"))
    return 0


def _watch_parent(parent: int) -> None:
    """Exit when the grid dies, so that a killed grid leaves no orphan training behind."""
    while os.getppid() == parent:
        time.sleep(2)
    os._exit(3)


def _quote(arg: str) -> str:
    return f"'{arg}'" if any(c in arg for c in " {}[]\"'") else arg


# -- the grid ----------------------------------------------------------------------------------
def _rel(path: str) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def header(out: Path) -> list[str]:
    """The columns to append rows to ``out`` with: :data:`FIELDS`, after rewriting a
    ``runs.csv`` written before a column was added (its rows get the new columns empty)."""
    if not out.exists():
        return list(FIELDS)
    old = pd.read_csv(out)
    columns = [*FIELDS, *(c for c in old.columns if c not in FIELDS)]
    if list(old.columns) != columns:
        tmp = out.with_name(out.name + ".tmp")
        old.reindex(columns=columns).to_csv(tmp, index=False)
        tmp.replace(out)
    return columns


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` (``<out>.lock``, ``flock``): the threads of the local
    launcher and the tasks of a job array append their rows one at a time."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_name(out.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def finished(out: Path) -> set[str]:
    """The run ids with a row in ``out``."""
    return set(pd.read_csv(out, usecols=["run_id"])["run_id"]) if out.exists() else set()


def append_row(run: dict[str, Any], out: Path, t0: float | None = None) -> dict[str, Any]:
    """Append the row of a run whose worker has ended (its ``result.json``, or a failed row
    that points at its log) to ``out``, under :func:`locked`; a run that already has a row
    (a cell that ran twice) is not written again. Returns the worker's result."""
    run_dir = Path(run["run_dir"])
    result = run_dir / "result.json"
    res = json.loads(result.read_text()) if result.exists() else {
        "status": "failed", "error": f"worker died; see {_rel(run_dir)}/train.log"}  # fmt: skip
    skip = ("overrides", "criterion", "probe_batch", "test_every_epoch")
    row = {k: v for k, v in run.items() if k not in skip}
    row.update(res, run_dir=_rel(run["run_dir"]), overrides=json.dumps(run["overrides"]))
    row["criterion"] = json.dumps(run["criterion"])
    with locked(out):
        if run["run_id"] in finished(out):
            _say(f"{run['run_id']} already has a row in {out.name}: not written again")
            return res
        columns = header(out)
        pd.DataFrame([row], columns=columns).to_csv(
            out, mode="a", header=not out.exists(), index=False
        )
    elapsed = f" ({(time.time() - t0) / 60:.1f} min elapsed)" if t0 is not None else ""
    _say(f"done {run['run_id']} [{res['status']}] in {res.get('wall_time_s', 0):.0f} s{elapsed}")
    return res


def run_cell(
    run: dict[str, Any],
    out: Path,
    t0: float | None = None,
    started: Callable[[subprocess.Popen], None] | None = None,
) -> dict[str, Any]:
    """One cell of the grid, for every launcher: train it in a worker process (unless its
    ``result.json`` is there: its worker finished after the grid was killed), then append its
    row. ``started`` is handed the worker's process (the submitit cell stops it on preemption).
    """
    run_dir = Path(run["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "result.json").exists():
        (run_dir / "spec.json").write_text(json.dumps(run, indent=1))
        _say(f"start {run['run_id']}")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}  # fmt: skip
        cmd = [sys.executable, __file__, "--worker", str(run_dir / "spec.json")]
        with open(run_dir / "train.log", "a") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            if started is not None:
                started(proc)
            while proc.poll() is None:  # not wait(): a signal handler may stop the worker
                time.sleep(0.5)
    return append_row(run, out, t0)


def run_grid(runs: list[dict[str, Any]], out: Path, workers: int) -> int:
    """Run every run of ``runs`` without a row in ``out``, ``workers`` at a time."""
    header(out)
    done = finished(out)
    todo = [r for r in runs if r["run_id"] not in done]
    _say(f"{len(runs)} runs, {len(runs) - len(todo)} finished, {len(todo)} to run")
    t0 = time.time()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda run: run_cell(run, out, t0), todo))
    return len(todo)


# -- the grid through submitit (SLURM job arrays) -----------------------------------------------
class Cell:
    """One cell as a submitit job: :func:`run_cell` in the job's process.

    Preemption and time limits: SLURM signals the job (``USR2``, ``signal_delay_s`` before the
    limit, or when preempted); submitit calls :meth:`checkpoint`, which stops the worker
    (``SIGTERM``: Lightning ends the step it is in) and hands submitit the same cell to requeue.
    The requeued cell's worker resumes from the run's ``last.ckpt`` (written at every
    validation), as a restarted local grid does.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self._worker: subprocess.Popen | None = None

    def __call__(self, run: dict[str, Any]) -> str:
        return run_cell(run, self.out, started=self._keep)["status"]

    def _keep(self, proc: subprocess.Popen) -> None:
        self._worker = proc

    def checkpoint(self, run: dict[str, Any]) -> Any:
        """submitit's checkpoint hook: stop the worker, requeue the cell."""
        from submitit.helpers import DelayedSubmission

        worker, deadline = self._worker, time.time() + 60
        if worker is not None and worker.poll() is None:
            worker.terminate()
            while worker.poll() is None and time.time() < deadline:
                time.sleep(0.2)
            if worker.poll() is None:
                worker.kill()
        return DelayedSubmission(Cell(self.out), run)


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise SystemExit(
            "reproduce: this launcher needs submitit: pip install -e '.[cluster]' "
            "(or pip install submitit)"
        ) from None
    return submitit


def make_executor(ns: argparse.Namespace) -> Any:
    """submitit's executor for ``--launcher slurm`` (one array task per cell, one node each)
    or ``submitit-local`` (the same cells as processes on this machine)."""
    if ns.launcher == "slurm" and shutil.which("sbatch") is None:
        raise SystemExit(
            "reproduce: --launcher slurm needs SLURM's sbatch on the PATH and found none "
            "(run it on the cluster's login node, or use --launcher local)"
        )
    submitit = _submitit()
    cluster = "slurm" if ns.launcher == "slurm" else "local"
    folder = ns.runs_dir.resolve() / "submitit" / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params: dict[str, Any] = dict(
        name="seqnorm-grid", timeout_min=ns.time_min, cpus_per_task=ns.cpus_per_task,
        gpus_per_node=ns.gpus_per_task, tasks_per_node=1, nodes=1,
    )  # fmt: skip
    if cluster == "slurm":
        params.update(slurm_array_parallelism=ns.array_parallelism)
        if ns.partition:
            params.update(slurm_partition=ns.partition)
        if ns.mem_gb:
            params.update(mem_gb=ns.mem_gb)
    executor.update_parameters(**params)
    return executor


def submit(runs: list[dict[str, Any]], out: Path, executor: Any) -> list[Any]:
    """Submit every run of ``runs`` without a row in ``out`` as one element of a job array of
    ``executor``; the cells append their own rows. Returns the jobs."""
    import cloudpickle

    header(out)
    done = finished(out)
    todo = [r for r in runs if r["run_id"] not in done]
    _say(f"{len(runs)} runs, {len(runs) - len(todo)} finished, {len(todo)} to submit")
    if not todo:
        return []
    if __name__ != "__main__":  # imported (tests): the job process may not find this module
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    jobs = executor.map_array(Cell(out), todo)
    _say(f"submitted {len(jobs)} cells: job {jobs[0].job_id.split('_')[0]}; "
         f"logs in {_rel(str(jobs[0].paths.folder.parent))}")  # fmt: skip
    return jobs


def _say(message: str) -> None:
    print(f"reproduce [{time.strftime('%H:%M:%S')}]: {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", default="cpu", help="cpu | paper | path to a budget YAML")
    parser.add_argument("--only", action="append", default=[], help="filter, e.g. task=copy")
    parser.add_argument("--workers", type=int, default=2, help="parallel runs (one thread each)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the runs.csv to append to")
    parser.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR, help="per-run dirs")
    parser.add_argument("--allow-dirty", action="store_true", help="run from a dirty checkout")
    parser.add_argument(
        "--launcher",
        choices=("local", "slurm", "submitit-local"),
        default="local",
        help="local: --workers processes here; slurm: one SLURM job array task per unfinished "
        "run (submitit); submitit-local: the slurm code path as processes here (all at once)",
    )
    slurm = parser.add_argument_group("slurm (and submitit-local)")
    slurm.add_argument("--partition", help="SLURM partition (default: the cluster's)")
    slurm.add_argument("--time-min", type=int, default=240, help="time limit per run, minutes")
    slurm.add_argument("--cpus-per-task", type=int, default=1, help="CPUs per run")
    slurm.add_argument("--gpus-per-task", type=int, default=0, help="GPUs per run")
    slurm.add_argument("--mem-gb", type=float, help="memory per run, GB (default: the cluster's)")
    slurm.add_argument("--array-parallelism", type=int, default=64, help="runs at once")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if ns.worker:
        return worker(ns.worker)
    if ns.workers < 1:
        parser.error(f"--workers must be >= 1, got {ns.workers}")
    runs = apply_filters(expand(load_budget(ns.budget), ns.runs_dir.resolve()), ns.only)
    if ns.dry_run:
        done = set(pd.read_csv(ns.out)["run_id"]) if ns.out.exists() else set()
        for run in runs:
            mark = "done" if run["run_id"] in done else "todo"
            print(f"{mark}  {run['run_id']:40s} seqnorm fit {' '.join(map(_quote, cli_args(run)))}")
        print(f"{len(runs)} runs, {sum(r['run_id'] in done for r in runs)} finished")
        return 0
    commit, clean = git_state()
    if not clean and not ns.allow_dirty:
        raise SystemExit(
            f"reproduce: {ROOT} has uncommitted changes under {' '.join(TRACKED)} (commit "
            f"{commit[:12]}); commit them, run from a clean worktree, or pass --allow-dirty"
        )
    if ns.launcher == "local":
        run_grid(runs, ns.out.resolve(), ns.workers)
        return 0
    jobs = submit(runs, ns.out.resolve(), make_executor(ns))
    if ns.launcher == "submitit-local":  # its processes are this one's children: wait
        for job in jobs:
            job.result()
    elif jobs:
        _say("each task appends its row to the runs.csv when it ends; a preempted or timed-out "
             "task is requeued and resumes from its last.ckpt; squeue --me to follow")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
