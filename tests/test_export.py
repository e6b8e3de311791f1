"""Tracing and exporting models that hold seqnorm modules, checked against eager outputs.

``torch.jit.trace``, ``torch.export.export`` and ``torch.onnx.export`` (the TorchScript
exporter, ``dynamo=False``, and the dynamo one) of eval-mode modules compute what the
eager module computes; the graphs hold torch's plain ops, none of the constraint's (the
constrained matrices are constants). ONNX models run in onnx's reference evaluator.
"""

from __future__ import annotations

import io
import re

import pytest
import torch
from torch import nn

from seqnorm import (
    CONSTRAINTS,
    SpectralGRU,
    SpectralGRUCell,
    SpectralLSTM,
    SpectralLSTMCell,
    SpectralRNN,
    SpectralRNNCell,
)

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]  # fmt: skip

#: Ops of the constraints (eigh, svd, solve, matrix_exp), which must not be in a graph.
CONSTRAINT_OPS = re.compile(r"aten(::|\.)_?(linalg|matrix_exp|svd)")

#: Exported graphs run torch's kernels with the constrained weights as constants; eager CPU
#: float32 runs seqnorm's native kernels where they are built, which round apart (~1e-7).
EAGER_TOL = 1e-6


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _module(kind: str, cell: bool) -> nn.Module:
    torch.manual_seed(0)
    if cell:
        return SpectralGRUCell(3, 4, constraint=kind).eval()
    return SpectralGRU(3, 4, num_layers=2, bidirectional=True, constraint=kind).eval()


def _input(m: nn.Module) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    shape = (2, m.input_size) if "Cell" in type(m).__name__ else (5, 2, m.input_size)
    return torch.randn(*shape, generator=g)


def _export_graph_ops(ep) -> list[str]:
    return [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]


@pytest.mark.parametrize("cell", [False, True], ids=["layer", "cell"])
@pytest.mark.parametrize("kind", list(CONSTRAINTS))
def test_jit_trace_and_torch_export_equal_eager(kind, cell):
    m = _module(kind, cell)
    x = _input(m)
    ref = _first(m(x))
    traced = torch.jit.trace(m, (x,))
    torch.testing.assert_close(_first(traced(x)), ref, atol=EAGER_TOL, rtol=0)
    assert not CONSTRAINT_OPS.search(str(traced.inlined_graph))
    ep = torch.export.export(m, (x,))
    torch.testing.assert_close(_first(ep.module()(x)), ref, atol=EAGER_TOL, rtol=0)
    ops = _export_graph_ops(ep)
    assert not [o for o in ops if CONSTRAINT_OPS.search(o)], ops
    x2 = torch.randn_like(x)  # the graphs are functions of the input, not of the example
    torch.testing.assert_close(_first(ep.module()(x2)), _first(m(x2)), atol=EAGER_TOL, rtol=0)
    torch.testing.assert_close(_first(traced(x2)), _first(m(x2)), atol=EAGER_TOL, rtol=0)


def _onnx_run(m: nn.Module, x: torch.Tensor, dynamo: bool):
    onnx = pytest.importorskip("onnx")  # the dev extras; the dynamo exporter needs onnxscript
    from onnx.reference import ReferenceEvaluator

    if dynamo:
        proto = torch.onnx.export(m, (x,), dynamo=True, verbose=False).model_proto
    else:
        f = io.BytesIO()
        torch.onnx.export(m, (x,), f, dynamo=False)
        proto = onnx.load_from_string(f.getvalue())
    ev = ReferenceEvaluator(proto)
    return torch.from_numpy(ev.run(None, {ev.input_names[0]: x.numpy()})[0])


CASES = [
    pytest.param(SpectralGRU, {"num_layers": 2, "bidirectional": True, "constraint": "orthogonal"},
                 id="gru_orthogonal"),
    pytest.param(SpectralLSTM, {"constraint": "spectral", "batch_first": True}, id="lstm"),
    pytest.param(SpectralRNN, {"constraint": "band"}, id="rnn_band"),
    pytest.param(SpectralRNN, {"nonlinearity": "modrelu", "constraint": "orthogonal"},
                 id="modrelu"),
    pytest.param(SpectralLSTMCell, {"constraint": "scaled"}, id="lstm_cell"),
    pytest.param(SpectralRNNCell, {"nonlinearity": "modrelu", "constraint": "bound"},
                 id="modrelu_cell"),
]  # fmt: skip


@pytest.mark.parametrize(("cls", "kw"), CASES)
def test_onnx_torchscript_export_equals_eager(cls, kw):
    m = cls(3, 4, **kw).eval()
    x = _input(m)
    torch.testing.assert_close(_onnx_run(m, x, False), _first(m(x)), atol=1e-6, rtol=1e-5)


@pytest.mark.slow  # 4-10 s each; test_nested_model_exports[dynamo] runs by default
@pytest.mark.parametrize(("cls", "kw"), CASES)
def test_onnx_dynamo_export_equals_eager(cls, kw):
    m = cls(3, 4, **kw).eval()
    x = _input(m)
    torch.testing.assert_close(_onnx_run(m, x, True), _first(m(x)), atol=1e-6, rtol=1e-5)


def test_lstm_with_projections_exports():
    """ONNX's LSTM has no projection: the layer exports its step ops (dynamo exporter)."""
    m = SpectralLSTM(3, 6, proj_size=2, num_layers=2, constraint="spectral").eval()
    x = _input(m)
    ref = _first(m(x))
    torch.testing.assert_close(_first(torch.jit.trace(m, (x,))(x)), ref, atol=EAGER_TOL, rtol=0)
    ep = torch.export.export(m, (x,))
    torch.testing.assert_close(_first(ep.module()(x)), ref, atol=EAGER_TOL, rtol=0)
    torch.testing.assert_close(_onnx_run(m, x, dynamo=True), ref, atol=1e-6, rtol=1e-5)


class LM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 4)
        self.rnn = SpectralLSTM(4, 6, num_layers=2, constraint="spectral")
        self.cell = SpectralGRUCell(6, 6, constraint="orthogonal")
        self.out = nn.Linear(6, 11)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.rnn(self.emb(x))[0]  # (T, B, 6)
        s = None
        for h_t in h.unbind(0):
            s = self.cell(h_t, s)
        return self.out(s)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_nested_model_exports(dynamo):
    model = LM().eval()
    x = torch.randint(0, 11, (5, 2), generator=torch.Generator().manual_seed(0))
    ref = model(x)
    ep = torch.export.export(model, (x,))
    torch.testing.assert_close(ep.module()(x), ref, atol=EAGER_TOL, rtol=0)
    torch.testing.assert_close(torch.jit.trace(model, (x,))(x), ref, atol=EAGER_TOL, rtol=0)
    torch.testing.assert_close(_onnx_run(model, x, dynamo), ref, atol=1e-6, rtol=1e-5)


def test_export_after_weights_change_uses_the_new_weights():
    m = SpectralGRU(3, 4, constraint="spectral").eval()
    x = _input(m)
    other = SpectralGRU(3, 4, constraint="spectral")
    m.load_state_dict(other.state_dict(), assign=True)  # replaces the tensors
    ep = torch.export.export(m, (x,))
    torch.testing.assert_close(_first(ep.module()(x)), _first(m(x)), atol=EAGER_TOL, rtol=0)
    with torch.no_grad():
        m.weight_ih_l0.mul_(2)  # in place: the export reads the current values
    ep = torch.export.export(m, (x,))
    torch.testing.assert_close(_first(ep.module()(x)), _first(m(x)), atol=EAGER_TOL, rtol=0)


def test_export_of_a_never_evaluated_module_says_what_to_do():
    m = SpectralGRU(3, 4)
    with pytest.raises(RuntimeError, match=r"call model.eval\(\)"):
        torch.export.export(m, (_input(m),))


def test_torch_script_still_refused_with_the_ways_out():
    with pytest.raises(RuntimeError, match=r"cannot be scripted.*torch.jit.trace.*to_torch"):
        torch.jit.script(SpectralGRU(3, 4))
