"""Bidirectional layers, LSTM projections and PackedSequence input, on both code paths.

The oracle check: from torch's ``state_dict``, at ``constraint="none"``, bidirectional
2-layer RNN/GRU/LSTM and an LSTM with ``proj_size``, padded or as an unsorted
``PackedSequence``, give torch's outputs and gradients on the fused and the unrolled path;
with ``spectral`` every gate block of ``weight_hh_l0_reverse`` has sigma_max 1. Then what
has no torch oracle: packed equals each sequence run alone (torch's ``test_variable_sequence``
contract) for constrained layers and modReLU, the projection's constraint, the probes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqnorm import CONSTRAINTS, SpectralGRU, SpectralLSTM, SpectralRNN
from seqnorm.probes import hidden_grad_norms, record_hidden_states, weight_spectrum

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = [
    (SpectralRNN, nn.RNN, {}),
    (SpectralGRU, nn.GRU, {}),
    (SpectralLSTM, nn.LSTM, {}),
    (SpectralLSTM, nn.LSTM, {"proj_size": 3}),
]
IDS = ["rnn", "gru", "lstm", "lstm_proj"]
LENGTHS = [4, 7, 1, 7, 2]  # unsorted, with ties and a length-1 sequence


def _flat(state):
    return torch.cat([s.flatten() for s in state]) if isinstance(state, tuple) else state


def _state(cls_is_lstm, units, B, R, H, gen):
    h = torch.randn(units, B, R, generator=gen)
    return (h, torch.randn(units, B, H, generator=gen)) if cls_is_lstm else h


@pytest.mark.parametrize("unroll", [False, True], ids=["fused", "unrolled"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tbf", "btf"])
@pytest.mark.parametrize(("ours", "theirs", "kw"), CASES, ids=IDS)
def test_matches_torch_from_its_state_dict(ours, theirs, kw, batch_first, packed, unroll):
    ref = theirs(4, 6, num_layers=2, bidirectional=True, batch_first=batch_first, **kw)
    layer = ours(4, 6, num_layers=2, bidirectional=True, batch_first=batch_first,
                 constraint="none", **kw)  # fmt: skip
    layer.load_state_dict(ref.state_dict())
    layer.unroll = unroll
    gen = torch.Generator().manual_seed(1)
    shape = (5, 7, 4) if batch_first else (7, 5, 4)
    x = torch.randn(shape, generator=gen, requires_grad=True)
    hx = _state(theirs is nn.LSTM, 4, 5, kw.get("proj_size", 6), 6, gen)
    for h in (None, hx):
        outs, grads = [], []
        for m in (layer, ref):
            inp = x
            if packed:
                inp = pack_padded_sequence(x, torch.tensor(LENGTHS), batch_first=batch_first,
                                           enforce_sorted=False)  # fmt: skip
            out, h_n = m(inp, h)
            if packed:
                assert isinstance(out, nn.utils.rnn.PackedSequence)
                out = pad_packed_sequence(out, batch_first=batch_first)[0]
            loss = (out**2).sum() + (_flat(h_n) ** 3).sum()
            outs.append((out, _flat(h_n)))
            grads.append(torch.autograd.grad(loss, [x, *m.parameters()]))
        for a, b in zip(outs[0], outs[1], strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        for a, b in zip(*grads, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cls", [SpectralRNN, SpectralGRU, SpectralLSTM])
def test_spectral_reverse_direction_every_gate_at_one(cls):
    layer = cls(3, 8, num_layers=2, bidirectional=True, constraint="spectral")
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    for _ in range(3):  # at construction and after large optimiser steps
        for name in ("weight_hh_l0_reverse", "weight_hh_l1_reverse", "weight_hh_l0"):
            W = getattr(layer, name).detach().double()  # (G*8, 8)
            s = torch.linalg.matrix_norm(W.reshape(layer.num_gates, 8, 8), ord=2)
            torch.testing.assert_close(s, torch.ones_like(s), atol=1e-5, rtol=0, msg=name)
        out, _ = layer(torch.randn(6, 2, 3))
        opt.zero_grad()
        (out**2).sum().backward()
        opt.step()
    assert layer.parametrizations.weight_hh_l1_reverse.original.grad is not None


# ------------------------------------------------------------ packed vs one at a time


def _one_at_a_time(layer, x, hx):
    """torch's ``test_variable_sequence`` oracle: each sequence alone, outputs padded."""
    outs, finals = [], []
    for i, n in enumerate(LENGTHS):
        h = None if hx is None else tuple(s[:, i : i + 1] for s in hx) if isinstance(hx, tuple) \
            else hx[:, i : i + 1]  # fmt: skip
        out, h_n = layer(x[:n, i : i + 1], h)
        outs.append(torch.cat([out, out.new_zeros(x.shape[0] - n, *out.shape[1:])]))
        finals.append(h_n)
    if isinstance(finals[0], tuple):
        return torch.cat(outs, 1), tuple(torch.cat(f, 1) for f in zip(*finals, strict=True))
    return torch.cat(outs, 1), torch.cat(finals, 1)


@pytest.mark.parametrize("unroll", [False, True], ids=["fused", "unrolled"])
@pytest.mark.parametrize(
    ("cls", "kw"),
    [
        (SpectralGRU, {"constraint": "spectral"}),
        (SpectralLSTM, {"constraint": "bound", "proj_size": 2}),
        (SpectralRNN, {"constraint": "orthogonal", "nonlinearity": "modrelu"}),
        (SpectralLSTM, {"constraint": "scaled", "constrained_gates": ["f"]}),
    ],
    ids=["gru_spectral", "lstm_proj_bound", "modrelu_orthogonal", "lstm_scaled_f"],
)
def test_packed_equals_each_sequence_alone(cls, kw, unroll):
    layer = cls(3, 5, num_layers=2, bidirectional=True, **kw).eval()
    layer.unroll = unroll
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(max(LENGTHS), len(LENGTHS), 3, generator=gen, requires_grad=True)
    hx = _state(cls is SpectralLSTM, 4, 5, kw.get("proj_size", 5), 5, gen)
    for h in (None, hx):
        ref_out, ref_h = _one_at_a_time(layer, x, h)
        g_ref = torch.autograd.grad(ref_out.sum() + _flat(ref_h).sum(), [x, *layer.parameters()])
        packed = pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False)
        out, h_n = layer(packed, h)
        out, lengths = pad_packed_sequence(out)
        assert lengths.tolist() == LENGTHS
        torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=0)
        torch.testing.assert_close(_flat(h_n), _flat(ref_h), atol=1e-5, rtol=0)
        g = torch.autograd.grad(out.sum() + _flat(h_n).sum(), [x, *layer.parameters()])
        for a, b in zip(g, g_ref, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_modrelu_bidirectional_parameters_and_paths():
    layer = SpectralRNN(3, 5, num_layers=2, nonlinearity="modrelu", bidirectional=True,
                        constraint="orthogonal")  # fmt: skip
    names = {n for n, _ in layer.named_parameters()}
    assert {"modrelu_bias_l0", "modrelu_bias_l0_reverse", "modrelu_bias_l1_reverse"} <= names
    x = torch.randn(9, 2, 3, requires_grad=True)
    results = []
    for unroll in (False, True):
        layer.unroll = unroll
        out, h = layer(x)
        results.append((out, h, torch.autograd.grad(out.pow(2).sum(), [x, *layer.parameters()])))
    (o1, h1, g1), (o2, h2, g2) = results  # float32: 1e-5, the native kernels' contract
    torch.testing.assert_close(o1, o2, atol=1e-5, rtol=0)
    torch.testing.assert_close(h1, h2, atol=1e-5, rtol=0)
    for a, b in zip(g1, g2, strict=True):  # float32 sums of different orders
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------- projections


@pytest.mark.parametrize(
    ("kind", "options", "low", "high"),
    [("spectral", {}, 1.0, 1.0), ("scaled", {"gamma_min": 0.7, "gamma_max": 0.9}, 0.7, 0.9),
     ("bound", {"gamma": 0.8}, 0.0, 0.8)],
)  # fmt: skip
def test_projection_constraint_holds_on_the_recurrent_map(kind, options, low, high):
    layer = SpectralLSTM(3, 6, proj_size=2, bidirectional=True, constraint=kind,
                         constraint_options=options)  # fmt: skip
    opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    for _ in range(4):  # every step of a violent run
        for unit in layer.unit_names:
            W_hh = getattr(layer, f"weight_hh_{unit}").detach().double()  # (4H, P)
            W_hr = getattr(layer, f"weight_hr_{unit}").detach().double()  # (P, H)
            s = torch.linalg.matrix_norm(W_hh.reshape(4, 6, 2) @ W_hr, ord=2)  # (4,)
            assert bool(((s >= low - 1e-5) & (s <= high + 1e-5)).all()), (unit, s)
        out, (h, c) = layer(torch.randn(5, 2, 3))
        opt.zero_grad()
        (out.sum() + c.pow(2).sum()).backward()
        opt.step()
    assert layer.weight_hr_l0.grad is not None and layer.weight_hr_l0.grad.abs().sum() > 0
    spec = weight_spectrum(layer)  # the probe reports the recurrent map the constraint sees
    assert spec["singular_values"].shape == (2, 4, 6)
    assert bool((spec["singular_values"][..., 2:] < 1e-5).all())  # rank <= proj_size


def test_projection_refuses_what_cannot_hold():
    for kind in ("orthogonal", "band"):
        with pytest.raises(ValueError, match=f"constraint='{kind}' cannot apply with proj_size=2"):
            SpectralLSTM(3, 6, proj_size=2, constraint=kind)
    with pytest.raises(ValueError, match="init='orthogonal' draws square gate blocks"):
        SpectralLSTM(3, 6, proj_size=2, init="orthogonal")
    lstm = SpectralLSTM(3, 6, proj_size=2, constrained_gates=["f"])
    s = torch.linalg.matrix_norm(lstm.recurrent_maps()[0].detach(), ord=2)  # (4,)
    assert abs(float(s[1]) - 1) < 1e-5 and not torch.allclose(s, torch.ones(4))
    assert all(k in CONSTRAINTS for k in ("none", "spectral", "scaled", "bound"))


# ------------------------------------------------------------------------ probes


def test_recording_and_probes_per_direction():
    torch.manual_seed(0)
    layer = SpectralGRU(3, 4, num_layers=2, bidirectional=True, constraint="spectral")
    x = torch.randn(6, 2, 3)
    with record_hidden_states(layer) as rec:
        out, h_n = layer(x)
    rows = rec.states()
    assert rec.row_names() == ["l0", "l0_reverse", "l1", "l1_reverse"]
    torch.testing.assert_close(torch.stack(rows[2]), out[..., :4])  # top layer, forward
    torch.testing.assert_close(torch.stack(rows[3]), out[..., 4:])  # top layer, reverse
    torch.testing.assert_close(rows[1][0], h_n[1])  # the reverse direction ends at t = 0
    assert not layer.is_recording

    # dL/dh[t] per direction equals a hand-made unroll of the two directions.
    head = nn.Linear(8, 1)
    norms = hidden_grad_norms(nn.Sequential(layer), (x, None),
                              lambda o, _: head(o[0]).pow(2).sum())  # fmt: skip
    assert norms.shape == (4, 6)
    layer.unroll = True
    with layer.recording() as calls:
        out, _ = layer(x)
    hs = calls[0][3]  # top layer, reverse direction
    g = torch.autograd.grad(head(out).pow(2).sum(), hs)
    torch.testing.assert_close(norms[3], torch.stack([t.norm(dim=-1).mean() for t in g]))
    assert norms[3, 0] > 0 and norms[2, -1] > 0


def test_recording_packed_input():
    layer = SpectralLSTM(3, 4, bidirectional=True, proj_size=2)
    x = torch.randn(max(LENGTHS), len(LENGTHS), 3)
    with layer.recording() as calls:
        layer(pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False))
    (rows,) = calls
    sizes = [sum(n > t for n in LENGTHS) for t in range(max(LENGTHS))]
    assert [h.shape for h in rows[1]] == [torch.Size([n, 2]) for n in sizes]
    with pytest.raises(RuntimeError, match="already recording"), layer.recording():
        with layer.recording():
            pass


def test_packed_example_learns_each_sequences_own_last_value():
    """experiments/packed_lengths.py: the bidirectional GRU reads packed variable lengths."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    try:
        import packed_lengths
    finally:
        sys.path.pop(0)
    acc = packed_lengths.train(packed=True, steps=30, max_len=12, hidden_size=8, seed=0)
    assert acc > 0.95
