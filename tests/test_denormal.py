"""Subnormal floats: flush_denormal sets and restores the mode; the native kernels and the
LightningModule flush for their own duration and give the caller's mode back.

Whether a thread flushes is read from the arithmetic (a subnormal times one is zero exactly
when flush-to-zero or denormals-are-zero is on), not from seqnorm's own report of it.
"""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

import seqnorm
from seqnorm import native
from seqnorm.data import AddingDataModule
from seqnorm.model import SeqModel

SUBNORMAL = 1e-39  # float32: below finfo.tiny = 1.18e-38, above the smallest subnormal 1.4e-45


def flushes() -> bool:
    """Whether the calling thread flushes subnormals, read from a multiplication."""
    return (torch.tensor([SUBNORMAL]) * 1.0).item() == 0.0


@pytest.fixture
def caller_mode():
    """Start from a known caller mode (off) and put it back off afterwards."""
    torch.set_flush_denormal(False)
    yield
    torch.set_flush_denormal(False)


@pytest.fixture
def needs_native():
    if not native.available():
        pytest.skip(f"native kernels unavailable: {native.backend().reason}")


@pytest.fixture(autouse=True)
def _supported():
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU has no flush-to-zero control that torch knows")


def test_flush_denormal_sets_and_restores(caller_mode):
    assert not flushes()
    with seqnorm.flush_denormal():
        assert flushes() and seqnorm.denormals_flushed()
        with seqnorm.flush_denormal(enabled=False):  # nested: off inside, on again after
            assert not flushes()
        assert flushes()
    assert not flushes() and not seqnorm.denormals_flushed()


def test_flush_denormal_restores_a_caller_that_already_flushes(caller_mode):
    torch.set_flush_denormal(True)
    with seqnorm.flush_denormal(enabled=False):
        assert not flushes()
    assert flushes()


def test_flush_denormal_restores_when_the_block_raises(caller_mode):
    with pytest.raises(KeyError), seqnorm.flush_denormal():
        raise KeyError("boom")
    assert not flushes()


def test_flush_denormal_as_decorator(caller_mode):
    @seqnorm.flush_denormal()
    def inside() -> bool:
        return flushes()

    assert inside() and not flushes()
    assert inside() and not flushes()  # reusable


def test_flush_denormal_checks_its_argument():
    with pytest.raises(TypeError, match="enabled must be a bool, got str"):
        seqnorm.flush_denormal("yes")


def test_flush_denormal_sets_every_pool_thread(caller_mode, needs_native):
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.randn(512, 512)
        _ = x @ x  # start the pool's threads
        assert torch.ops.seqnorm.fp_flushing() == [0, 0]
        with seqnorm.flush_denormal():
            assert torch.ops.seqnorm.fp_flushing() == [1, 1]
            # what the pool computes flushes too: a big elementwise op runs on both threads
            y = torch.full((1 << 20,), SUBNORMAL) * 1.0
            assert y.count_nonzero().item() == 0
        assert torch.ops.seqnorm.fp_flushing() == [0, 0]
    finally:
        torch.set_num_threads(n)


MODES = {
    "rnn_tanh": lambda: seqnorm.SpectralRNN(3, 8, constraint="none"),
    "rnn_modrelu": lambda: seqnorm.SpectralRNN(3, 8, nonlinearity="modrelu", constraint="none"),
    "gru": lambda: seqnorm.SpectralGRU(3, 8, constraint="none"),
    "lstm": lambda: seqnorm.SpectralLSTM(3, 8, constraint="none"),
}


def _native_layer(mode: str) -> torch.nn.Module:
    native.set_backend("native")
    return MODES[mode]()


@pytest.fixture
def native_backend(needs_native):
    yield
    native.set_backend(None)


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("caller_flushes", [False, True])
def test_kernels_flush_subnormals_and_restore_the_callers_mode(
    mode, caller_flushes, caller_mode, native_backend
):
    """A gradient of 1e-39 at every step: in the kernels' flushed arithmetic every product
    with it is zero, so every gradient is exactly zero; torch's kernels (not flushed) give
    subnormal, non-zero gradients. The caller's mode is the same before and after."""
    layer = _native_layer(mode)
    x = torch.randn(6, 2, 3)
    torch.set_flush_denormal(caller_flushes)
    out, _ = layer(x)
    assert flushes() == caller_flushes  # after the forward
    out.backward(torch.full_like(out, SUBNORMAL))
    assert flushes() == caller_flushes  # after the backward
    grads = [p.grad for p in layer.parameters()]
    assert all(g is not None and g.count_nonzero().item() == 0 for g in grads)

    torch.set_flush_denormal(False)
    native.set_backend("torch")
    ref = MODES[mode]()
    ref.load_state_dict(layer.state_dict())
    out, _ = ref(x)
    out.backward(torch.full_like(out, SUBNORMAL))
    assert any(p.grad.count_nonzero().item() > 0 for p in ref.parameters())


def test_kernel_restores_the_mode_when_it_raises(caller_mode, needs_native):
    from seqnorm.native import gemm

    a = torch.randn(2, 3)
    with pytest.raises(RuntimeError, match="do not match"):
        torch.ops.seqnorm.gemm_(a, torch.randn(4, 5), torch.empty(2, 5), False)
    assert not flushes()
    c = gemm.gemm_(torch.full((2, 3), SUBNORMAL), torch.ones(3, 4), torch.empty(2, 4))
    assert c.count_nonzero().item() == 0  # the GEMM read the subnormals as zero
    assert not flushes()


class _Recorder(pl.Callback):
    """What the trainer's thread's mode was in each phase."""

    def __init__(self) -> None:
        self.seen: dict[str, bool] = {}

    def on_train_batch_start(self, *args: object) -> None:
        self.seen["train"] = flushes()

    def on_validation_batch_start(self, *args: object) -> None:
        self.seen["val"] = flushes()

    def on_test_batch_start(self, *args: object) -> None:
        self.seen["test"] = flushes()


def _fit(flush: bool, recorder: _Recorder, fail: bool = False) -> None:
    dm = AddingDataModule(seq_len=8, batch_size=4, num_train=8, num_val=4, num_test=4)
    model = SeqModel.from_datamodule(dm, cell="gru", hidden_size=4, flush_denormal=flush)
    if fail:
        model.training_step = lambda *a, **k: (_ for _ in ()).throw(ValueError("boom"))
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder],
    )  # fmt: skip
    trainer.fit(model, dm)
    trainer.test(model, dm)


@pytest.mark.parametrize("flush", [True, False])
def test_model_flushes_in_fit_validate_and_test_then_restores(flush, caller_mode):
    rec = _Recorder()
    _fit(flush, rec)
    assert rec.seen == {"train": flush, "val": flush, "test": flush}
    assert not flushes()


def test_model_restores_the_mode_when_training_fails(caller_mode):
    rec = _Recorder()
    with pytest.raises(ValueError, match="boom"):
        _fit(True, rec, fail=True)
    assert rec.seen["train"] is True
    assert not flushes()


def test_model_checks_flush_denormal():
    with pytest.raises(ValueError, match="flush_denormal must be a bool, got 'no'"):
        SeqModel(flush_denormal="no")


@pytest.mark.slow
def test_native_backward_fed_subnormals_runs_at_normal_speed(needs_native, one_thread):
    """The benchmark of experiments/bench_denormal.py at a small shape: a native backward
    given a subnormal output gradient over the same call given a normal one. Unflushed, the
    subnormal call is many times slower on x86 cores that take microcode assists (10-100x
    measured for torch's kernels on an Intel Xeon); flushed it is the same work. The bound
    is loose (timing on a shared machine), and on a CPU without the penalty the ratio is ~1
    with or without flushing."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    import bench_denormal

    # Up to three measurements, each layer's best ratio: on a loaded machine one 2 ms call can
    # lose its core (a CI run beside two training jobs measured the RNN at 7x once, 1x before);
    # an unflushed kernel is 10-100x slower in every measurement.
    best, tables = None, []
    for _ in range(3):
        df = bench_denormal.subnormal_inputs(T=300, B=32, H=64, rounds=3, min_run_time=0.3)
        tables.append(df.to_string())
        ratio = df[df.kernel == "seqnorm native"].set_index("layer").ratio
        best = ratio if best is None else np.minimum(best, ratio)
        if (best < 2.5).all():
            break
    assert (best < 2.5).all(), "\n\n".join(tables)
