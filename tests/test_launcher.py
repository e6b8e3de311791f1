"""reproduce.py's launchers: the grid through submitit (SLURM job arrays), tested with
submitit's local executor: the rows, a preempted cell's resume, the file lock, the messages."""

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
sys.path.insert(0, str(ROOT / "tests"))

import reproduce  # noqa: E402
from test_experiments import TINY_BUDGET  # noqa: E402

# Two cells long enough (20 validations, a last.ckpt at each) to be stopped in the middle.
LONG = json.loads(json.dumps(TINY_BUDGET))
LONG["tasks"]["copy"]["overrides"].update({"trainer.max_steps": 40})
#: What a run computed (the rest is where and how long it ran).
SAME = (
    "run_id status seed git_commit git_clean T hidden batch lr steps val_loss_final "
    "val_loss_best val_metric_final val_metric_best test_loss_final test_metric_final "
    "test_loss_at_best_val test_metric_at_best_val steps_to_criterion decay_rate_init "
    "grad_ratio_init decay_rate_end grad_ratio_end curve verdict"
).split()


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _run(run_id: str, run_dir: Path) -> dict:
    return dict(run_id=run_id, overrides={}, criterion=None, run_dir=str(run_dir))


def test_slurm_without_sbatch_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"  # git, no sbatch
    bin_dir.mkdir()
    (bin_dir / "git").symlink_to(shutil.which("git"))
    monkeypatch.setenv("PATH", str(bin_dir))
    budget = tmp_path / "tiny.yaml"
    budget.write_text(yaml.safe_dump(TINY_BUDGET))
    args = ["--budget", str(budget), "--out", str(tmp_path / "runs.csv"), "--allow-dirty"]
    with pytest.raises(SystemExit, match="sbatch") as err:
        reproduce.main([*args, "--launcher", "slurm", "--runs-dir", str(tmp_path / "runs")])
    assert "\n" not in str(err.value) and "--launcher local" in str(err.value)
    assert not (tmp_path / "runs.csv").exists()
    monkeypatch.setitem(sys.modules, "submitit", None)  # not installed
    with pytest.raises(SystemExit, match=r"pip install -e '\.\[cluster\]'"):
        reproduce.main([*args, "--launcher", "submitit-local"])


def _append(out: str, i: int) -> None:
    run = _run(f"r{i}", Path(out).parent / f"r{i}")
    for _ in range(2):  # the second is a cell that ran twice: not written again
        reproduce.append_row(run, Path(out))


def test_rows_appended_at_once_are_whole_and_written_once(tmp_path):
    out = tmp_path / "runs.csv"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append, args=(str(out), i)) for i in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    rows = pd.read_csv(out)
    assert sorted(rows.run_id) == [f"r{i}" for i in range(8)]
    assert rows.columns.tolist() == list(reproduce.FIELDS)
    assert (rows.status == "failed").all() and rows.error.str.contains("worker died").all()


def test_checkpoint_stops_the_worker_and_requeues_the_same_cell(tmp_path):
    submitit = pytest.importorskip("submitit")
    cell = reproduce.Cell(tmp_path / "runs.csv")
    worker = subprocess.Popen(["sleep", "60"])
    cell._keep(worker)
    run = _run("a", tmp_path / "a")
    delayed = cell.checkpoint(run)
    assert worker.poll() is not None  # stopped, not left running beside its requeued cell
    assert isinstance(delayed, submitit.helpers.DelayedSubmission)
    assert isinstance(delayed.function, reproduce.Cell) and delayed.args == (run,)
    assert delayed.function.out == cell.out


@pytest.mark.slow
def test_submitit_grid_resumes_a_preempted_cell_and_matches_the_local_grid(tmp_path):
    submitit = pytest.importorskip("submitit")
    budget = tmp_path / "long.yaml"
    budget.write_text(yaml.safe_dump(LONG))
    local_out, local_runs = tmp_path / "local.csv", tmp_path / "local"
    args = ["--budget", str(budget), "--allow-dirty"]
    assert reproduce.main([*args, "--out", str(local_out), "--runs-dir", str(local_runs)]) == 0

    out, runs_dir = tmp_path / "runs.csv", tmp_path / "submitit"
    runs = reproduce.expand(reproduce.load_budget(str(budget)), runs_dir)
    executor = submitit.AutoExecutor(folder=runs_dir / "submitit" / "%j", cluster="local")
    executor.update_parameters(timeout_min=10)
    jobs = reproduce.submit(runs, out, executor)
    assert [r["run_id"] for r in runs] == ["copy_gru_none_s0", "copy_modrelu_orthogonal_s0"]
    # preempt the first cell once it has a last.ckpt and before it ends
    run_dir, t0 = Path(runs[0]["run_dir"]), time.time()
    while not list((run_dir / "checkpoints").glob("last*.ckpt")):
        assert time.time() - t0 < 300 and not (run_dir / "result.json").exists()
        time.sleep(0.05)
    assert not (run_dir / "result.json").exists()
    # SLURM signals the job's processes (USR2) before a preemption or the time limit; submitit's
    # LocalJob._interrupt signals its controller, which does not forward USR2: signal the task
    task = _children(jobs[0]._process.pid)[0]  # the controller's one task: the cell
    for pid in (*_children(task), task):  # the worker, then the cell
        os.kill(pid, signal.SIGUSR2)
    assert [job.result() for job in jobs] == ["ok", "ok"]

    rows = pd.read_csv(out).set_index("run_id")
    local = pd.read_csv(local_out).set_index("run_id")
    assert sorted(rows.index) == sorted(local.index) and len(rows) == 2
    assert rows.loc["copy_gru_none_s0", "invocations"] == 2  # stopped, requeued, resumed
    assert rows.loc["copy_modrelu_orthogonal_s0", "invocations"] == 1
    log = (run_dir / "train.log").read_text()
    assert "Restoring states from the checkpoint path" in log and "last" in log
    commit, clean = reproduce.git_state()
    assert (rows.git_commit == commit).all() and (rows.git_clean == clean).all()
    pd.testing.assert_frame_equal(rows[SAME[1:]], local.loc[rows.index, SAME[1:]])

    # a second submission finds every cell done: nothing submitted, nothing written twice
    assert reproduce.submit(runs, out, executor) == []
    assert len(pd.read_csv(out)) == 2
