"""The probes and monitors on LRU models, and the CLI with ``model.cell: lru``."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch.nn import functional as F

from seqnorm import LRU, native
from seqnorm.callbacks import GradientFlowMonitor, SpectrumMonitor
from seqnorm.data import AddingDataModule, CopyMemoryDataModule
from seqnorm.model import SeqModel
from seqnorm.native import lru as native_lru
from seqnorm.probes import find_layers, hidden_grad_norms, weight_spectrum

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
LRU_OPTIONS = {"state_size": 6, "r_min": 0.8, "r_max": 0.99}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_probes_find_the_stack_not_its_blocks():
    model = SeqModel(cell="lru", constraint="none", hidden_size=8, num_layers=3,
                     lru_options=LRU_OPTIONS)  # fmt: skip
    ((name, layer),) = find_layers(model)
    assert name == "rnn" and layer is model.rnn and layer.unit_names == ["l0", "l1", "l2"]
    spec = weight_spectrum(model.rnn)
    lam = model.rnn.recurrent_eigenvalues().detach()  # (3, 6)
    torch.testing.assert_close(spec["singular_values"][:, 0],
                               lam.abs().sort(dim=-1, descending=True).values)  # fmt: skip
    torch.testing.assert_close(spec["sigma_max"][:, 0], lam.abs().amax(-1))
    torch.testing.assert_close(spec["lipschitz_bound"], lam.abs().amax(-1).prod())
    ph = spec["phases"]
    assert ph.shape == (3, 1, 6) and (ph >= 0).all() and (ph < 2 * math.pi).all()


@pytest.mark.skipif(not native.available(), reason="native kernels unavailable")
def test_gradient_probe_equals_autograd_by_hand():
    """``||dL/dh_t||`` through the LRU's state equals, computed by hand on the native path,
    ``||dL/du_t||``: ``h_t = lambda h_{t-1} + u_t``, so the total derivative of the loss in
    ``h_t`` is its derivative in ``u_t``."""
    torch.manual_seed(0)
    lru = LRU(3, 4, r_min=0.8, r_max=0.99, dtype=torch.float64)
    head = torch.nn.Linear(3, 2, dtype=torch.float64)
    x = torch.randn(9, 5, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (5,))

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lru, self.head = lru, head

        def forward(self, x):
            return self.head(self.lru(x)[0][-1])

    norms = hidden_grad_norms(Model(), (x, y), F.cross_entropy)  # (1, T)
    T, B = x.shape[:2]
    u = F.linear(x.reshape(T * B, 3), lru.input_map()).detach().requires_grad_()
    h, _ = native_lru.scan(u, lru.lambda_planes(), u.new_zeros(B, 8), torch.full((T,), B))
    out = F.linear(h, lru.output_map()) + x.reshape(T * B, 3) * lru.D
    loss = F.cross_entropy(head(out.reshape(T, B, 3)[-1]), y)
    (du,) = torch.autograd.grad(loss, u)
    by_hand = du.reshape(T, B, 8).norm(dim=-1).mean(dim=-1)  # (T,)
    torch.testing.assert_close(norms[0], by_hand, atol=1e-14, rtol=1e-10)


def _fit(tmp_path: Path, model: SeqModel, dm: pl.LightningDataModule, steps: int = 4):
    flow = GradientFlowMonitor(every_n_steps=2, num_samples=4)
    spec = SpectrumMonitor(every_n_steps=2)
    trainer = pl.Trainer(
        max_steps=steps, logger=CSVLogger(tmp_path, name="run"), callbacks=[flow, spec],
        default_root_dir=tmp_path, accelerator="cpu", devices=1, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, limit_val_batches=1,
        val_check_interval=2, check_val_every_n_epoch=None, log_every_n_steps=1,
    )  # fmt: skip
    trainer.fit(model, dm)
    return trainer, flow, spec


def test_monitors_on_an_lru_model(tmp_path):
    dm = CopyMemoryDataModule(seq_len=5, batch_size=8, num_train=48, num_val=16, seed=3)
    model = SeqModel.from_datamodule(dm, cell="lru", constraint="bound",
                                     constraint_options={"gamma": 0.95}, hidden_size=8,
                                     num_layers=2, lru_options=LRU_OPTIONS)  # fmt: skip
    trainer, flow, spec = _fit(tmp_path, model, dm)
    out = Path(trainer.logger.log_dir)
    T, P = dm.input_len, LRU_OPTIONS["state_size"]
    rows = _read_csv(out / "gradient_flow" / "grad_norms.csv")
    assert len(rows) == 3 * 2 * T  # steps 0, 2, 4 x two blocks x T
    assert all(float(r["norm"]) > 0 for r in rows)
    assert flow.history[-1][1].shape == (2, T)
    sv = _read_csv(out / "spectrum" / "singular_values.csv")
    assert len(sv) == 3 * 2 * 1 * P and {r["gate"] for r in sv} == {"lambda"}
    assert max(float(r["sigma"]) for r in sv) <= 0.95 + 1e-6  # the cap, as recorded
    eig = _read_csv(out / "spectrum" / "eigenvalues.csv")
    assert len(eig) == 3 * 2 * P and {r["layer"] for r in eig} == {"l0", "l1"}
    assert all(0 <= float(r["phase"]) < 2 * math.pi for r in eig)
    last = [r for r in eig if r["step"] == "4" and r["layer"] == "l1"]
    lam = model.rnn.recurrent_eigenvalues().detach()[1]
    torch.testing.assert_close(
        torch.tensor([float(r["modulus"]) for r in last]),
        lam.abs().sort(descending=True).values,
        atol=1e-6,
        rtol=1e-5,
    )
    for name in ("spectrum.png", "eigenvalues.png"):
        assert (out / "spectrum" / name).stat().st_size > 0, name
    assert (out / "gradient_flow" / "heatmap.png").stat().st_size > 0
    metrics = _read_csv(out / "metrics.csv")
    keys = set().union(*(r.keys() for r in metrics if r.get("probe/decay_rate")))
    assert {"probe/sigma_max/l0/lambda", "probe/sigma_max/l1/lambda",
            "probe/lipschitz_bound"} <= keys  # fmt: skip
    state = spec.state_dict()
    again = SpectrumMonitor()
    again.load_state_dict(state)
    assert [s for s, _ in again.eigen_history] == [0, 2, 4]


def test_mean_pooled_regression_fits(tmp_path):
    """A last-step regression task (adding) with mean pooling trains with the monitors."""
    dm = AddingDataModule(seq_len=6, batch_size=8, num_train=48, num_val=16, seed=1)
    model = SeqModel.from_datamodule(dm, cell="lru", constraint="none", hidden_size=8,
                                     pooling="mean", lru_options=LRU_OPTIONS)  # fmt: skip
    before = [p.detach().clone() for p in model.parameters()]
    trainer, flow, _ = _fit(tmp_path, model, dm, steps=2)
    assert trainer.global_step == 2 and len(flow.history) == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_cli_fits_cell_lru(tmp_path, monkeypatch):
    """``seqnorm fit --config configs/copy_lru.yaml`` with ``model.cell: lru`` options on the
    command line, a few steps, a tiny size, a CSV logger."""
    from seqnorm.cli import main

    monkeypatch.chdir(tmp_path)
    main([
        "fit", "--config", str(ROOT / "configs" / "copy_lru.yaml"),
        "--model.hidden_size", "8", "--model.num_layers", "1",
        "--model.lru_options", "{state_size: 4, r_min: 0.5, r_max: 0.9, norm: batch}",
        "--model.constraint", "bound", "--model.constraint_options", "{gamma: 0.85}",
        "--data.seq_len", "5", "--data.batch_size", "4",
        "--trainer.max_steps", "3", "--trainer.limit_val_batches", "1",
        "--trainer.enable_progress_bar", "false",
        "--trainer.logger",
        "{class_path: pytorch_lightning.loggers.CSVLogger, init_args: {save_dir: .}}",
    ])  # fmt: skip
    (run_dir,) = (tmp_path / "runs" / "copy_lru").iterdir()
    ckpt = torch.load(next(run_dir.rglob("last*.ckpt")), map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 3
    hp = ckpt["hyper_parameters"]
    assert hp["cell"] == "lru" and hp["lru_options"]["state_size"] == 4
    nu = [v for k, v in ckpt["state_dict"].items() if k.endswith("nu_log.original")]
    assert len(nu) == 1 and (torch.exp(-torch.exp(nu[0])).max() > 0)
    assert (run_dir / "spectrum" / "eigenvalues.csv").exists()


def test_lru_budget_builds_every_row(monkeypatch, tmp_path):
    """Every (task, variant) of experiments/budgets/lru.yaml parses through the CLI and builds
    an LRU model with the row's options (nothing is trained)."""
    import sys

    from seqnorm.cli import SeqnormCLI

    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    monkeypatch.setattr(sys, "argv", ["seqnorm"])
    import reproduce

    runs = reproduce.expand(reproduce.load_budget("lru"), tmp_path)
    rows = {(r["task"], r["variant"]): r for r in runs if r["seed"] == 0}
    assert len(rows) == 10
    for (task, variant), run in rows.items():
        cli = SeqnormCLI(SeqModel, pl.LightningDataModule, subclass_mode_data=True, run=False,
                         args=reproduce.cli_args(run))  # fmt: skip
        model = cli.model
        assert model.cell == "lru" and model.rnn.state_size == 128, (task, variant)
        assert model.hparams.constraint == variant.removeprefix("lru_")
        assert model.pooling == ("last" if task.startswith("copy") else "mean")
