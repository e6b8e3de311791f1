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

Resumable: a run with a row in ``runs.csv`` is done; kill the grid and start it again, and an
unfinished run resumes from its ``last.ckpt``. Each run writes ``runs/reproduce/<run_id>/``:
``cmd.txt``, ``train.log``, ``logs/version_*/metrics.csv``, ``checkpoints/``, ``probes.npz``
(``init``/``end``: log10 ||dL/dh_t||, shape (layers, T)) and ``result.json``. Paths in
``runs.csv`` are relative to the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
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
    "fit_time_s wall_time_s config overrides monitor run_dir"
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
            for seed in (spec.get("seeds_for") or {}).get(name, seeds):
                runs.append(
                    dict(
                        run_id=f"{task}_{name}_s{seed}",
                        budget=budget["name"],
                        task=task,
                        variant=name,
                        label=variant.get("label", name),
                        seed=int(seed),
                        config=spec["config"],
                        overrides={**overrides, **variant.get("overrides", {}), **extra},
                        metric=spec.get("metric", "acc"),
                        monitor=spec.get("monitor", "val/loss"),
                        monitor_mode=spec.get("monitor_mode", "min"),
                        criterion=spec.get("criterion"),
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
    that ``trainer.test(ckpt_path="best")`` finds it; ``last`` for resume)."""
    run_dir = Path(run["run_dir"])
    when = {"every_n_train_steps": 0, "every_n_epochs": 1, "save_on_train_epoch_end": False}
    ckpt = {"dirpath": str(run_dir / "checkpoints"), **when}
    best = {**ckpt, "filename": "best", "monitor": run["monitor"], "mode": run["monitor_mode"]}
    last = {**ckpt, "filename": "latest", "save_last": True}
    callbacks = [
        {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint", "init_args": a}
        for a in (best, last)
    ]
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


def _work(run: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import pytorch_lightning as pl
    import torch

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
    res.update(T=cfg["data.init_args.seq_len"], hidden=cfg["model.hidden_size"])
    res.update(batch=dm.batch_size, baseline=getattr(dm, "baseline", None))
    res["lr"] = (cfg.get("model.optimizer.init_args") or {}).get("lr")

    dm.setup("fit")
    batch = next(iter(torch.utils.data.DataLoader(dm.val_dataloader().dataset, run["probe_batch"])))
    curves = {"init": None, "end": None}
    curves["init"], init = _probe(model, batch)
    last = sorted((run_dir / "checkpoints").glob("last*.ckpt"), key=os.path.getmtime)
    t0 = time.time()
    try:
        trainer.fit(model, datamodule=dm, ckpt_path=str(last[-1]) if last else None)
    except Exception as err:  # a NaN loss, a bad config: record it, keep the grid going
        res.update(status="failed", error=f"{type(err).__name__}: {err}"[:300])
    res["fit_time_s"] = time.time() - t0
    res["steps"] = trainer.global_step
    max_steps = cfg.get("trainer.max_steps") or -1
    if res["status"] == "ok" and 0 < max_steps != trainer.global_step:
        res.update(status="failed", error=f"stopped at step {trainer.global_step}")
    curves["end"], end = _probe(model, batch)
    np.savez(run_dir / "probes.npz", **{k: v for k, v in curves.items() if v is not None})
    res.update(decay_rate_init=init["decay_rate"], grad_ratio_init=init["grad_ratio"],
               decay_rate_end=end["decay_rate"], grad_ratio_end=end["grad_ratio"])  # fmt: skip

    metric, m = run["metric"], read_metrics(run_dir)
    for split in ("val/loss", f"val/{metric}"):
        if split in m and m[split].notna().any():
            vals = m[split].dropna()
            best = (
                vals.max()
                if metric in ("acc", "symbol_acc") and split != "val/loss"
                else vals.min()
            )
            key = "val_loss" if split == "val/loss" else "val_metric"
            res.update({f"{key}_final": vals.iloc[-1], f"{key}_best": best})
    res["steps_to_criterion"] = steps_to_criterion(m, run["criterion"])
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
    run = json.loads(spec.read_text())
    t0 = time.time()
    res = _work(run)
    res["wall_time_s"] = time.time() - t0
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


def run_grid(runs: list[dict[str, Any]], out: Path, workers: int) -> int:
    """Run every run of ``runs`` without a row in ``out``, ``workers`` at a time."""
    done = set(pd.read_csv(out)["run_id"]) if out.exists() else set()
    todo = [r for r in runs if r["run_id"] not in done]
    _say(f"{len(runs)} runs, {len(runs) - len(todo)} finished, {len(todo)} to run")
    lock, t0 = threading.Lock(), time.time()

    def one(run: dict[str, Any]) -> None:
        run_dir = Path(run["run_dir"])
        run_dir.mkdir(parents=True, exist_ok=True)
        result = run_dir / "result.json"
        if not result.exists():  # else its worker finished after the grid was killed
            (run_dir / "spec.json").write_text(json.dumps(run, indent=1))
            _say(f"start {run['run_id']}")
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                   "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}  # fmt: skip
            with open(run_dir / "train.log", "a") as log:
                subprocess.run([sys.executable, __file__, "--worker", str(run_dir / "spec.json")],
                               cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        res = json.loads(result.read_text()) if result.exists() else {
            "status": "failed", "error": f"worker died; see {_rel(run_dir)}/train.log"}  # fmt: skip
        row = {k: v for k, v in run.items() if k not in ("overrides", "criterion", "probe_batch")}
        row.update(res, run_dir=_rel(run["run_dir"]), overrides=json.dumps(run["overrides"]))
        row["criterion"] = json.dumps(run["criterion"])
        with lock:
            out.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame([row], columns=FIELDS).to_csv(
                out, mode="a", header=not out.exists(), index=False
            )
            _say(f"done {run['run_id']} [{res['status']}] in {res.get('wall_time_s', 0):.0f} s "
                 f"({(time.time() - t0) / 60:.1f} min elapsed)")  # fmt: skip

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, todo))
    return len(todo)


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
    run_grid(runs, ns.out.resolve(), ns.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
