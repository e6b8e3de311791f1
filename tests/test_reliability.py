"""Reliability: exact resume after a real kill, determinism, atomic checkpoints, non-finite
loss, several processes, precision, and bad checkpoints."""

import csv
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from conftest import subprocess_env

from seqnorm.data import AddingDataModule, CopyMemoryDataModule
from seqnorm.model import NonFiniteLossError, SeqModel

ROOT = Path(__file__).resolve().parents[1]
# Test-only callbacks, importable by the subprocesses through PYTHONPATH.
KILLER = '''
import os, signal
import pytorch_lightning as pl

class KillAtStep(pl.Callback):
    """SIGKILL this process after training step `step` (no clean shutdown, no final save)."""
    def __init__(self, step: int):
        self.step = step
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)

class DieBeforeCommit(pl.Callback):
    """Make the next checkpoint write die after the temp file is written, before the rename."""
    def __init__(self, step: int):
        self.step = step
    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == self.step:
            import fsspec.implementations.local as local
            local.LocalFileOpener.commit = lambda self: os._exit(9)
'''


def _config(tmp: Path, every: int, extra_callbacks=()) -> Path:
    """configs/copy.yaml, tiny, with a CSV logger; its runs go to ``--run_dir tmp/run``."""
    cfg = yaml.safe_load((ROOT / "configs/copy.yaml").read_text())
    cfg["trainer"].update(
        max_steps=16, val_check_interval=5, log_every_n_steps=1, enable_progress_bar=False,
        logger={"class_path": "pytorch_lightning.loggers.CSVLogger",
                "init_args": {"save_dir": ".", "name": "logs"}},
    )  # fmt: skip
    cfg["trainer"]["callbacks"] = [
        {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
         "init_args": {"save_last": True, "every_n_train_steps": every, "save_top_k": -1}},
        *extra_callbacks,
    ]  # fmt: skip
    cfg["model"].update(hidden_size=8)
    # A scheduler that halves the lr every epoch: its state must survive a resume too.
    cfg["model"]["lr_scheduler"] = {"class_path": "torch.optim.lr_scheduler.StepLR",
                                    "init_args": {"step_size": 1, "gamma": 0.5}}  # fmt: skip
    # 24 samples / batch 4 = 6 batches per epoch: the kill lands mid-epoch 2.
    cfg["data"]["init_args"].update(seq_len=4, batch_size=4, num_train=24, num_val=8)
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(tmp: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``seqnorm <args> --run_dir tmp/run`` in ``tmp``, with the test callbacks importable."""
    (tmp / "killer.py").write_text(KILLER)
    env = subprocess_env(PYTHONPATH=os.pathsep.join([str(tmp), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "seqnorm.cli", *args, "--run_dir", str(tmp / "run")]
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


def _weights(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=False)


def _train_losses(tmp: Path) -> dict[int, float]:
    """Per-step training losses of the run, every session (a resume adds a CSV version)."""
    losses = {}
    for version in sorted((tmp / "run/logs").glob("version_*")):
        rows = csv.DictReader(open(version / "metrics.csv"))
        losses |= {int(r["step"]): float(r["train/loss_step"]) for r in rows
                   if r.get("train/loss_step")}  # fmt: skip
    return losses


@pytest.mark.slow
def test_killed_run_resumes_exactly(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    _run(a, "fit", "--config", str(_config(a, every=4)))
    kill = {"class_path": "killer.KillAtStep", "init_args": {"step": 10}}
    proc = _run(b, "fit", "--config", str(_config(b, every=4, extra_callbacks=[kill])), check=False)
    assert proc.returncode == -9, proc.stderr[-2000:]  # really killed
    assert _weights(b / "run/checkpoints/last.ckpt")["global_step"] == 8  # mid-epoch 2 (6/epoch)
    _run(b, "fit", "--config", str(_config(b, every=4)), "--ckpt_path", "last")
    ca, cb = _weights(a / "run/checkpoints/last.ckpt"), _weights(b / "run/checkpoints/last.ckpt")
    assert ca["global_step"] == cb["global_step"] == 16
    for key, val in ca["state_dict"].items():  # weights and power-iteration buffers
        torch.testing.assert_close(cb["state_dict"][key], val, rtol=1e-6, atol=1e-7, msg=key)
    for sa, sb in zip(ca["optimizer_states"][0]["state"].values(),
                      cb["optimizer_states"][0]["state"].values(), strict=True):  # fmt: skip
        for k in sa:
            torch.testing.assert_close(sb[k], sa[k], rtol=1e-6, atol=1e-7)
    (sched_a,), (sched_b,) = ca["lr_schedulers"], cb["lr_schedulers"]
    assert sched_a == sched_b and sched_a["last_epoch"] == 2  # 16 steps = 2 epochs + 4
    la, lb = _train_losses(a), _train_losses(b)
    for step in range(8, 16):  # the steps trained after the resume
        assert lb[step] == pytest.approx(la[step], rel=1e-5), step


@pytest.mark.slow
def test_resumed_run_writes_no_monitor_row_twice(tmp_path):
    """Killed at step 10, last checkpoint at step 8: the rows of steps 8 and 10 were written
    before the kill and are recorded again after the resume, once each."""
    monitors = [
        {"class_path": "seqnorm.callbacks.GradientFlowMonitor",
         "init_args": {"every_n_steps": 2, "num_samples": 2, "log_images": False}},
        {"class_path": "seqnorm.callbacks.SpectrumMonitor",
         "init_args": {"every_n_steps": 2, "log_images": False}},
    ]  # fmt: skip
    kill = {"class_path": "killer.KillAtStep", "init_args": {"step": 10}}
    cfg = _config(tmp_path, every=4, extra_callbacks=[*monitors, kill])
    proc = _run(tmp_path, "fit", "--config", str(cfg), check=False)
    assert proc.returncode == -9, proc.stderr[-2000:]
    grad = tmp_path / "run/gradient_flow/grad_norms.csv"
    before = {int(r["step"]) for r in csv.DictReader(grad.open())}
    assert {8, 10} <= before  # written before the kill, after the last checkpoint (8)
    # another run's rows in the same file are kept as they are
    with grad.open("a", newline="") as f:
        csv.writer(f).writerow(["other", 12, 0, 0, 1.0])
    _run(tmp_path, "fit", "--config", str(_config(tmp_path, every=4, extra_callbacks=monitors)),
         "--ckpt_path", "last")  # fmt: skip
    (run_id,) = {r["run_id"] for r in csv.DictReader(grad.open())} - {"other"}
    for name, key in (
        ("gradient_flow/grad_norms.csv", ("step", "layer", "t")),
        ("spectrum/singular_values.csv", ("step", "layer", "gate", "index")),
    ):
        rows = [r for r in csv.DictReader((tmp_path / "run" / name).open())
                if r["run_id"] == run_id]  # fmt: skip
        keys = [tuple(r[k] for k in key) for r in rows]
        assert len(keys) == len(set(keys)), f"{name}: a row written twice"
        assert sorted({int(r["step"]) for r in rows}) == list(range(0, 17, 2)), name
    other = [r for r in csv.DictReader(grad.open()) if r["run_id"] == "other"]
    assert [r["step"] for r in other] == ["12"]


@pytest.mark.slow
def test_kill_during_checkpoint_write_keeps_previous(tmp_path):
    die = {"class_path": "killer.DieBeforeCommit", "init_args": {"step": 5}}
    proc = _run(tmp_path, "fit", "--config", str(_config(tmp_path, every=3, extra_callbacks=[die])),
                check=False)  # fmt: skip
    assert proc.returncode == 9
    ckpt = _weights(tmp_path / "run/checkpoints/last.ckpt")  # still readable, the previous one
    assert ckpt["global_step"] == 3


def _fit(model, dm, **kw):
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, **kw)  # fmt: skip
    trainer.fit(model, dm)
    return trainer


class _LossRecorder(pl.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].item())


def test_same_seed_same_losses():
    runs = []
    for _ in range(2):
        pl.seed_everything(7)
        dm = CopyMemoryDataModule(seq_len=4, batch_size=4, num_train=16, num_val=4)
        model = SeqModel.from_datamodule(dm, hidden_size=8, constraint="scaled", dropout=0.0)
        rec = _LossRecorder()
        _fit(model, dm, max_steps=10, callbacks=[rec], limit_val_batches=0)
        runs.append(rec.losses)
    assert runs[0] == runs[1]


def test_resume_from_an_end_of_epoch_checkpoint_trains_the_next_epoch(tmp_path):
    """Epoch-based runs checkpoint at each epoch's validation, after its last batch: the
    resumed run must train the next epoch whole (not skip it as 'already trained'), and end
    where an uninterrupted run ends."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    def run(max_epochs, ckpt_dir, ckpt_path=None):
        pl.seed_everything(3)
        dm = CopyMemoryDataModule(seq_len=3, batch_size=4, num_train=24, num_val=4, num_test=4)
        model = SeqModel.from_datamodule(dm, hidden_size=8, constraint="spectral")
        every_epoch = ModelCheckpoint(dirpath=ckpt_dir, save_last=True, every_n_epochs=1,
                                      save_on_train_epoch_end=False)  # fmt: skip
        trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                             enable_model_summary=False, max_epochs=max_epochs,
                             limit_val_batches=1, callbacks=[every_epoch])  # fmt: skip
        trainer.fit(model, dm, ckpt_path=ckpt_path)
        return trainer, model

    whole, model_a = run(3, tmp_path / "a")
    run(2, tmp_path / "b")  # its last.ckpt: epoch 2's validation, after its 6th batch
    resumed, model_b = run(3, tmp_path / "b", ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    assert whole.global_step == resumed.global_step == 18  # 3 epochs of 6 batches
    assert resumed.current_epoch == 3
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values(),
                            strict=True):  # fmt: skip
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7, msg=name)


class _FaultAtStep(SeqModel):
    """At step 4, a NaN in the inputs or targets, an inf loss or a NaN gradient."""

    fault = "targets"

    def training_step(self, batch, batch_idx):
        if self.global_step == 4 and self.fault in ("inputs", "targets"):
            x, y = batch
            if self.fault == "inputs":
                x = x.clone()
                x[0, 2, 0] = float("nan")
            else:
                y = torch.full_like(y, float("nan"))
            batch = (x, y)
        return super().training_step(batch, batch_idx)

    def loss(self, output, target):
        loss = super().loss(output, target)
        return loss * float("inf") if self.global_step == 4 and self.fault == "loss" else loss

    def on_after_backward(self):
        if self.global_step == 4 and self.fault == "gradient":
            self.readout.weight.grad[0, 0] = float("nan")


@pytest.mark.parametrize(
    "fault, match",
    [
        ("targets", r"non-finite input batch at step 4: the targets \(4 values\) hold NaN/inf"),
        ("inputs", r"non-finite input batch at step 4: the inputs \(1 values\) hold NaN/inf"),
        ("loss", r"non-finite loss \(inf\) at step 4 \(the input batch is finite\)"),
        ("gradient", r"non-finite gradient of readout.weight at step 4 \(the input batch is "),
    ],
    ids=["targets", "inputs", "loss", "gradient"],
)
def test_non_finite_stops_names_source_and_last_good_checkpoint(fault, match, tmp_path):
    dm = AddingDataModule(seq_len=5, batch_size=4, num_train=64, num_val=4)
    model = _FaultAtStep.from_datamodule(dm, hidden_size=8, constraint="none")
    model.fault = fault
    # The first ModelCheckpoint (trainer.checkpoint_callback) has saved nothing by step 4;
    # the second has: the message names the second's newest file.
    best = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "best", monitor="val/loss")
    steps = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "steps", save_last=True, every_n_train_steps=2
    )
    logger = pl.loggers.CSVLogger(tmp_path, name="logs", flush_logs_every_n_steps=1000)
    trainer = pl.Trainer(accelerator="cpu", max_steps=10, callbacks=[best, steps],
                         logger=logger, log_every_n_steps=1, enable_progress_bar=False,
                         limit_val_batches=0)  # fmt: skip
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit(model, dm)
    msg = str(info.value)
    assert re.search(match, msg), msg
    assert re.search(r"last good checkpoint: \S*steps[/\\]\S+\.ckpt", msg), msg
    assert ("learning rate" in msg) == (fault in ("loss", "gradient")), msg
    assert ("check the data" in msg) == (fault in ("inputs", "targets")), msg
    state = torch.load(tmp_path / "steps/last.ckpt", weights_only=False)
    assert state["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())
    metrics = (tmp_path / "logs/version_0/metrics.csv").read_text()  # flushed on failure
    assert "train/loss_step" in metrics


@pytest.mark.parametrize("clip", [None, 1e-3])
def test_gradient_clipping_from_trainer(clip):
    """trainer.gradient_clip_val bounds the gradient norm the optimizer steps with."""
    norms = []

    class Recording(torch.optim.SGD):
        def step(self, closure=None):
            loss = closure() if closure is not None else None  # forward, backward, clipping
            grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
            norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())
            super().step()
            return loss

    dm = AddingDataModule(seq_len=5, batch_size=4, num_train=16, num_val=4)
    model = SeqModel.from_datamodule(dm, hidden_size=8, optimizer=lambda p: Recording(p, lr=0.1))
    _fit(model, dm, max_steps=3, gradient_clip_val=clip, limit_val_batches=0)
    assert len(norms) == 3
    if clip is None:
        assert min(norms) > 1e-2  # so the clipped run below has something to clip
    else:
        assert max(norms) <= clip * (1 + 1e-4)


@pytest.mark.parametrize("precision", ["64-true", "bf16-mixed"])
def test_precision_runs_and_constraint_holds(precision):
    dm = AddingDataModule(seq_len=6, batch_size=4, num_train=16, num_val=4)
    model = SeqModel.from_datamodule(dm, hidden_size=8, constraint="spectral")
    _fit(model, dm, max_steps=4, precision=precision, limit_val_batches=0)
    W = model.rnn.weight_hh_l0.detach()
    assert W.dtype == (torch.float64 if precision == "64-true" else torch.float32)
    buf = model.rnn.parametrizations.weight_hh_l0[0]._u
    assert buf.dtype in (torch.float32, torch.float64)
    s = torch.linalg.matrix_norm(W.reshape(3, 8, 8).double(), 2)
    assert torch.allclose(s, torch.ones(3, dtype=torch.float64), atol=1e-2)


DDP_SCRIPT = textwrap.dedent("""
    import sys, torch, pytorch_lightning as pl
    from seqnorm.callbacks import GradientFlowMonitor
    from seqnorm.data import CopyMemoryDataModule
    from seqnorm.model import SeqModel
    out = sys.argv[1]

    class SaveEveryRank(pl.Callback):  # runs inside each forked worker
        def on_train_end(self, trainer, pl_module):
            state = {k: v.clone() for k, v in pl_module.state_dict().items()}
            torch.save(state, f"{out}/rank{trainer.global_rank}.pt")

    pl.seed_everything(3)
    dm = CopyMemoryDataModule(seq_len=4, batch_size=4, num_train=32, num_val=8)
    model = SeqModel.from_datamodule(dm, hidden_size=8, constraint="spectral")
    logger = pl.loggers.CSVLogger(out, name="logs")
    monitor = GradientFlowMonitor(every_n_steps=2, num_samples=2, log_images=False)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_fork", max_steps=4,
                         logger=logger, enable_checkpointing=False, enable_progress_bar=False,
                         limit_val_batches=0, enable_model_summary=False, log_every_n_steps=1,
                         callbacks=[SaveEveryRank(), monitor])
    trainer.fit(model, dm)
""")


@pytest.mark.slow
def test_ddp_fork_two_processes_agree(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = subprocess_env()
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    assert any("_u" in k for k in r0)
    for k in r0:  # weights, optimiser-updated params and power-iteration buffers
        assert torch.equal(r0[k], r1[k]), k
    # Logging happened once (rank 0): one log version, each step's values written once.
    (metrics,) = (tmp_path / "logs").glob("version_*/metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    for key, steps in (("probe/sigma_max/l0/z", [0, 2, 4]), ("probe/decay_rate", [0, 2, 4])):
        assert [int(r["step"]) for r in rows if r[key]] == steps, key
    (norms,) = (tmp_path / "logs").glob("version_*/gradient_flow/grad_norms.csv")
    keys = [(r["step"], r["t"]) for r in csv.DictReader(norms.open())]
    assert len(keys) == len(set(keys)) == 3 * 24  # 3 probes x T=24 steps, no duplicates


def test_corrupt_and_mismatched_checkpoints_give_one_line_errors(tmp_path):
    cfg = _config(tmp_path, every=2)
    _run(tmp_path, "fit", "--config", str(cfg), "--trainer.max_steps", "2")
    good = tmp_path / "run/checkpoints/last.ckpt"
    before = good.read_bytes()
    bad = tmp_path / "corrupt.ckpt"
    bad.write_bytes(before[: len(before) // 2])
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(os.urandom(len(before)))
    adding = ["--config", str(ROOT / "configs/adding.yaml"), "--data.seq_len", "5"]
    cases = [
        (["--config", str(cfg), "--ckpt_path", str(bad)], "corrupt.ckpt is not a checkpoint"),
        (["--config", str(cfg), "--ckpt_path", str(garbage)], "garbage.ckpt is not a checkpoint"),
        # a copy-task checkpoint into an adding-task model: different input/readout shapes
        ([*adding, "--ckpt_path", str(good)], "size mismatch for rnn.weight_ih_l0"),
    ]
    for args, match in cases:
        proc = _run(tmp_path, "fit", *args, "--trainer.max_steps", "4", check=False)
        assert proc.returncode == 2, proc.stderr[-2000:]
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("seqnorm: error:") and match in last, last
        assert "Traceback" not in proc.stderr and "weights_only" not in proc.stderr
    assert good.read_bytes() == before  # existing checkpoints untouched
