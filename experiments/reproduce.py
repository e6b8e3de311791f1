"""The reproduction grid: (layer x constraint x task x seed) through the ``seqnorm`` CLI.

Each run is ``seqnorm fit --config configs/<task>.yaml`` plus the overrides of a budget file
(``experiments/budgets/{cpu,paper}.yaml``), executed by :func:`seqnorm.cli.main` in its own
worker process with one thread (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``). Around
the fit the worker measures the gradient flow with :mod:`seqnorm.probes` on a fixed batch of
validation samples (at initialisation, and again with the final weights), and tests the final
and the best-validation checkpoints. The parent process alone appends one row per run to
``runs.csv`` (under an ``fcntl`` lock, one ``write`` + ``fsync`` per row).

Resumable: a run is finished when its ``run_id`` has a row in ``runs.csv`` (failed runs too,
with ``status=failed``; ``--retry-failed`` runs them again). Kill this script and start it
again: finished runs are skipped, a run whose worker already wrote ``result.json`` is
recorded without training again, and an unfinished run resumes from its ``last.ckpt``
(``--ckpt_path last``).

    .venv/bin/python experiments/reproduce.py --budget cpu --dry-run        # list the runs
    nohup .venv/bin/python experiments/reproduce.py --budget cpu --workers 2 \\
        > experiments/results/reproduce.log 2>&1 &
    .venv/bin/python experiments/reproduce.py --budget cpu --only task=copy --only seed=0
    .venv/bin/python experiments/report.py                                  # RESULTS.md

Each run writes ``<runs-dir>/<run_id>/``: ``cmd.txt`` (the exact CLI arguments),
``train.log``, ``logs/version_*/metrics.csv`` (CSVLogger), ``checkpoints/{best,last,latest}.ckpt``,
``probes.npz`` (``init``/``end``: log10 ||dL/dh_t||, shape (layers, T)) and ``result.json``.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import hashlib
import io
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = Path(__file__).resolve().parent / "budgets"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "runs.csv"
DEFAULT_RUNS_DIR = ROOT / "runs" / "reproduce"

#: Columns of runs.csv, in order.
FIELDS = [
    "run_id",
    "status",
    "budget",
    "task",
    "layer",
    "constraint",
    "seed",
    "T",
    "seq_len",
    "hidden",
    "batch",
    "lr",
    "steps",
    "epochs",
    "metric",
    "baseline",
    "val_loss_final",
    "val_loss_best",
    "val_metric_final",
    "val_metric_best",
    "best_val_step",
    "test_loss_final",
    "test_metric_final",
    "test_loss_at_best_val",
    "test_metric_at_best_val",
    "criterion",
    "steps_to_criterion",
    "decay_rate_init",
    "grad_ratio_init",
    "decay_rate_end",
    "grad_ratio_end",
    "fit_time_s",
    "wall_time_s",
    "config_hash",
    "git_commit",
    "run_dir",
    "error",
]


# -- budgets and runs ------------------------------------------------------------------------
@dataclass
class Run:
    """One cell of the grid: what to train and where its files go."""

    run_id: str
    budget: str
    task: str
    layer: str
    constraint: str
    seed: int
    config: str
    overrides: dict[str, Any]
    metric: str
    monitor: str
    monitor_mode: str
    criterion: dict[str, Any] | None
    probe_batch: int
    run_dir: str
    cli_extra: list[str] = field(default_factory=list)


def load_budget(name: str) -> dict[str, Any]:
    """Read a budget: ``cpu``/``paper`` (from ``experiments/budgets``) or a YAML path."""
    path = Path(name)
    if not path.suffix:
        path = BUDGETS / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in BUDGETS.glob("*.yaml"))
        raise SystemExit(f"reproduce: budget {name!r} not found (known: {known}, or a path)")
    budget = yaml.safe_load(path.read_text())
    for key in ("tasks", "layers", "constraints"):
        if not budget.get(key):
            raise SystemExit(f"reproduce: budget {path} needs a non-empty {key!r}")
    budget.setdefault("name", path.stem)
    return budget


def expand(budget: dict[str, Any], runs_dir: Path) -> list[Run]:
    """The runs of a budget, in execution order: task by task, seed by seed, constraint."""
    runs = []
    common = budget.get("overrides", {}) or {}
    for task, spec in budget["tasks"].items():
        overrides = {**common, **(spec.get("overrides") or {})}
        steps, interval = (
            overrides.get("trainer.max_steps"),
            overrides.get("trainer.val_check_interval"),
        )
        if isinstance(steps, int) and isinstance(interval, int) and steps % interval:
            raise SystemExit(
                f"reproduce: task {task}: trainer.max_steps ({steps}) must be a multiple of "
                f"trainer.val_check_interval ({interval}) so the last validation sees the "
                "final weights"
            )
        layers = spec.get("layers", budget["layers"])
        constraints = spec.get("constraints", budget["constraints"])
        seeds = spec.get("seeds", budget.get("seeds", [0]))
        for seed, layer, constraint in itertools.product(seeds, layers, constraints):
            run_id = f"{task}_{layer}_{constraint}_s{seed}"
            runs.append(
                Run(
                    run_id=run_id,
                    budget=budget["name"],
                    task=task,
                    layer=layer,
                    constraint=constraint,
                    seed=int(seed),
                    config=spec["config"],
                    overrides=overrides,
                    metric=spec.get("metric", "acc"),
                    monitor=spec.get("monitor", "val/loss"),
                    monitor_mode=spec.get("monitor_mode", "min"),
                    criterion=spec.get("criterion"),
                    probe_batch=int(budget.get("probe_batch", 32)),
                    run_dir=str(runs_dir / run_id),
                )
            )
    return runs


def apply_filters(runs: list[Run], only: list[str]) -> list[Run]:
    """Keep runs matching every ``key=value[,value...]`` filter (task, layer, constraint, seed)."""
    for item in only:
        key, sep, values = item.partition("=")
        if not sep or key not in ("task", "layer", "constraint", "seed", "run_id"):
            raise SystemExit(
                f"reproduce: --only expects key=value with key in task, layer, constraint, "
                f"seed, run_id; got {item!r}"
            )
        allowed = set(values.split(","))
        runs = [r for r in runs if str(getattr(r, key)) in allowed]
    return runs


def cli_args(run: Run) -> list[str]:
    """The CLI arguments (without the ``fit`` subcommand) that train ``run``."""
    run_dir = Path(run.run_dir)
    logger = {
        "class_path": "pytorch_lightning.loggers.CSVLogger",
        "init_args": {"save_dir": str(run_dir), "name": "logs"},
    }
    # Checkpoints at every validation (the task configs save every N train steps instead):
    # best.ckpt by the monitored metric, and last.ckpt (beside the rolling latest.ckpt:
    # Lightning writes last.ckpt only when its callback saves a file) for resume and for
    # the final weights.
    when = {
        "every_n_train_steps": 0,
        "every_n_epochs": 1,
        "train_time_interval": None,
        "save_on_train_epoch_end": False,
    }
    ckpt_dir = str(run_dir / "checkpoints")
    best = {"dirpath": ckpt_dir, "filename": "best", "monitor": run.monitor, **when}
    best.update(mode=run.monitor_mode, save_top_k=1, save_last=False)
    latest = {"dirpath": ckpt_dir, "filename": "latest", "monitor": None, **when}
    latest.update(mode="min", save_top_k=1, save_last=True)
    callbacks = [
        {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint", "init_args": init}
        for init in (best, latest)
    ]
    args = ["--config", str(ROOT / run.config)]
    args += ["--seed_everything", str(run.seed), "--model.cell", run.layer]
    args += ["--model.constraint", run.constraint]
    for key, val in run.overrides.items():
        args += [f"--{key}", val if isinstance(val, str) else json.dumps(val)]
    args += ["--trainer.default_root_dir", str(run_dir)]
    args += ["--trainer.logger", json.dumps(logger)]
    args += ["--trainer.callbacks", json.dumps(callbacks)]
    args += ["--trainer.enable_progress_bar", "false"]
    return args + run.cli_extra


# -- results file ----------------------------------------------------------------------------
def read_rows(out: Path) -> list[dict[str, str]]:
    if not out.exists():
        return []
    with open(out, newline="") as f:
        return list(csv.DictReader(f))


def append_row(out: Path, row: dict[str, Any]) -> None:
    """Append one row under an exclusive lock, header first if the file is new or empty."""
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction="ignore")
    with open(out, "a+", newline="") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                writer.writeheader()
            writer.writerow({k: _fmt(row.get(k)) for k in FIELDS})
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _fmt(val: Any) -> str:
    if val is None:
        return ""
    if isinstance(val, float):
        return "" if math.isnan(val) else f"{val:.6g}"
    return str(val)


def git_commit() -> str:
    """HEAD, with ``+dirty`` when seqnorm/ or configs/ differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "seqnorm", "configs"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


# -- the worker (one run, one process, one thread) -------------------------------------------
def _watch_parent(parent: int) -> None:
    """Exit when the parent dies, so a killed grid leaves no orphan training behind."""
    while True:
        time.sleep(2)
        if os.getppid() != parent:
            os._exit(3)


def _build(args: list[str]):  # noqa: ANN202 (a SeqnormCLI)
    """The CLI's own objects (seeded model, datamodule, trainer) without running anything."""
    import pytorch_lightning as pl

    from seqnorm.cli import SeqnormCLI
    from seqnorm.model import SeqModel

    return SeqnormCLI(
        SeqModel,
        pl.LightningDataModule,
        subclass_mode_data=True,
        save_config_callback=None,
        args=args,
        run=False,
        parser_kwargs={"exit_on_error": False},
    )


def _config_hash(cli) -> str:  # noqa: ANN001
    """Hash of the resolved config, less where its files go (logger, callbacks, root dir)."""
    cfg = cli.config.clone()
    for key in ("trainer.logger", "trainer.callbacks", "trainer.default_root_dir"):
        cfg[key] = None
    text = cli.parser.dump(cfg, skip_none=False)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _probe_batch(datamodule, n: int):  # noqa: ANN001, ANN202
    """The first ``n`` validation samples (a fixed batch: the val loader does not shuffle)."""
    import torch

    datamodule.setup("fit")
    xs, ys, have = [], [], 0
    for x, y in datamodule.val_dataloader():
        xs.append(x)
        ys.append(y)
        have += x.shape[0]
        if have >= n:
            break
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


def _probe(model, batch) -> tuple[Any, dict[str, float]]:  # noqa: ANN001
    """log10 ||dL/dh_t|| (layers, T) and its summary on ``batch``, via seqnorm.probes."""
    import torch

    from seqnorm import probes

    was_training = model.training
    model.eval()
    with torch.enable_grad():
        norms = probes.hidden_grad_norms(model, batch, model.loss)
    model.train(was_training)
    summary = probes.summarize(norms)
    curve = probes.log10_norms(norms).cpu().numpy()  # (layers, T)
    return curve, {k: float(v) for k, v in summary.items() if _is_number(v)}


def _is_number(val: Any) -> bool:
    try:
        float(val)
    except (TypeError, ValueError):
        return False
    return True


def _test(args: list[str], ckpt: Path) -> dict[str, float]:
    """Test metrics of ``ckpt`` with the run's own datamodule and model class."""
    cli = _build(args + ["--trainer.logger", "false", "--trainer.callbacks", "[]"])
    cli.trainer.enable_checkpointing = False
    out = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=str(ckpt), verbose=False)
    return {k: float(v) for k, v in out[0].items()}


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """All CSVLogger rows of a run (every version, in order: a resumed run adds a version)."""
    rows: list[dict[str, float]] = []
    versions = sorted(
        (run_dir / "logs").glob("version_*"), key=lambda p: int(p.name.split("_")[-1])
    )
    for version in versions:
        path = version / "metrics.csv"
        if not path.exists():
            continue
        with open(path, newline="") as f:
            for raw in csv.DictReader(f):
                rows.append({k: float(v) for k, v in raw.items() if v not in ("", None)})
    return rows


def series(rows: list[dict[str, float]], key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of ``key``, later entries winning for a repeated step (resume)."""
    out: dict[int, float] = {}
    for r in rows:
        if key in r and "step" in r:
            out[int(r["step"])] = r[key]
    return sorted(out.items())


def steps_to_criterion(rows: list[dict[str, float]], crit: dict[str, Any] | None) -> Any:
    """First logged step where ``crit['metric']`` (per-step train value) falls below the
    threshold: ``threshold``, or ``baseline_fraction`` x the logged memoryless baseline."""
    if not crit:
        return None
    threshold = crit.get("threshold")
    if threshold is None:
        base = series(rows, "train/baseline")
        if not base:
            return None
        threshold = crit["baseline_fraction"] * base[0][1]
    for step, val in series(rows, crit["metric"]):
        if val < threshold:
            return step + 1  # Lightning logs the 0-based step index; report steps taken
    return None


class Interrupted(BaseException):
    """SIGTERM/SIGINT in a worker. A BaseException, so that neither the CLI nor Lightning
    turns it into a result (Lightning alone would stop the fit early and return normally)."""


def _interrupt(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


def worker(spec_path: Path) -> int:
    """Train, probe and test one run; write ``result.json`` in its run dir.

    An interrupted worker writes no ``result.json``: the run stays unfinished and the next
    invocation resumes it from its ``last.ckpt``.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        return _work(spec_path)
    except Interrupted as err:
        print(f"reproduce worker: interrupted by signal {err.args[0]}", file=sys.stderr)
        return 128 + err.args[0]


def _work(spec_path: Path) -> int:
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ.setdefault("WANDB_MODE", "offline")
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from seqnorm.cli import main

    sys.argv = sys.argv[:1]  # the CLI parses ``args``, not this script's own arguments
    run = Run(**json.loads(spec_path.read_text()))
    run_dir = Path(run.run_dir)
    args = cli_args(run)
    (run_dir / "cmd.txt").write_text(
        "seqnorm fit " + " ".join(_quote(a) for a in args) + "\n", encoding="utf-8"
    )
    t0 = time.time()
    result: dict[str, Any] = {"status": "ok", "error": ""}

    # the model as the CLI builds it, before training: probe it
    cli = _build(args)
    dm = cli.datamodule
    cfg = cli.config
    result.update(
        config_hash=_config_hash(cli),
        T=cfg.get("data.init_args.seq_len") or dm.seq_len,
        seq_len=dm.seq_len,
        hidden=cfg["model.hidden_size"],
        batch=dm.batch_size,
        lr=(cfg.get("model.optimizer.init_args") or {}).get("lr"),
        baseline=dm.baseline,
    )
    probe_file = run_dir / "probes.npz"
    batch = _probe_batch(dm, run.probe_batch)
    init_curve, init_sum = _probe(cli.model, batch)
    result.update(
        decay_rate_init=init_sum.get("decay_rate"), grad_ratio_init=init_sum.get("grad_ratio")
    )
    del cli

    # train through the CLI itself, resuming from last.ckpt if an earlier attempt left one
    fit_args = ["fit", *args] + (["--ckpt_path", "last"] if _last(run_dir) else [])
    t_fit = time.time()
    try:
        main(fit_args)
    except SystemExit as err:  # the CLI exits 2 with a one-line reason (e.g. a NaN loss)
        if err.code not in (0, None):
            result.update(status="failed", error=f"seqnorm fit exited {err.code}; see train.log")
    result["fit_time_s"] = time.time() - t_fit

    rows = read_metrics(run_dir)
    metric = run.metric
    val_loss, val_metric = series(rows, "val/loss"), series(rows, f"val/{metric}")
    better = max if metric in ("acc", "symbol_acc") else min
    if val_loss:
        result.update(val_loss_final=val_loss[-1][1], val_loss_best=min(v for _, v in val_loss))
    if val_metric:
        result.update(
            val_metric_final=val_metric[-1][1], val_metric_best=better(v for _, v in val_metric)
        )
        best_by = val_loss if run.monitor == "val/loss" else series(rows, run.monitor)
        pick = min if run.monitor_mode == "min" else max
        if best_by:
            result["best_val_step"] = pick(best_by, key=lambda sv: sv[1])[0] + 1
    result["steps_to_criterion"] = steps_to_criterion(rows, run.criterion)
    train_loss = series(rows, "train/loss_step")
    result["steps"] = train_loss[-1][0] + 1 if train_loss else 0
    epochs = series(rows, "epoch")
    result["epochs"] = int(epochs[-1][1]) + 1 if epochs else 0

    last = _last(run_dir)
    if last is not None:
        state = torch.load(last, map_location="cpu", weights_only=False)
        result["steps"] = int(state.get("global_step", result["steps"]))
        max_steps = cfg.get("trainer.max_steps") or -1
        if result["status"] == "ok" and 0 < max_steps != result["steps"]:
            result.update(status="failed", error=f"last.ckpt at step {result['steps']}")
        cli = _build(args)
        cli.model.load_state_dict(state["state_dict"])
        end_curve, end_sum = _probe(cli.model, batch)
        result.update(
            decay_rate_end=end_sum.get("decay_rate"), grad_ratio_end=end_sum.get("grad_ratio")
        )
        np.savez(probe_file, init=init_curve, end=end_curve)
        del cli, state
        test = _test(args, last)
        result.update(
            test_loss_final=test.get("test/loss"), test_metric_final=test.get(f"test/{metric}")
        )
        best = sorted((run_dir / "checkpoints").glob("best*.ckpt"), key=lambda p: p.stat().st_mtime)
        if best:
            best_step = torch.load(best[-1], map_location="cpu", weights_only=False)["global_step"]
            if best_step != result["steps"]:  # else the final weights are the best: same test
                test = _test(args, best[-1])
            result.update(
                test_loss_at_best_val=test.get("test/loss"),
                test_metric_at_best_val=test.get(f"test/{metric}"),
            )
    else:
        np.savez(probe_file, init=init_curve)
        if result["status"] == "ok":
            result.update(status="failed", error="no last.ckpt after fit")
    result["wall_time_s"] = time.time() - t0
    tmp = run_dir / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=1, default=float))
    tmp.replace(run_dir / "result.json")
    return 0


def _last(run_dir: Path) -> Path | None:
    """The newest ``last*.ckpt`` (Lightning versions the name, ``last-v1.ckpt``, when a
    resumed fit finds a ``last.ckpt`` that its own callback did not write)."""
    found = list((run_dir / "checkpoints").glob("last*.ckpt"))
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _quote(arg: str) -> str:
    return f"'{arg}'" if any(c in arg for c in " {}[]\"'") else arg


# -- the parent: schedule workers, record rows -----------------------------------------------
def _row(run: Run, result: dict[str, Any], commit: str) -> dict[str, Any]:
    row = {k: v for k, v in asdict(run).items() if k in FIELDS}
    row.update(result)
    row.update(git_commit=commit, criterion=_crit_text(run.criterion))
    return row


def _crit_text(crit: dict[str, Any] | None) -> str:
    if not crit:
        return ""
    if "threshold" in crit:
        return f"{crit['metric']} < {crit['threshold']}"
    return f"{crit['metric']} < {crit['baseline_fraction']} x baseline"


def _start(run: Run) -> subprocess.Popen:
    run_dir = Path(run.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "result.json").unlink(missing_ok=True)
    spec = run_dir / "spec.json"
    spec.write_text(json.dumps(asdict(run), indent=1))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    log = open(run_dir / "train.log", "a")  # noqa: SIM115 (closed when the run ends)
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _say(message: str) -> None:
    print(f"reproduce [{time.strftime('%H:%M:%S')}]: {message}", flush=True)


def _result(run: Run) -> dict[str, Any] | None:
    path = Path(run.run_dir) / "result.json"
    return json.loads(path.read_text()) if path.exists() else None


def run_grid(runs: list[Run], out: Path, workers: int, retry_failed: bool = False) -> int:
    """Run every unfinished run of ``runs``, ``workers`` at a time; returns how many ran."""
    done = {r["run_id"]: r["status"] for r in read_rows(out)}
    if retry_failed:
        done = {k: v for k, v in done.items() if v == "ok"}
    todo = [r for r in runs if r.run_id not in done]
    _say(f"{len(runs)} runs, {len(runs) - len(todo)} finished, {len(todo)} to run")
    commit = git_commit()
    pending, running, executed = list(todo), {}, 0

    # a worker that finished after its parent was killed left result.json: record it now
    for run in list(pending):
        res = _result(run)
        if res is not None and res.get("status") == "ok":
            append_row(out, _row(run, res, commit))
            pending.remove(run)
            _say(f"recorded {run.run_id} from its result.json")

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)  # the handler below terminates the workers

    signal.signal(signal.SIGTERM, stop)
    t0 = time.time()
    try:
        while pending or running:
            while pending and len(running) < workers:
                run = pending.pop(0)
                running[run.run_id] = (run, _start(run), time.time())
                _say(f"start {run.run_id}")
            time.sleep(0.5)
            for run_id, (run, proc, started) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[run_id]
                executed += 1
                res = _result(run) or {
                    "status": "failed",
                    "error": f"worker exited {proc.returncode}; see {run.run_dir}/train.log",
                    "wall_time_s": time.time() - started,
                }
                append_row(out, _row(run, res, commit))
                _say(
                    f"done {run_id} [{res['status']}] in {res.get('wall_time_s', 0):.0f} s "
                    f"({executed}/{len(todo)}, {(time.time() - t0) / 60:.1f} min elapsed)"
                )
    except BaseException:
        for _, proc, _ in running.values():
            proc.terminate()
        raise
    _say(f"all {len(runs)} runs finished; {executed} ran now ({out})")
    return executed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", default="cpu", help="cpu | paper | path to a budget YAML")
    parser.add_argument("--only", action="append", default=[], help="filter, e.g. task=copy")
    parser.add_argument("--workers", type=int, default=2, help="parallel runs (one thread each)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the runs.csv to append to")
    parser.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR, help="per-run dirs")
    parser.add_argument("--retry-failed", action="store_true", help="run failed runs again")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if ns.worker:
        return worker(ns.worker)
    if ns.workers < 1:
        parser.error(f"--workers must be >= 1, got {ns.workers}")
    runs = apply_filters(expand(load_budget(ns.budget), ns.runs_dir.resolve()), ns.only)
    if ns.dry_run:
        done = {r["run_id"] for r in read_rows(ns.out)}
        for run in runs:
            mark = "done" if run.run_id in done else "todo"
            print(f"{mark}  {run.run_id:40s} seqnorm fit {' '.join(map(_quote, cli_args(run)))}")
        print(f"{len(runs)} runs, {sum(r.run_id in done for r in runs)} finished")
        return 0
    run_grid(runs, ns.out.resolve(), ns.workers, ns.retry_failed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
