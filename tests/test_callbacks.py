"""Callbacks: files and metrics with a CSV logger, images/tables with a W&B-like logger, and
training that is bit-for-bit the same with and without the monitors."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.logger import Logger
from torch.utils.data import DataLoader, TensorDataset

from seqnorm.callbacks import EpochTest, GradientFlowMonitor, SpectrumMonitor
from seqnorm.data import CopyMemoryDataModule
from seqnorm.model import SeqModel

# Tensors here are tiny: intra-op threads only add overhead (and stall on a busy box).
pytestmark = pytest.mark.usefixtures("one_thread")


def _model_and_data(**model_kw: Any) -> tuple[SeqModel, CopyMemoryDataModule]:
    dm = CopyMemoryDataModule(seq_len=5, batch_size=8, num_train=48, num_val=16, seed=3)
    kw = {"cell": "gru", "hidden_size": 8, **model_kw}
    return SeqModel.from_datamodule(dm, **kw), dm


def _trainer(root: Path, callbacks: list, logger: Any, max_steps: int = 4, **kw: Any) -> pl.Trainer:
    return pl.Trainer(
        max_steps=max_steps,
        logger=logger,
        callbacks=callbacks,
        default_root_dir=root,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        **{
            "limit_val_batches": 1,
            "val_check_interval": 2,
            "check_val_every_n_epoch": None,
            "log_every_n_steps": 1,
            **kw,
        },
    )


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_csv_logger_gets_files_and_metrics(tmp_path: Path) -> None:
    model, dm = _model_and_data(num_layers=2)
    flow = GradientFlowMonitor(every_n_steps=2, num_samples=4)
    spec = SpectrumMonitor(every_n_steps=2)
    trainer = _trainer(tmp_path, [flow, spec], CSVLogger(tmp_path, name="run"))
    trainer.fit(model, dm)
    out = Path(trainer.logger.log_dir)
    for name in ("heatmap.png", "curve.png", "grad_norms.csv"):
        assert (out / "gradient_flow" / name).stat().st_size > 0, name
    assert (out / "spectrum" / "spectrum.png").stat().st_size > 0
    rows = _read_csv(out / "gradient_flow" / "grad_norms.csv")
    T = dm.input_len
    assert len(rows) == 3 * 2 * T  # steps 0, 2, 4 x two layers x T
    assert {int(r["step"]) for r in rows} == {0, 2, 4}
    assert all(float(r["norm"]) > 0 for r in rows)
    assert [s for s, _ in flow.history] == [0, 2, 4] and flow.history[0][1].shape == (2, T)
    sv = _read_csv(out / "spectrum" / "singular_values.csv")
    assert len(sv) == 3 * 2 * 3 * 8  # steps x layers x gates x H
    metrics = _read_csv(out / "metrics.csv")
    probe = {int(r["step"]): r for r in metrics if r.get("probe/decay_rate")}
    assert sorted(probe) == [0, 2, 4]
    for key in ("probe/decay_rate", "probe/grad_ratio", "probe/decay_rate/l0",
                "probe/lipschitz_bound", "probe/sigma_max/l1/z"):  # fmt: skip
        assert math.isfinite(float(probe[4][key])), key
    # the constraint holds: every gate's sigma_max is 1
    assert float(probe[4]["probe/sigma_max/l0/n"]) == pytest.approx(1.0, abs=1e-3)
    assert any(r.get("probe/stable_rank/l0/r") for r in metrics)


def test_csv_rows_carry_the_run_id_and_dirpath_places_the_files(tmp_path: Path) -> None:
    """Two runs into one folder: every row says which run it came from."""
    out = tmp_path / "shared"
    for run_id in ("first", None):
        model, dm = _model_and_data()
        flow = GradientFlowMonitor(every_n_steps=2, num_samples=4, log_images=False,
                                   dirpath=str(out / "flow"), run_id=run_id)  # fmt: skip
        spec = SpectrumMonitor(every_n_steps=2, log_images=False, dirpath=str(out / "spec"),
                               run_id=run_id)  # fmt: skip
        logger = CSVLogger(tmp_path / "logs", name="")
        _trainer(tmp_path, [flow, spec], logger, max_steps=2).fit(model, dm)
    grad = _read_csv(out / "flow" / "grad_norms.csv")
    sv = _read_csv(out / "spec" / "singular_values.csv")
    T = dm.input_len
    # first run: its given id; second: the logger's version (version_1: a second CSV version)
    assert [r["run_id"] for r in grad] == ["first"] * 2 * T + ["version_1"] * 2 * T
    assert [r["step"] for r in grad[: 2 * T]] == [r["step"] for r in grad[2 * T :]]
    assert list(sv[0]) == ["run_id", "step", "layer", "gate", "index", "sigma"]
    assert {r["run_id"] for r in sv} == {"first", "version_1"}
    assert not (tmp_path / "logs" / "version_0" / "gradient_flow").exists()


def test_one_sigma_series(tmp_path: Path) -> None:
    """sigma_max is logged once, under probe/sigma_max/..., at the monitor's steps."""
    model, dm = _model_and_data()
    flow = GradientFlowMonitor(every_n_steps=2, num_samples=4, log_images=False)
    spec = SpectrumMonitor(every_n_steps=2, log_images=False)
    trainer = _trainer(tmp_path, [flow, spec], CSVLogger(tmp_path, name="run"))
    trainer.fit(model, dm)
    rows = _read_csv(Path(trainer.logger.log_dir) / "metrics.csv")
    sigma = sorted({k for r in rows for k, v in r.items() if "sigma_max" in k})
    assert sigma == ["probe/sigma_max/l0/n", "probe/sigma_max/l0/r", "probe/sigma_max/l0/z"]
    assert [int(r["step"]) for r in rows if r["probe/sigma_max/l0/z"]] == [0, 2, 4]


class WandbLogger(Logger):
    """A stand-in with the W&B logger's name and image/table methods; records calls."""

    def __init__(self, save_dir: Path) -> None:
        super().__init__()
        self._save_dir = str(save_dir)
        self.metrics: list[tuple[int | None, dict]] = []
        self.images: list[tuple[str, list, int | None]] = []
        self.tables: list[tuple[str, list, list, int | None]] = []

    name = "fake"
    version = "0"

    @property
    def save_dir(self) -> str:
        return self._save_dir

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.metrics.append((step, dict(metrics)))

    def log_image(self, key: str, images: list, step: int | None = None, **kw: Any) -> None:
        self.images.append((key, images, step))

    def log_table(self, key: str, columns: list, data: list, step: int | None = None) -> None:
        self.tables.append((key, columns, data, step))


def test_wandb_like_logger_gets_images_and_table(tmp_path: Path) -> None:
    model, dm = _model_and_data()
    logger = WandbLogger(tmp_path / "wb")
    cb = GradientFlowMonitor(every_n_steps=2, num_samples=4, image_every_n_steps=4)
    _trainer(tmp_path, [cb], logger, max_steps=6, num_sanity_val_steps=0).fit(model, dm)
    keys = [(k, s) for k, _, s in logger.images]
    # drawn at step 0, at step 4 (image_every_n_steps) and at the end (step 6)
    assert keys == [
        (f"probe/gradient_flow/{n}", s) for s in (0, 4, 6) for n in ("heatmap", "curve")
    ]
    for _, images, _ in logger.images:
        (img,) = images
        assert isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.shape[-1] == 3
    assert [(k, c, s) for k, c, _, s in logger.tables] == [
        ("probe/gradient_flow/grad_norms", ["step", "layer", "t", "norm", "below_range"], s)
        for s in (0, 4, 6)
    ]
    T = dm.input_len
    assert [len(d) for _, _, d, _ in logger.tables] == [T, 2 * T, T]  # rows since last table
    probe_steps = [s for s, m in logger.metrics if "probe/decay_rate" in m]
    assert probe_steps == [0, 2, 4, 6]
    # PNGs are written as well, under the logger's save_dir
    assert (tmp_path / "wb" / "gradient_flow" / "heatmap.png").is_file()
    assert (tmp_path / "wb" / "gradient_flow" / "curve.png").is_file()


def test_flushed_gradients_are_logged_at_the_floor(tmp_path: Path) -> None:
    """Adding task, T=400, last-step loss, subnormals flushed to zero: the early steps'
    gradients are exactly 0. The CSV, the scalars of every logger, the W&B table and the
    figures show them as below float range -- never 0 in the CSV (log10 -> -inf), never
    NaN or inf -- and the decay rate is fitted over the other steps."""
    from matplotlib.colors import to_rgb
    from matplotlib.image import imread

    from seqnorm import plots
    from seqnorm.data import AddingDataModule
    from seqnorm.probes import decay_rate

    dm = AddingDataModule(seq_len=400, batch_size=8, num_train=16, num_val=8, seed=3)
    model = SeqModel.from_datamodule(dm, cell="rnn", hidden_size=8)
    flow = GradientFlowMonitor(every_n_steps=2, num_samples=4)
    wandb = WandbLogger(tmp_path / "wb")
    trainer = _trainer(tmp_path, [flow], [CSVLogger(tmp_path, name="run"), wandb], max_steps=2)
    torch.set_flush_denormal(True)
    try:
        trainer.fit(model, dm)
    finally:
        torch.set_flush_denormal(False)
    assert [s for s, _ in flow.history] == [0, 2]
    zeros = [int((n == 0).sum()) for _, n in flow.history]
    assert all(z > 100 for z in zeros), zeros  # the premise: many steps flushed to zero
    tiny = torch.finfo(torch.float32).tiny
    out = Path(trainer.loggers[0].log_dir)

    rows = _read_csv(out / "gradient_flow" / "grad_norms.csv")
    assert list(rows[0]) == ["run_id", "step", "layer", "t", "norm", "below_range"]
    assert len(rows) == 2 * 400
    for r in rows:
        measured = float(flow.history[int(r["step"]) // 2][1][int(r["layer"]), int(r["t"])])
        norm = float(r["norm"])
        assert math.isfinite(math.log10(norm)), r
        if measured == 0:  # below range: the floor, flagged
            assert r["below_range"] == "1" and norm == tiny, r
        else:  # measurable: the value itself
            assert r["below_range"] == "0" and norm == measured, r
    (table,) = {tuple(c) for _, c, _, _ in wandb.tables}
    assert table == ("step", "layer", "t", "norm", "below_range")
    data = [row for _, _, d, _ in wandb.tables for row in d]
    assert [[float(v) for v in row[3:]] for row in data] == [
        [float(r["norm"]), float(r["below_range"])] for r in rows
    ]

    metrics = _read_csv(out / "metrics.csv")
    logged = {int(r["step"]): r for r in metrics if r.get("probe/fit_steps")}
    assert sorted(logged) == [0, 2]
    for (step, norms), z in zip(flow.history, zeros, strict=True):
        csv_row = dict(logged[step])
        (fake,) = [m for s, m in wandb.metrics if s == step and "probe/fit_steps" in m]
        for got in (fake, {k: float(v) for k, v in csv_row.items() if k.startswith("probe/")
                           and v != ""}):  # fmt: skip
            assert all(math.isfinite(v) for v in got.values()), got
            assert got["probe/below_range_steps"] == z and got["probe/fit_steps"] == 400 - z
            assert got["probe/decay_rate"] == pytest.approx(float(decay_rate(norms[0])))
            assert got["probe/decay_rate"] < -1.0  # vanishing, not flat at the floor

    for name in ("heatmap", "curve"):
        img = imread(out / "gradient_flow" / f"{name}.png")
        assert img.shape[0] > 100 and np.isfinite(img).all()
    heatmap = (imread(out / "gradient_flow" / "heatmap.png")[..., :3] * 255).round()
    grey = np.round(np.array(to_rgb(plots.BELOW_RANGE_COLOR)) * 255)
    assert (heatmap == grey).all(-1).mean() > 0.1  # the flushed half of the map


def test_probes_do_not_change_training(tmp_path: Path) -> None:
    def run(callbacks: list, sub: str) -> dict[str, torch.Tensor]:
        pl.seed_everything(7)
        # dropout between the stacked layers draws from the RNG; the constraint's
        # power-iteration vectors are buffers updated by every training forward
        model, dm = _model_and_data(num_layers=2, dropout=0.3, constraint="spectral")
        _trainer(tmp_path / sub, callbacks, False, max_steps=6).fit(model, dm)
        return {k: v.clone() for k, v in model.state_dict().items()}

    plain = run([], "plain")
    flow = GradientFlowMonitor(every_n_steps=1, num_samples=4, image_every_n_steps=1000)
    probed = run([flow, SpectrumMonitor(every_n_steps=2, log_images=False)], "probed")
    assert len(flow.history) == 7  # steps 0..6: the probe did run
    assert plain.keys() == probed.keys()
    for key in plain:
        assert torch.equal(plain[key], probed[key]), key


def test_train_batch_fallback_without_validation(tmp_path: Path) -> None:
    pl.seed_everything(0)
    model, _ = _model_and_data()
    x = torch.randint(0, 10, (16, 9))
    loader = DataLoader(TensorDataset(x, x.remainder(9)), batch_size=8)
    flow = GradientFlowMonitor(every_n_steps=2, num_samples=3, log_images=False)
    trainer = _trainer(tmp_path, [flow], CSVLogger(tmp_path), limit_val_batches=0)
    trainer.fit(model, loader)
    assert [s for s, _ in flow.history] == [0, 2, 4]
    assert flow._batch[0].shape == (3, 9)
    out = Path(trainer.logger.log_dir) / "gradient_flow"
    assert (out / "grad_norms.csv").is_file()
    assert not (out / "heatmap.png").exists()  # log_images=False: no figures


def test_model_without_loss_raises(tmp_path: Path) -> None:
    class NoLoss(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = SeqModel(cell="rnn", hidden_size=4, input_dim=2).rnn

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.rnn(x)[0]

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return self(batch[0]).sum()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    loader = DataLoader(TensorDataset(torch.randn(4, 5, 2), torch.zeros(4)), batch_size=2)
    trainer = _trainer(tmp_path, [GradientFlowMonitor()], False, limit_val_batches=0)
    with pytest.raises(TypeError, match="pl_module.loss"):
        trainer.fit(NoLoss(), loader)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"every_n_steps": 0}, "every_n_steps must be an int >= 1, got 0"),
        ({"num_samples": 0}, "num_samples must be an int >= 1"),
        ({"image_every_n_steps": -1}, "image_every_n_steps must be an int >= 1"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GradientFlowMonitor(**kwargs)


def test_spectrum_monitor_bad_argument() -> None:
    with pytest.raises(ValueError, match="every_n_steps"):
        SpectrumMonitor(every_n_steps=1.5)


@pytest.mark.slow
def test_real_wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    wandb = pytest.importorskip("wandb")
    from pytorch_lightning.loggers import WandbLogger as RealWandbLogger

    model, dm = _model_and_data()
    logger = RealWandbLogger(offline=True, save_dir=str(tmp_path), project="test")
    try:
        _trainer(tmp_path, [GradientFlowMonitor(every_n_steps=2, num_samples=4)], logger).fit(
            model, dm
        )
    finally:
        wandb.finish()
        wandb.teardown()  # stop the service: its WANDB_SERVICE would leak into later runs
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    media = run / "files" / "media"
    assert list((media / "images" / "probe" / "gradient_flow").glob("heatmap_*.png"))
    assert list((media / "images" / "probe" / "gradient_flow").glob("curve_*.png"))
    assert list((media / "table" / "probe" / "gradient_flow").glob("grad_norms_*.table.json"))
    assert (tmp_path / "gradient_flow" / "heatmap.png").is_file()


def test_epoch_test_logs_the_test_set_at_every_epoch_as_trainer_test_sees_it(
    tmp_path: Path,
) -> None:
    """EpochTest: one ``test_epoch/*`` row per epoch's validation (none for the sanity check),
    limited as trainer.test is, equal to what trainer.test reports for the same weights."""
    model, dm = _model_and_data(constraint="spectral")
    logger = CSVLogger(tmp_path, name="logs")
    trainer = _trainer(tmp_path, [EpochTest()], logger, max_steps=-1, max_epochs=2,
                       val_check_interval=1.0, check_val_every_n_epoch=1,
                       limit_test_batches=1, num_sanity_val_steps=1)  # fmt: skip
    trainer.fit(model, dm)
    rows = _read_csv(Path(logger.log_dir) / "metrics.csv")
    tested = [r for r in rows if r.get("test_epoch/symbol_acc")]
    assert [int(r["epoch"]) for r in tested] == [0, 1]  # 6 batches an epoch: steps 5, 11
    assert all(r["val/symbol_acc"] for r in tested)  # on the row of that epoch's validation
    last = {k: float(v) for k, v in tested[-1].items() if k.startswith("test_epoch/") and v}
    assert set(last) == {"test_epoch/loss", "test_epoch/symbol_acc", "test_epoch/acc_all_steps"}
    out = trainer.test(model, dm, verbose=False)[0]  # the same weights, one test batch
    for name, value in last.items():
        assert value == pytest.approx(out[name.replace("test_epoch/", "test/")], rel=1e-6)


def test_evaluate_restores_modes_and_leaves_the_logged_metrics_alone() -> None:
    model, dm = _model_and_data(dropout=0.0)
    dm.setup("fit")
    model.train()
    before = model.val_metrics["loss"].update_count
    res = model.evaluate(dm.val_dataloader())
    assert model.training and model.val_metrics["loss"].update_count == before
    assert set(res) == {"loss", "symbol_acc", "acc_all_steps"} and res["loss"] > 0
    x, y = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        model.eval()
        loss = model.loss(model(x), y)
    one = model.evaluate([(x, y)])
    assert one["loss"] == pytest.approx(float(loss), rel=1e-6)


def test_epoch_test_needs_a_datamodule(tmp_path: Path) -> None:
    model, dm = _model_and_data()
    dm.setup("fit")
    trainer = _trainer(tmp_path, [EpochTest()], False, max_steps=2)
    with pytest.raises(ValueError, match="EpochTest needs a DataModule"):
        trainer.fit(model, dm.train_dataloader(), dm.val_dataloader())


def test_run_rows_appended_and_dropped_per_run(tmp_path):
    """rundir's table bookkeeping: each run's rows led by its id; a resume drops only that
    run's rows from its step on."""
    import csv

    from seqnorm.rundir import append_run_rows, drop_run_rows_from

    path = tmp_path / "t" / "grad_norms.csv"
    append_run_rows(path, "a", ["step", "x"], [[1, 0.5], [2, 0.25]])
    append_run_rows(path, "b", ["step", "x"], [[1, 0.5], [2, 0.25]])
    drop_run_rows_from(path, "a", 2)
    rows = list(csv.reader(path.open()))
    assert rows == [["run_id", "step", "x"], ["a", "1", "0.5"], ["b", "1", "0.5"],
                    ["b", "2", "0.25"]]  # fmt: skip
    drop_run_rows_from(tmp_path / "missing.csv", "a", 0)  # no file: nothing to do
