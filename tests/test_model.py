"""The LightningModule: wiring from the DataModule, shapes, losses, metrics, penalty, learning."""

import pytest
import pytorch_lightning as pl
import torch

from seqnorm.data import AddingDataModule, CopyMemoryDataModule
from seqnorm.model import SeqModel


def _trainer(**kw):
    kw = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        **kw,
    }
    return pl.Trainer(accelerator="cpu", **kw)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_copy_wiring_and_shapes(cell):
    dm = CopyMemoryDataModule(seq_len=5, batch_size=4, num_train=8, num_val=8, num_test=8)
    model = SeqModel.from_datamodule(dm, cell=cell, hidden_size=6)
    assert model.rnn.input_size == 10 and model.readout.out_features == 9
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    out = model(x)
    assert out.shape == (4, 25, 9)
    assert model.loss(out, y).ndim == 0


def test_adding_regression_shapes():
    dm = AddingDataModule(seq_len=10, batch_size=4, num_train=8, num_val=8, num_test=8)
    model = SeqModel.from_datamodule(dm, hidden_size=6)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert model(x).shape == (4,)
    assert model.baseline == pytest.approx(1 / 6)


def test_mnist_like_classification_shapes():
    model = SeqModel(
        input_kind="features", input_dim=1, output_kind="last_class", num_classes=10, hidden_size=5
    )
    assert model(torch.rand(3, 20, 1)).shape == (3, 10)


def test_penalty_is_differentiable_and_zero_for_unit_norm():
    model = SeqModel(cell="lstm", hidden_size=6, constraint="orthogonal", spectral_penalty=1.0)
    assert model.penalty().item() == pytest.approx(0.0, abs=1e-8)
    model = SeqModel(cell="gru", hidden_size=6, constraint="none", spectral_penalty=1.0)
    pen = model.penalty()
    assert pen.item() > 0
    pen.backward()
    assert model.rnn.weight_hh_l0.grad.abs().sum() > 0


def test_sigma_max_names_every_gate():
    model = SeqModel(cell="lstm", hidden_size=4, num_layers=2)
    assert sorted(model.sigma_max()) == sorted(f"l{k}/{g}" for k in (0, 1) for g in "ifgo")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"cell": "transformer"}, "cell must be one of"),
        ({"constraint": "nuclear"}, "constraint must be one of"),
        ({"input_kind": "image"}, "input_kind must be one of"),
        ({"output_kind": "seq2seq"}, "output_kind must be one of"),
        ({"num_classes": 0}, "num_classes must be an int >= 1"),
        ({"spectral_penalty": -1.0}, "spectral_penalty must be >= 0"),
        ({"hidden_size": 0}, "hidden_size must be a positive int"),
        ({"cell": "gru", "nonlinearity": "modrelu"}, "nonlinearity 'modrelu' is for cell 'rnn'"),
        ({"cell": "lstm", "nonlinearity": "relu"}, "cell 'lstm' has its own gate"),
    ],
)
def test_model_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SeqModel(**kwargs)


def test_metrics_logged_with_namespaces():
    dm = CopyMemoryDataModule(seq_len=3, batch_size=8, num_train=32, num_val=16, num_test=16)
    model = SeqModel.from_datamodule(dm, hidden_size=8)
    trainer = _trainer(max_steps=4)
    trainer.fit(model, dm)
    keys = set(trainer.callback_metrics)
    for key in (
        "train/loss",
        "train/symbol_acc",
        "train/acc_all_steps",
        "train/baseline",
        "val/loss",
        "val/symbol_acc",
        "val/acc_all_steps",
    ):
        assert key in keys, key
    assert trainer.callback_metrics["train/baseline"].item() == pytest.approx(dm.baseline)
    (res,) = trainer.test(model, dm, verbose=False)
    assert {"test/loss", "test/symbol_acc", "test/acc_all_steps"} <= set(res)


@pytest.mark.parametrize("T", [5, 40])
def test_copy_accuracy_counts_only_the_recalled_symbols(T):
    """A model that only ever outputs blank recalls nothing: no copy-task metric named
    accuracy may read high; the all-steps one says what it counts, (T + 10) / (T + 20)."""
    dm = CopyMemoryDataModule(seq_len=T, batch_size=8, num_train=8, num_val=16, num_test=16)
    model = SeqModel.from_datamodule(dm, hidden_size=4)
    with torch.no_grad():
        model.readout.weight.zero_()
        model.readout.bias.copy_(torch.tensor([10.0] + [0.0] * 8))  # always "blank"
    (res,) = _trainer().validate(model, dm, verbose=False)
    assert res["val/symbol_acc"] == 0.0
    assert res["val/acc_all_steps"] == pytest.approx((T + 10) / (T + 20))
    assert "val/acc" not in res
    # the last-step classification tasks keep their plain accuracy
    assert "acc" in SeqModel(output_kind="last_class", hidden_size=4).val_metrics


def test_model_logs_no_sigma_series_of_its_own(tmp_path):
    """sigma_max is logged once, by the monitors (probe/sigma_max/...), not by the model."""
    import csv

    with pytest.raises(TypeError, match="log_sigma_every_n_steps"):
        SeqModel(log_sigma_every_n_steps=1)
    dm = CopyMemoryDataModule(seq_len=3, batch_size=8, num_train=64, num_val=16, num_test=16)
    model = SeqModel.from_datamodule(dm, hidden_size=8)
    logger = pl.loggers.CSVLogger(tmp_path, name="logs")
    _trainer(max_steps=3, logger=logger, log_every_n_steps=1).fit(model, dm)
    header = next(csv.reader(open(logger.log_dir + "/metrics.csv")))
    assert "train/loss_step" in header
    assert not [k for k in header if "sigma" in k], header


def test_sigma_max_does_not_advance_power_iteration():
    model = SeqModel(cell="gru", hidden_size=6, input_dim=2, constraint="spectral").train()
    with torch.no_grad():
        model.rnn.parametrizations.weight_hh_l0.original.mul_(3.0)  # u, v now out of date
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.sigma_max()
    model.penalty()
    assert model.training and model.rnn.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_learns_adding_well_below_baseline():
    """A broken gradient path cannot pass: the MSE must fall to < 10% of the baseline."""
    pl.seed_everything(0)
    torch.set_num_threads(1)
    dm = AddingDataModule(seq_len=20, batch_size=64, num_train=64 * 300, num_val=256)
    model = SeqModel.from_datamodule(
        dm,
        hidden_size=64,
        constraint="spectral",
        optimizer=lambda p: torch.optim.Adam(p, lr=1e-2),
    )
    trainer = _trainer(max_steps=300, limit_val_batches=0)
    trainer.fit(model, dm)
    (res,) = _trainer().validate(model, dm, verbose=False)
    assert res["val/mse"] < 0.1 * dm.baseline


@pytest.mark.parametrize(
    "make_dm",
    [
        lambda: CopyMemoryDataModule(seq_len=6, batch_size=4, num_train=16, num_val=4),
        lambda: AddingDataModule(seq_len=12, batch_size=4, num_train=16, num_val=4),
    ],
)
def test_tbptt_trains_and_truncates(make_dm):
    dm = make_dm()
    model = SeqModel.from_datamodule(dm, hidden_size=8, tbptt_steps=5)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    trainer = _trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(model, dm)
    assert "train/loss" in trainer.callback_metrics
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any("weight_hh" in k for k in changed)
    # one optimiser step per chunk with a loss: copy 26 steps -> 6 chunks; adding -> 1
    per_batch = 6 if dm.output_kind == "per_step_class" else 1
    assert trainer.global_step == 2 * per_batch  # global_step counts optimiser steps


def test_tbptt_option_checked():
    with pytest.raises(ValueError, match="tbptt_steps must be None or an int >= 1, got 0"):
        SeqModel(tbptt_steps=0)


@pytest.mark.parametrize("tbptt_steps", [None, 500])
def test_ten_thousand_steps_train(tbptt_steps):
    """T = 10,000 trains (full and truncated BPTT); the figures at B=32, H=128 are in
    experiments/results/long_sequences.md."""
    dm = AddingDataModule(seq_len=10_000, batch_size=2, num_train=4, num_val=2)
    model = SeqModel.from_datamodule(dm, hidden_size=8, tbptt_steps=tbptt_steps)
    before = model.rnn.parametrizations.weight_hh_l0.original.detach().clone()
    trainer = _trainer(max_steps=2, limit_val_batches=1)
    trainer.fit(model, dm)
    assert trainer.global_step == 2
    assert torch.isfinite(trainer.callback_metrics["val/loss"])
    assert not torch.equal(model.rnn.parametrizations.weight_hh_l0.original, before)


class _PenaltyOnly(SeqModel):
    """No task gradient: every update comes from the spectral penalty alone."""

    def loss(self, output, target):
        return super().loss(output, target) * 0.0


@pytest.mark.parametrize("tbptt_steps", [None, 5])
def test_spectral_penalty_applies_under_tbptt(tbptt_steps):
    """The penalty enters every chunk's loss: sigma_max moves towards 1, the same per
    optimiser step as with full backpropagation through time."""
    pl.seed_everything(0)
    dm = CopyMemoryDataModule(seq_len=6, batch_size=4, num_train=8, num_val=4)  # 26 steps
    model = _PenaltyOnly.from_datamodule(
        dm, hidden_size=8, constraint="none", spectral_penalty=1.0, tbptt_steps=tbptt_steps,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.05),
    )  # fmt: skip
    with torch.no_grad():
        model.rnn.weight_hh_l0.mul_(3.0)  # constraint "none": a plain parameter
    before = model.penalty().item()
    trainer = _trainer(max_steps=6, limit_val_batches=0)
    trainer.fit(model, dm)
    assert trainer.global_step == 6  # six optimiser steps either way (1 batch x 6 chunks)
    after = model.penalty().item()
    assert after < 0.9 * before, (before, after)


def test_tbptt_with_input_projection_trains():
    dm = AddingDataModule(seq_len=12, batch_size=4, num_train=8, num_val=4)
    model = SeqModel.from_datamodule(dm, hidden_size=8, tbptt_steps=5, input_projection=True)
    trainer = _trainer(max_steps=2, limit_val_batches=0)
    trainer.fit(model, dm)
    assert trainer.global_step == 2


@pytest.mark.parametrize("cell, proj", [("gru", 0), ("lstm", 0), ("lstm", 3)])
@pytest.mark.parametrize("output_kind", ["per_step_class", "last_class", "last_regression"])
def test_bidirectional_and_proj_size_size_the_readout(cell, proj, output_kind):
    num_classes = 1 if output_kind == "last_regression" else 4
    model = SeqModel(cell=cell, hidden_size=6, proj_size=proj, bidirectional=True, input_dim=2,
                     output_kind=output_kind, num_classes=num_classes)  # fmt: skip
    assert model.readout.in_features == 2 * (proj or 6)
    x = torch.rand(3, 7, 2)
    out = model(x)
    shape = {"per_step_class": (3, 7, 4), "last_class": (3, 4), "last_regression": (3,)}
    assert out.shape == shape[output_kind]
    assert sorted(model.sigma_max()) == sorted(
        f"{u}/{g}" for u in ("l0", "l0_reverse") for g in model.rnn.gate_names
    )
    out.sum().backward()
    assert model.rnn.weight_ih_l0_reverse.grad.abs().sum() > 0


def test_bidirectional_last_step_reads_the_backward_direction_at_the_first_step():
    """The backward direction's summary of the whole sequence is its output at t = 0: a
    change of the first input must reach the last-step readout through it."""
    torch.manual_seed(0)
    model = SeqModel(cell="gru", hidden_size=5, bidirectional=True, input_dim=1,
                     output_kind="last_regression", num_classes=1).eval()  # fmt: skip
    with torch.no_grad():
        model.readout.weight[:, :5] = 0.0  # read the backward direction only
    x = torch.rand(2, 9, 1)
    y = x.clone()
    y[:, 0] += 1.0
    assert not torch.allclose(model(x), model(y))


def test_bidirectional_and_proj_size_checked():
    with pytest.raises(ValueError, match="proj_size is for cell 'lstm' only, got cell 'gru'"):
        SeqModel(cell="gru", proj_size=2)
    with pytest.raises(ValueError, match="tbptt_steps needs a unidirectional layer"):
        SeqModel(bidirectional=True, tbptt_steps=4)


def test_the_model_guards_itself_unless_told_not_to():
    from seqnorm.guards import FlushDenormals, NonFiniteGuard

    kinds = [type(c) for c in SeqModel().configure_callbacks()]
    assert kinds == [NonFiniteGuard, FlushDenormals]
    kinds = [type(c) for c in SeqModel(stop_on_nonfinite=False).configure_callbacks()]
    assert kinds == [FlushDenormals]
    assert SeqModel(stop_on_nonfinite=False, flush_denormal=False).configure_callbacks() == []


@pytest.mark.parametrize("kind", ["per_step_class", "last_class", "last_regression"])
def test_each_output_kind_reads_its_head(kind):
    """The loss, metrics and output of a model are its head's (seqnorm.heads)."""
    from seqnorm.heads import HEADS

    model = SeqModel(hidden_size=4, output_kind=kind, num_classes=1 if "regression" in kind else 3)
    head = HEADS[kind]
    assert model.head is head and model.is_classification == head.classification
    out = model(torch.rand(2, 5, 1))
    assert out.shape == {"per_step_class": (2, 5, 3), "last_class": (2, 3),
                         "last_regression": (2,)}[kind]  # fmt: skip
    y = {"per_step_class": torch.randint(0, 3, (2, 5)), "last_class": torch.tensor([0, 2]),
         "last_regression": torch.rand(2)}[kind]  # fmt: skip
    assert torch.equal(model.loss(out, y), head.loss(out, y))
    assert set(model._make_metrics()) == set(head.metrics(3))
