"""Oracle tests against torch's layers and cells, path equivalence, state, and errors."""

import copy
import io

import pytest
import torch
from conftest import LAYER_IDS, LAYER_PAIRS
from torch import nn

import seqnorm
from seqnorm import (
    CONSTRAINTS,
    SpectralGRU,
    SpectralGRUCell,
    SpectralLSTM,
    SpectralLSTMCell,
    SpectralRNN,
    SpectralRNNCell,
)

PAIRS = LAYER_PAIRS
CELL_PAIRS = [
    (SpectralRNNCell, nn.RNNCell, {}),
    (SpectralRNNCell, nn.RNNCell, {"nonlinearity": "relu"}),
    (SpectralGRUCell, nn.GRUCell, {}),
    (SpectralLSTMCell, nn.LSTMCell, {}),
]
IDS = LAYER_IDS


def _flat(state):
    return torch.cat([s.flatten() for s in state]) if isinstance(state, tuple) else state


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("ours, theirs, kw", PAIRS, ids=IDS)
def test_none_equals_torch_layer(ours, theirs, kw, bias, batch_first):
    a = ours(5, 12, num_layers=2, bias=bias, batch_first=batch_first, constraint="none", **kw)
    b = theirs(5, 12, num_layers=2, bias=bias, batch_first=batch_first, **kw)
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 9, 5) if batch_first else torch.randn(9, 4, 5)
    h0 = torch.randn(2, 4, 12)
    hx = (h0, torch.randn(2, 4, 12)) if ours is SpectralLSTM else h0
    for unroll in (False, True):
        a.unroll = unroll
        out_a, h_a = a(x, hx)
        out_b, h_b = b(x, hx)
        torch.testing.assert_close(out_a, out_b, atol=1e-6, rtol=0)
        torch.testing.assert_close(_flat(h_a), _flat(h_b), atol=1e-6, rtol=0)
        g_a = torch.autograd.grad((out_a**2).sum() + _flat(h_a).sum(), list(a.parameters()))
        g_b = torch.autograd.grad((out_b**2).sum() + _flat(h_b).sum(), list(b.parameters()))
        for ga, gb in zip(g_a, g_b, strict=True):
            torch.testing.assert_close(ga, gb, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("ours, theirs, kw", PAIRS, ids=IDS)
def test_none_equals_torch_unbatched_and_float64(ours, theirs, kw):
    a = ours(3, 6, constraint="none", dtype=torch.float64, **kw)
    b = theirs(3, 6, dtype=torch.float64, **kw)
    b.load_state_dict(a.state_dict())
    x = torch.randn(7, 3, dtype=torch.float64)
    out_a, h_a = a(x)
    out_b, h_b = b(x)
    assert out_a.shape == out_b.shape == (7, 6)
    torch.testing.assert_close(out_a, out_b, atol=1e-12, rtol=0)
    torch.testing.assert_close(_flat(h_a), _flat(h_b), atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", list(CONSTRAINTS))
@pytest.mark.parametrize("ours, theirs, kw", PAIRS, ids=IDS)
def test_fused_equals_unrolled(ours, theirs, kw, kind):
    layer = ours(4, 10, num_layers=2, batch_first=True, constraint=kind, **kw).eval()
    x = torch.randn(3, 20, 4, requires_grad=True)
    out_f, h_f = layer(x)
    gf = torch.autograd.grad(out_f.pow(2).sum(), [x, *layer.parameters()])
    layer.unroll = True
    out_u, h_u = layer(x)
    gu = torch.autograd.grad(out_u.pow(2).sum(), [x, *layer.parameters()])
    torch.testing.assert_close(out_f, out_u, atol=1e-5, rtol=0)
    torch.testing.assert_close(_flat(h_f), _flat(h_u), atol=1e-5, rtol=0)
    for a, b in zip(gf, gu, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(("ours", "theirs", "kw"), PAIRS, ids=IDS)
def test_torch_layer_helpers(ours, theirs, kw, bias):
    """Code written for torch's layer runs: flatten_parameters() and all_weights."""
    a = ours(3, 5, num_layers=2, bias=bias, constraint="orthogonal", **kw)
    b = theirs(3, 5, num_layers=2, bias=bias, **kw)
    a.flatten_parameters()
    assert [[w.shape for w in layer] for layer in a.all_weights] == [
        [w.shape for w in layer] for layer in b.all_weights
    ]
    torch.testing.assert_close(a.all_weights[1][1], a.weight_hh_l1)  # the constrained matrix


def test_unrolled_records_every_hidden_state():
    layer = SpectralGRU(2, 5, num_layers=2)
    with layer.recording() as calls:
        out, h_n = layer(torch.randn(6, 3, 2))
    (states,) = calls
    assert len(states) == 2 and all(len(s) == 6 for s in states)
    torch.testing.assert_close(torch.stack(states[1]), out)
    torch.testing.assert_close(states[0][-1], h_n[0])


@pytest.mark.parametrize("ours, theirs, kw", CELL_PAIRS, ids=IDS)
def test_cell_none_equals_torch_cell(ours, theirs, kw):
    a = ours(4, 7, constraint="none", **kw)
    b = theirs(4, 7, **kw)
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 4)
    h = torch.randn(3, 7)
    hx = (h, torch.randn(3, 7)) if ours is SpectralLSTMCell else h
    torch.testing.assert_close(_flat(a(x, hx)), _flat(b(x, hx)), atol=1e-6, rtol=0)
    torch.testing.assert_close(_flat(a(x)), _flat(b(x)), atol=1e-6, rtol=0)
    torch.testing.assert_close(_flat(a(x[0])), _flat(b(x[0])), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["spectral", "orthogonal"])
@pytest.mark.parametrize(
    "layer_cls, cell_cls",
    [
        (SpectralRNN, SpectralRNNCell),
        (SpectralGRU, SpectralGRUCell),
        (SpectralLSTM, SpectralLSTMCell),
    ],
)
def test_cell_loop_equals_layer(layer_cls, cell_cls, kind):
    layer = layer_cls(3, 6, constraint=kind).eval()
    cell = cell_cls(3, 6, constraint=kind).eval()
    cell.load_state_dict({k.replace("_l0", ""): v for k, v in layer.state_dict().items()})
    x = torch.randn(8, 2, 3)
    out, _ = layer(x)
    h, hs = None, []
    with seqnorm.cached():
        for x_t in x.unbind(0):
            h = cell(x_t, h)
            hs.append(h[0] if isinstance(h, tuple) else h)
    torch.testing.assert_close(torch.stack(hs), out, atol=1e-5, rtol=0)


def test_cached_cell_loop_runs_power_iteration_once():
    cell = SpectralGRUCell(3, 6)
    calls = []
    cell.parametrizations.weight_hh[0].register_forward_hook(lambda *a: calls.append(1))
    h = None
    with seqnorm.cached():
        for x_t in torch.randn(10, 2, 3).unbind(0):
            h = cell(x_t, h)
    assert len(calls) == 1
    for x_t in torch.randn(10, 2, 3).unbind(0):  # without the context: once per step
        h = cell(x_t, h)
    assert len(calls) == 11


@pytest.mark.parametrize("kind", list(CONSTRAINTS))
def test_state_dict_round_trip_restores_buffers(kind):
    a = SpectralLSTM(3, 6, num_layers=2, constraint=kind)
    a.train()
    for _ in range(3):
        a(torch.randn(5, 2, 3))[0].sum().backward()
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    b = SpectralLSTM(3, 6, num_layers=2, constraint=kind)
    b.load_state_dict(torch.load(io.BytesIO(buf.getvalue())))
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb
        assert torch.equal(va, vb), ka
    a.eval(), b.eval()
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(a(x)[0], b(x)[0], atol=0, rtol=0)


def test_deepcopy_is_independent():
    a = SpectralGRU(3, 6)
    b = copy.deepcopy(a)
    x = torch.randn(4, 2, 3)
    a.eval(), b.eval()
    torch.testing.assert_close(a(x)[0], b(x)[0])
    with torch.no_grad():
        a.parametrizations.weight_hh_l0.original.mul_(2)
    a.train()
    a(x)
    assert not torch.equal(
        a.parametrizations.weight_hh_l0.original, b.parametrizations.weight_hh_l0.original
    )


def test_input_weights_unconstrained():
    layer = SpectralGRU(3, 6)
    assert isinstance(layer.weight_ih_l0, nn.Parameter)
    assert seqnorm.is_constrained(layer, "weight_hh_l0")
    assert not seqnorm.is_constrained(layer, "weight_ih_l0")


def test_dropout_only_between_layers_in_training():
    layer = SpectralGRU(3, 6, num_layers=2, dropout=0.5)
    x = torch.randn(5, 2, 3)
    layer.eval()
    torch.testing.assert_close(layer(x)[0], layer(x)[0])
    layer.train()
    assert not torch.equal(layer(x)[0], layer(x)[0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"hidden_size": 0}, "hidden_size must be greater than zero, got 0"),
        ({"hidden_size": -3}, "hidden_size must be greater than zero"),
        ({"input_size": 0}, "input_size must be greater than zero"),
        ({"num_layers": 0}, "num_layers must be greater than zero, got 0"),
        ({"dropout": 1.5}, r"dropout should be a number in range \[0, 1\].*got dropout=1.5"),
        ({"constraint": "spectrall"}, "constraint must be one of"),
        ({"constraint": "band", "constraint_options": {"r": 2}}, "r must be in the open"),
        ({"constraint_options": {"gamma": 2}}, "unknown option"),
    ],
)
def test_layer_constructor_errors(kwargs, match):
    args = {"input_size": 3, "hidden_size": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        SpectralGRU(**args)


def test_rnn_nonlinearity_error():
    with pytest.raises(ValueError, match=r"Unknown nonlinearity 'gelu'.*'relu' or 'modrelu'"):
        SpectralRNN(3, 4, nonlinearity="gelu")
    with pytest.raises(ValueError, match="hidden_size must be greater than or equal to zero"):
        SpectralGRUCell(3, -1)


def test_layer_forward_errors():
    gru = SpectralGRU(3, 4, num_layers=2)
    with pytest.raises(ValueError, match=r"to be 2D or 3D, got 4D .*\(SpectralGRU takes"):
        gru(torch.randn(2, 3, 4, 3))
    with pytest.raises(ValueError, match=r"input.size\(-1\) must be equal to input_size"):
        gru(torch.randn(5, 2, 7))
    with pytest.raises(ValueError, match=r"Expected hidden size \(2, 2, 4\), got \[1, 2, 4\]"):
        gru(torch.randn(5, 2, 3), torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match="takes floating-point input"):
        gru(torch.ones(5, 2, 3, dtype=torch.long))
    lstm = SpectralLSTM(3, 4)
    with pytest.raises(TypeError, match=r"tuple \(h_0, c_0\)"):
        lstm(torch.randn(5, 2, 3), torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match=r"Expected hidden\[1\] size \(1, 2, 4\).*c_0 must"):
        lstm(torch.randn(5, 2, 3), (torch.zeros(1, 2, 4), torch.zeros(1, 3, 4)))


def test_cell_forward_errors():
    cell = SpectralGRUCell(3, 4)
    with pytest.raises(ValueError, match="GRUCell: Expected input to be 1D or 2D, got 3D instead"):
        cell(torch.randn(2, 2, 3))
    with pytest.raises(ValueError, match="input has inconsistent input_size: got 5 expected 3"):
        cell(torch.randn(2, 5))
    with pytest.raises(ValueError, match="hidden0 has inconsistent hidden_size: got 5, expected 4"):
        cell(torch.randn(2, 3), torch.zeros(2, 5))
    with pytest.raises(TypeError, match=r"tuple \(h, c\)"):
        SpectralLSTMCell(3, 4)(torch.randn(2, 3), torch.zeros(2, 4))
