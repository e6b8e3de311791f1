"""seqnorm on a CUDA device: the same answers as on the CPU and as torch's own layers there.

The native kernels are CPU-only; on a GPU every layer takes its torch path (cuDNN for
``constraint="none"``, the constrained weight computed once per call otherwise) and the LRU
its step-by-step scan. These tests check that those paths give the CPU's answers (float64,
tight tolerances), that the constraints hold on the device, and that a model trains, probes,
saves and loads there. CI has no GPU: the whole file skips without CUDA. On a GPU host:
``pytest tests/test_cuda.py``.
"""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
from conftest import LAYER_IDS, LAYER_PAIRS
from torch import nn

from seqnorm import (
    CONSTRAINTS,
    LRU,
    SpectralGRU,
    SpectralGRUCell,
    SpectralLSTM,
    SpectralLSTMCell,
    SpectralRNNCell,
    constrain,
)
from seqnorm.constraints import satisfies

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")
F64 = torch.float64
PAIRS = LAYER_PAIRS
CELLS = [
    (SpectralRNNCell, nn.RNNCell),
    (SpectralGRUCell, nn.GRUCell),
    (SpectralLSTMCell, nn.LSTMCell),
]
IDS = LAYER_IDS
KINDS = list(CONSTRAINTS)


def _flat(state):
    return torch.cat([s.flatten() for s in state]) if isinstance(state, tuple) else state


def _run(layer: nn.Module, x: torch.Tensor, hx) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The output, the final state and the gradient of a fixed loss w.r.t. every parameter."""
    out, h = layer(x, hx)
    loss = (out**2).sum() + _flat(h).sum()
    return torch.cat([out.flatten(), _flat(h).flatten()]), torch.autograd.grad(
        loss, list(layer.parameters())
    )


def _state(ours, L: int, B: int, H: int, device, dtype):
    h0 = torch.randn(L, B, H, dtype=dtype).to(device)
    return (h0, torch.randn(L, B, H, dtype=dtype).to(device)) if ours is SpectralLSTM else h0


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize(("ours", "theirs", "kw"), PAIRS, ids=IDS)
def test_none_equals_torch_on_cuda(ours, theirs, kw, bidirectional):
    """``constraint="none"`` on the GPU computes what torch's layer computes there."""
    a = ours(5, 12, num_layers=2, batch_first=True, bidirectional=bidirectional,
             constraint="none", dtype=F64, **kw).to(CUDA)  # fmt: skip
    b = theirs(5, 12, num_layers=2, batch_first=True, bidirectional=bidirectional,
               dtype=F64, **kw).to(CUDA)  # fmt: skip
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 9, 5, dtype=F64, device=CUDA)
    hx = _state(ours, 2 * (1 + bidirectional), 4, 12, CUDA, F64)
    for unroll in (False, True):
        a.unroll = unroll
        (ya, ga), (yb, gb) = _run(a, x, hx), _run(b, x, hx)
        assert ya.device.type == "cuda"
        torch.testing.assert_close(ya, yb, atol=1e-10, rtol=1e-10)
        for p, q in zip(ga, gb, strict=True):
            torch.testing.assert_close(p, q, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("kind", ["none", "spectral"])
@pytest.mark.parametrize(("ours", "theirs", "kw"), PAIRS, ids=IDS)
def test_no_flatten_parameters_warning(ours, theirs, kw, kind):
    """cuDNN's "call flatten_parameters()" warning is not passed on: that advice cannot help
    a layer whose matrices are computed anew each call (and its flatten_parameters is a no-op)."""
    layer = ours(3, 8, num_layers=2, constraint=kind, **kw).to(CUDA)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layer.flatten_parameters()
        out, _ = layer(torch.randn(5, 2, 3, device=CUDA))
        out.sum().backward()
    assert not [w for w in caught if "contiguous chunk" in str(w.message)], caught


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("ours", "theirs", "kw"), PAIRS, ids=IDS)
def test_every_constraint_equals_its_cpu_self(ours, theirs, kw, kind):
    """The same layer on the GPU and on the CPU: same outputs, state and gradients."""
    cpu = ours(4, 10, num_layers=2, constraint=kind, dtype=F64, **kw)
    gpu = copy.deepcopy(cpu).to(CUDA)
    x = torch.randn(8, 3, 4, dtype=F64)
    hx = _state(ours, 2, 3, 10, "cpu", F64)
    hx_gpu = tuple(h.to(CUDA) for h in hx) if isinstance(hx, tuple) else hx.to(CUDA)
    (yc, gc), (yg, gg) = _run(cpu, x, hx), _run(gpu, x.to(CUDA), hx_gpu)
    torch.testing.assert_close(yg.cpu(), yc, atol=1e-9, rtol=1e-9)
    for p, q in zip(gg, gc, strict=True):
        torch.testing.assert_close(p.cpu(), q, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize(("ours", "theirs"), CELLS, ids=["rnn", "gru", "lstm"])
def test_cells_equal_torch_cells_on_cuda(ours, theirs):
    a = ours(5, 7, constraint="none", dtype=F64).to(CUDA)
    b = theirs(5, 7, dtype=F64).to(CUDA)
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 5, dtype=F64, device=CUDA)
    torch.testing.assert_close(_flat(a(x)), _flat(b(x)), atol=1e-12, rtol=1e-12)
    c = ours(5, 7, constraint="spectral").to(CUDA)
    assert _flat(c(x.float())).device.type == "cuda"


@pytest.mark.parametrize("kind", ["spectral", "scaled", "bound", "band", "orthogonal"])
def test_constraint_holds_after_every_step_on_cuda(kind):
    """Large steps of Adam on the GPU; after each, the matrix the layer uses keeps its bound."""
    layer = SpectralGRU(6, 16, constraint=kind).to(CUDA)
    opt = torch.optim.Adam(layer.parameters(), lr=0.5)
    x = torch.randn(12, 4, 6, device=CUDA)
    for _ in range(5):
        opt.zero_grad()
        out, _ = layer(x)
        out.square().mean().backward()
        opt.step()
        W = layer.weight_hh_l0.detach()  # (3H, H): the matrix the layer uses
        assert W.device.type == "cuda"
        assert satisfies(W.double(), kind, blocks=3, tol=1e-4)
        if kind == "spectral":  # and by hand: every gate block's top singular value is 1
            s = torch.linalg.svdvals(W.double().reshape(3, 16, 16))  # (3, 16)
            torch.testing.assert_close(s[:, 0], torch.ones(3, dtype=F64, device=CUDA),
                                       atol=1e-4, rtol=0)  # fmt: skip
        assert torch.isfinite(out).all()


def test_constrained_linear_and_conv_on_cuda():
    """``constrain`` works beyond RNNs on the GPU: the operator norm is at most 1."""
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 6 * 6, 5))  # fmt: skip
    for m in (net[0], net[3]):
        constrain(m, "weight", "spectral")  # the conv: its operator norm, not its kernel's
    net = net.to(CUDA)
    x = torch.randn(2, 3, 6, 6, device=CUDA)
    assert net(x).shape == (2, 5)
    s = torch.linalg.svdvals(net[3].weight.detach().double())
    assert s[0] <= 1 + 1e-4


@pytest.mark.parametrize("T", [11, 150])  # one chunk of the parallel scan, and three
@pytest.mark.parametrize("constraint", ["none", "bound"])
def test_lru_on_cuda_equals_the_cpu_native_scan(constraint, T):
    """The LRU's chunked scan on the GPU equals the CPU kernel, gradients included."""
    options = {"gamma": 0.9} if constraint == "bound" else None
    cpu = LRU(3, 5, r_min=0.4, r_max=0.95, constraint=constraint, constraint_options=options,
              dtype=F64)  # fmt: skip
    gpu = copy.deepcopy(cpu).to(CUDA)
    x = torch.randn(T, 2, 3, dtype=F64)
    h0 = torch.randn(1, 2, 5, dtype=torch.complex128)
    results = []
    for layer, dev in ((cpu, "cpu"), (gpu, CUDA)):
        xi = x.to(dev).requires_grad_()
        hi = h0.to(dev).requires_grad_()
        out, h_n = layer(xi, hi)
        loss = out.square().sum() + (h_n.abs() ** 2).sum()
        grads = torch.autograd.grad(loss, [xi, hi, *layer.parameters()])
        results.append([t.cpu() for t in (out, h_n, *grads)])
    for c, g in zip(*results, strict=True):
        torch.testing.assert_close(g, c, atol=1e-10, rtol=1e-10)


def test_lru_packed_on_cuda_equals_the_cpu():
    """Sequences of different lengths on the GPU (the step loop) equal the CPU kernel."""
    from torch.nn.utils.rnn import pack_padded_sequence

    cpu = LRU(3, 4, r_min=0.5, r_max=0.9, dtype=F64)
    gpu = copy.deepcopy(cpu).to(CUDA)
    x = torch.randn(9, 3, 3, dtype=F64)
    lengths = torch.tensor([9, 4, 6])
    outs = []
    for layer, dev in ((cpu, "cpu"), (gpu, CUDA)):
        packed = pack_padded_sequence(x.to(dev), lengths, enforce_sorted=False)
        out, h_n = layer(packed)
        outs.append((out.data.cpu(), h_n.cpu()))
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(b, a, atol=1e-12, rtol=1e-12)


def test_whole_model_save_and_load_across_devices():
    """A constrained layer saved whole on the GPU loads there unchanged, and on the CPU."""
    layer = SpectralLSTM(4, 8, num_layers=2, constraint="scaled", dtype=F64).to(CUDA)
    x = torch.randn(6, 2, 4, dtype=F64)
    buf = io.BytesIO()
    torch.save(layer, buf)
    for where in ("cuda", "cpu"):
        buf.seek(0)
        back = torch.load(buf, map_location=where, weights_only=False)
        expected = layer(x.to(CUDA))[0] if where == "cuda" else copy.deepcopy(layer).cpu()(x)[0]
        assert next(back.parameters()).device.type == where
        torch.testing.assert_close(back(x.to(where))[0], expected, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_on_cuda(dtype):
    layer = SpectralGRU(4, 8, constraint="spectral").to(CUDA)
    x = torch.randn(5, 3, 4, device=CUDA)
    with torch.autocast("cuda", dtype=dtype):
        out, h = layer(x)
    assert torch.isfinite(out).all()
    out.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


def test_probes_on_cuda():
    from seqnorm.probes import hidden_grad_norms, weight_spectrum

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = SpectralGRU(3, 8, constraint="spectral")
            self.out = nn.Linear(8, 2)

        def forward(self, x):
            return self.out(self.rnn(x)[0][-1])

    net = Net().to(CUDA)
    x, y = torch.randn(20, 4, 3, device=CUDA), torch.randint(0, 2, (4,), device=CUDA)
    norms = hidden_grad_norms(net, (x, y), nn.functional.cross_entropy)
    assert torch.isfinite(norms).all() and norms.shape[-1] == 20
    spectra = weight_spectrum(net.rnn)
    assert all(torch.isfinite(v).all() for v in spectra.values())


@pytest.mark.parametrize("cell", ["gru", "lru"])
def test_lightning_fit_on_gpu(tmp_path, cell):
    """A few training steps of the LightningModule on the GPU, with the probe callbacks."""
    import pytorch_lightning as pl

    from seqnorm.callbacks import GradientFlowMonitor, SpectrumMonitor
    from seqnorm.data import CopyMemoryDataModule
    from seqnorm.model import SeqModel

    dm = CopyMemoryDataModule(seq_len=6, batch_size=8, num_train=32, num_val=16, num_test=16)
    constraint = "bound" if cell == "lru" else "spectral"
    model = SeqModel.from_datamodule(dm, cell=cell, hidden_size=8, constraint=constraint)
    callbacks = [GradientFlowMonitor(every_n_steps=2, num_samples=4, log_images=False,
                                     dirpath=str(tmp_path))]  # fmt: skip
    if cell != "lru":
        callbacks.append(SpectrumMonitor(every_n_steps=2, log_images=False, dirpath=str(tmp_path)))
    trainer = pl.Trainer(accelerator="gpu", devices=1, max_steps=4, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=callbacks)  # fmt: skip
    trainer.fit(model, dm)
    assert trainer.strategy.root_device.type == "cuda"  # (fit hands the model back on the CPU)
    assert callbacks[0].history, "the gradient-flow probe never ran on the GPU"
    assert torch.isfinite(callbacks[0].history[-1][1]).all()
